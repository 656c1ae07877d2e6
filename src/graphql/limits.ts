/**
 * What a GraphQL document may cost, checked before anything runs it. In the order yoga
 * applies them:
 *
 * 1. parse: at most {@link GRAPHQL_LIMITS}.tokens tokens (graphql-armor's max-tokens stops the
 *    lexer there, so a 0.6 MB alias bomb costs the first few thousand tokens, not the document);
 * 2. validate: depth, aliases and directives (graphql-armor's rules);
 * 3. before execute: the cost (@pothos/plugin-complexity: every field 1, a list ×10, a field
 *    with `first`/`limit` × that number, see builder.ts), then one rate-limit token per root
 *    field beyond the one graphql/http.ts took for the request.
 *
 * A document over a limit answers 400 with `extensions.code = "query_too_complex"`. Step 3 runs
 * in `onExecute`/`onSubscribe`, ahead of the execute function that graphql-jit installs, so
 * graphql-jit never compiles a document over a limit. It is not a validation rule because
 * yoga caches validation per document, and the cost depends on the variables (`first: $n`).
 */
import { maxAliasesPlugin } from "@escape.tech/graphql-armor-max-aliases";
import { maxDepthPlugin } from "@escape.tech/graphql-armor-max-depth";
import { maxDirectivesPlugin } from "@escape.tech/graphql-armor-max-directives";
import { maxTokensPlugin } from "@escape.tech/graphql-armor-max-tokens";
import { complexityFromQuery } from "@pothos/plugin-complexity";
import {
  type DocumentNode,
  type ExecutionArgs,
  type FragmentDefinitionNode,
  getOperationAST,
  GraphQLError,
  Kind,
  type OperationDefinitionNode,
  type SelectionSetNode,
  type ValidationContext,
  visit,
} from "graphql";
import type { Plugin } from "graphql-yoga";
import { rateHeaders, type RateLimiter } from "../ratelimit.ts";
import type { GraphQLContext } from "./builder.ts";

/** The limits of one GraphQL document (armor's defaults, raised where this API needs it). */
export const GRAPHQL_LIMITS = {
  /** Tokens of the document (armor: 1,000): 100 aliased mutations with inline inputs fit. */
  tokens: 3_000,
  /** Nesting of fields and fragments (armor: 6); this schema's deepest useful query is ~8 with fragments. */
  depth: 10,
  /** Aliased fields (armor: 15): up to 100 aliased mutations in one request, each a rate token. */
  aliases: 100,
  /** Directives (armor's default). */
  directives: 50,
  /** Cost in @pothos/plugin-complexity units: a 100-row page of sends with their events is ~6,000. */
  cost: 10_000,
} as const;

/** A `query_too_complex` error (answered 400, see `onResultProcess` below). */
function tooComplex(message: string): GraphQLError {
  return new GraphQLError(message, { extensions: { code: "query_too_complex" } });
}

/** armor's messages start with "Syntax Error: "; the code says what kind of error it is. */
const reason = (err: GraphQLError) => err.message.replace(/^Syntax Error: /, "");

/** armor reports through the validation context, as the 400 `query_too_complex`. */
const report = {
  propagateOnRejection: false,
  onReject: [(ctx: ValidationContext | null, err: GraphQLError) => ctx?.reportError(tooComplex(reason(err)))],
};

/** The selection set's fields, with fragments at this level expanded. */
function countFields(set: SelectionSetNode, fragments: Map<string, FragmentDefinitionNode>, seen = new Set()): number {
  let n = 0;
  for (const s of set.selections) {
    if (s.kind === Kind.FIELD) n++;
    else if (s.kind === Kind.INLINE_FRAGMENT) n += countFields(s.selectionSet, fragments, seen);
    else if (!seen.has(s.name.value)) {
      seen.add(s.name.value);
      const f = fragments.get(s.name.value);
      if (f) n += countFields(f.selectionSet, fragments, seen);
    }
  }
  return n;
}

/** Whether a `first`/`limit` argument takes a variable, so that the cost differs per request. */
function pagedByVariables(nodes: (OperationDefinitionNode | FragmentDefinitionNode)[]): boolean {
  let found = false;
  for (const node of nodes) {
    visit(node, {
      Argument(a) {
        if ((a.name.value === "first" || a.name.value === "limit") && a.value.kind === Kind.VARIABLE) found = true;
      },
    });
  }
  return found;
}

