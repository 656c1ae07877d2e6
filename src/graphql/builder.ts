/**
 * The Pothos builder: context, scalars and plugins only. Types live in each domain's
 * schema.ts, which src/graphql/schema.ts imports.
 */
import SchemaBuilder from "@pothos/core";
import ComplexityPlugin, { type FieldComplexityValue } from "@pothos/plugin-complexity";
import { getNullableType, GraphQLError, type GraphQLField, isListType, Kind, valueFromASTUntyped } from "graphql";
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

/** How many rows a list field is counted as when its `first`/`limit` is not given. */
const DEFAULT_LIST_ROWS = 10;
/** How many rows a paginated field (it takes `first` or `limit`) is counted as when the argument is absent. */
const DEFAULT_PAGE_ROWS = 20;

/**
 * The cost of one field for the limit in limits.ts: 1, times its rows for what it selects.
 * A field that takes `first` or `limit` is that many rows (at least 1); a connection's
 * `edges` and `nodes` are its rows already (counted by the connection field); any other list
 * is {@link DEFAULT_LIST_ROWS}.
 */
function fieldCost(
  args: Record<string, unknown>,
  _ctx: GraphQLContext,
  field: GraphQLField<unknown, GraphQLContext>,
): FieldComplexityValue {
  const rows = args.first ?? args.limit;
  if (typeof rows === "number") return { field: 1, multiplier: Math.max(1, rows) };
  if (field.args.some((a) => a.name === "first" || a.name === "limit")) {
    return { field: 1, multiplier: DEFAULT_PAGE_ROWS };
  }
  if (!isListType(getNullableType(field.type))) return 1;
  if (field.name === "edges" || field.name === "nodes") return { field: 1, multiplier: 1 };
  return { field: 1, multiplier: DEFAULT_LIST_ROWS };
}

/** The one schema builder of the app. */
export const builder = new SchemaBuilder<BuilderTypes>({
  defaultFieldNullability: false,
  plugins: [ComplexityPlugin],
  complexity: {
    fieldComplexity: fieldCost,
    // The limit is checked once before execution (limits.ts), not again in each root resolver.
    disabled: true,
  },
});

/**
 * The values of a GraphQL enum over one of our lower-case lists (db/tables.ts): each value
 * upper-cased (`delivered` → `DELIVERED`) and mapped back to itself.
 */
export function upperCaseValues<T extends string>(list: readonly T[]): Record<Uppercase<T>, { value: T }> {
  return Object.fromEntries(list.map((v) => [v.toUpperCase(), { value: v }])) as Record<Uppercase<T>, { value: T }>;
}

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
