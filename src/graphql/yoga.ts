/**
 * The GraphQL endpoint: graphql-yoga over the Pothos schema, GraphiQL on GET from a
 * browser. AppErrors keep their message and carry `extensions.code`; anything else is
 * logged in full and masked.
 */
import { GraphQLError } from "graphql";
import { createYoga } from "graphql-yoga";
import { useGraphQlJit } from "@envelop/graphql-jit";
import type { Deps, Principal } from "../context.ts";
import { AppError } from "../errors.ts";
import type { GraphQLContext } from "./builder.ts";
import { schema } from "./schema.ts";

/** The largest GraphQL request body accepted (yoga's own default limit), in bytes. */
export const GRAPHQL_MAX_BODY_BYTES = 25_000_000;

/** Server context passed per request by app.ts. */
export interface ServerContext {
  principal: Principal;
}

/** Builds the yoga handler; call `fetch(request, { principal })`. */
export function createGraphQL(deps: Deps) {
  return createYoga<ServerContext, GraphQLContext>({
    schema,
    graphqlEndpoint: "/graphql",
    landingPage: false,
    // Same as REST: no CORS. GraphiQL is served from this origin; API keys belong on servers.
    cors: false,
    logging: false,
    // No file uploads in this API.
    multipart: false,
    // yoga enforces its body limit while streaming the body chunk by chunk: ~75 µs of the
    // ~145 µs it spends on a `{ __typename }` request. app.ts refuses a declared length over
    // GRAPHQL_MAX_BODY_BYTES before yoga runs instead (see there).
    maxRequestBodySize: false,
    context: ({ principal }) => ({ deps, principal }),
    plugins: [useGraphQlJit()],
    maskedErrors: {
      maskError(error) {
        const original = error instanceof GraphQLError ? error.originalError : error;
        if (original instanceof AppError) {
          return new GraphQLError(original.message, {
            nodes: error instanceof GraphQLError ? error.nodes : undefined,
            path: error instanceof GraphQLError ? error.path : undefined,
            extensions: { code: original.code, ...(original.errors ? { errors: original.errors } : {}) },
          });
        }
        // Parse, validation and scalar errors are the client's and safe to show.
        if (error instanceof GraphQLError && (!original || original instanceof GraphQLError)) return error;
        deps.log.error("unexpected graphql error", {
          err: original instanceof Error ? original : new Error(String(original)),
        });
        return new GraphQLError("Unexpected error.", {
          path: error instanceof GraphQLError ? error.path : undefined,
          extensions: { code: "internal" },
        });
      },
    },
  });
}