/**
 * The cost of operations whose cost does not depend on their variables, computed once: the
 * parsed documents are yoga's cached ones, so a repeated query costs a lookup.
 */
const knownCosts = new WeakMap<OperationDefinitionNode, number>();

/** The operation's cost, or the client's error that prevents computing it (bad variables). */
function costOf(args: ExecutionArgs, operation: OperationDefinitionNode, fragments: FragmentDefinitionNode[]) {
  const known = knownCosts.get(operation);
  if (known !== undefined) return known;
  // complexityFromQuery takes the document's first operation: give it the one that runs.
  const document: DocumentNode = { kind: Kind.DOCUMENT, definitions: [operation, ...fragments] };
  try {
    const cost = complexityFromQuery(document, {
      schema: args.schema,
      ctx: args.contextValue as object,
      variables: (args.variableValues ?? {}) as Record<string, unknown>,
    }).complexity;
    if (!pagedByVariables([operation, ...fragments])) knownCosts.set(operation, cost);
    return cost;
  } catch (err) {
    // Variables that do not coerce, an unknown fragment: the client's errors, shown as is.
    if (err instanceof GraphQLError) return err;
    throw err;
  }
}

/**
 * The cost and rate check of one operation: an error result to answer instead of running it,
 * or undefined to run it.
 */
function check(args: ExecutionArgs, limiter: RateLimiter | null) {
  const operation = getOperationAST(args.document, args.operationName);
  if (!operation) return undefined; // execute reports the missing or ambiguous operation
  const fragments = new Map<string, FragmentDefinitionNode>();
  for (const d of args.document.definitions) if (d.kind === Kind.FRAGMENT_DEFINITION) fragments.set(d.name.value, d);
  const cost = costOf(args, operation, [...fragments.values()]);
  if (cost instanceof GraphQLError) return { errors: [cost] };
  if (cost > GRAPHQL_LIMITS.cost) {
    return { errors: [tooComplex(`Query cost of ${cost} exceeds the limit of ${GRAPHQL_LIMITS.cost}.`)] };
  }
  const principal = (args.contextValue as GraphQLContext).principal;
  if (limiter && principal?.kind === "tenant") {
    const fields = countFields(operation.selectionSet, fragments);
    // graphql/http.ts took the request's first token before parsing.
    const rate = fields > 1 ? limiter.take(principal.apiKeyId, fields - 1) : null;
    if (rate && !rate.allowed) {
      const message = fields > limiter.burst
        ? `this operation has ${fields} root fields, each a request; at most ${limiter.burst} fit at once`
        : `this operation has ${fields} root fields, each a request: more than ${rate.limit} requests per second`;
      return {
        errors: [
          new GraphQLError(message, {
            extensions: { code: "rate_limited", http: { status: 429, headers: rateHeaders(rate) } },
          }),
        ],
      };
    }
  }
  return undefined;
}

/**
 * The envelop plugins of the limits, to be listed before graphql-jit's. `limiter` (null: no
 * rate limit) is the one graphql/http.ts takes each request's first token from.
 */
export function queryLimits(limiter: RateLimiter | null): Plugin[] {
  return [
    maxTokensPlugin({
      n: GRAPHQL_LIMITS.tokens,
      // Thrown from the lexer: parsing stops at the first token over the limit.
      onReject: [(_ctx, err) => {
        throw tooComplex(reason(err));
      }],
    }),
    maxDepthPlugin({ n: GRAPHQL_LIMITS.depth, ...report }),
    maxAliasesPlugin({ n: GRAPHQL_LIMITS.aliases, ...report }),
    maxDirectivesPlugin({ n: GRAPHQL_LIMITS.directives, ...report }),
    {
      onExecute({ args, setResultAndStopExecution }) {
        const refused = check(args, limiter);
        if (refused) setResultAndStopExecution(refused);
      },
      onSubscribe({ args, setResultAndStopExecution }) {
        const refused = check(args, limiter);
        if (refused) setResultAndStopExecution(refused);
      },
      // yoga answers parse and validation errors 200 to `Accept: application/json` (the
      // GraphQL-over-HTTP "spec" errors); a document over a limit is a 400 whatever is accepted.
      onResultProcess({ result, setResult }) {
        if (Array.isArray(result) || !("errors" in result)) return;
        if (result.errors?.some((e) => e.extensions?.code === "query_too_complex")) {
          setResult({ ...result, extensions: { ...result.extensions, http: { status: 400 } } });
        }
      },
    },
  ];
}
