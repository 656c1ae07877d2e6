/** The GraphQL schema: every domain's schema.ts adds its types and root fields to the builder. */
import type { GraphQLSchema } from "graphql";
import { builder } from "./builder.ts";
import "../accounts/schema.ts";
import "../batches/schema.ts";
import "../contacts/schema.ts";
import "../domains/schema.ts";
import "../events/schema.ts";
import "../segments/schema.ts";
import "../sends/schema.ts";
import "../stats/schema.ts";
import "../suppressions/schema.ts";
import "../templates/schema.ts";
import "../webhooks/schema.ts";

builder.queryType({});
builder.mutationType({});
builder.subscriptionType({});

/** The built schema (once per process). */
export const schema: GraphQLSchema = builder.toSchema({ sortSchema: true });
