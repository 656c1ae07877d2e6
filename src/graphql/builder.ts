/**
 * The Pothos builder: context, scalars and plugins only. Types live in each domain's
 * schema.ts, which src/graphql/schema.ts imports.
 */
import SchemaBuilder from "@pothos/core";
import { GraphQLError, Kind, valueFromASTUntyped } from "graphql";
import type { Deps, Principal } from "../context.ts";

/** What every resolver receives. */
export interface GraphQLContext {
  deps: Deps;
  principal: Principal;
}

/** The builder's type parameters: fields are non-null unless they say otherwise. */
export interface BuilderTypes {
  Context: GraphQLContext;
  DefaultFieldNullability: false;
  Scalars: {
    DateTime: { Input: string; Output: Date | string };
    JSON: { Input: unknown; Output: unknown };
  };
}

/** The resolved schema types, for helpers that take refs (connection.ts). */
export type Types = PothosSchemaTypes.ExtendDefaultTypes<BuilderTypes>;

/** The one schema builder of the app. */
export const builder = new SchemaBuilder<BuilderTypes>({ defaultFieldNullability: false });

builder.scalarType("DateTime", {
  description: "An ISO 8601 timestamp. Inputs must carry a time zone offset (`Z` or `+02:00`).",
  serialize: (v) => (v instanceof Date ? v.toISOString() : new Date(v).toISOString()),
  // Inputs stay strings: the zod schemas in inputs.ts check them, once for REST and GraphQL.
  parseValue: (v) => {
    if (typeof v !== "string") throw new GraphQLError("DateTime must be a string");
    return v;
  },
  parseLiteral: (ast) => {
    if (ast.kind !== Kind.STRING) throw new GraphQLError("DateTime must be a string");
    return ast.value;
  },
});

builder.scalarType("JSON", {
  description: "Any JSON value.",
  serialize: (v) => v,
  parseValue: (v) => v,
  parseLiteral: (ast, vars) => valueFromASTUntyped(ast, vars),
});
