/**
 * The GraphQL endpoint: graphql-yoga over the Pothos schema, GraphiQL on GET from a
 * browser. AppErrors keep their message and carry `extensions.code`; anything else is
 * logged in full and masked.
 */
import { type DocumentNode, GraphQLError } from "graphql";
import { createYoga, type Plugin } from "graphql-yoga";
import { useGraphQlJit } from "@envelop/graphql-jit";
import { LRUCache } from "lru-cache";
import { type Deps, forRequest, type Principal } from "../context.ts";
import { asAppError, UNAVAILABLE_RETRY_AFTER_S } from "../errors.ts";
import type { RateLimiter } from "../ratelimit.ts";
import type { GraphQLContext } from "./builder.ts";
import { GRAPHIQL_OPTIONS, renderGraphiQL, useGraphiQLHeaders } from "./graphiql.ts";
import { queryLimits } from "./limits.ts";
import { schema } from "./schema.ts";

/** Rough bytes a parsed document holds per token (token, AST node, location), for the cache's bound. */
const BYTES_PER_TOKEN = 200;

/** The tokens of a parsed document (its location's token list), once per cache miss. */
function tokenCount(doc: DocumentNode): number {
  let n = 0;
  for (let t = doc.loc?.startToken ?? null; t; t = t.next) n++;
  return n;
}

/** Server context passed per request by graphql/http.ts. */
export interface ServerContext {
  principal: Principal;
  /** The request's id (rest/observe.ts), carried by its services' log lines. */
  requestId?: string;
}

/**
 * Builds the yoga handler; call `fetch(request, { principal })` once graphql/http.ts has authenticated
 * the caller, taken its first rate token from `limiter` (null: no rate limit) and bounded the
 * body. The limits of limits.ts run inside.
 */
export function createGraphQL(deps: Deps, limiter: RateLimiter | null = null) {
  return createYoga<ServerContext, GraphQLContext>({
    schema,
    graphqlEndpoint: "/graphql",
    landingPage: false,
    // GraphiQL's page and assets from this origin (graphiql.ts), not yoga's default CDN page.
    graphiql: GRAPHIQL_OPTIONS,
    renderGraphiQL,
    // Same as REST: no CORS. GraphiQL is served from this origin; API keys belong on servers.
    cors: false,
    logging: false,
    // No file uploads in this API.
    multipart: false,
    // yoga enforces its body limit while streaming the body chunk by chunk: ~75 µs of the
    // ~145 µs it spends on a `{ __typename }` request. graphql/http.ts reads the body up to
    // BODY_LIMITS.graphql before yoga runs instead (see there).
    maxRequestBodySize: false,
    // yoga's caches hold up to 1,024 documents each, keyed by the source text: a stream of
    // distinct multi-megabyte documents would hold gigabytes. Parsed documents are kept up to
    // ~32 MB in all; failed parses are not kept (the token limit makes them cheap to repeat).
    parserAndValidationCache: {
      documentCache: new LRUCache<string, DocumentNode>({
        max: 1024,
        ttl: 3_600_000,
        maxSize: 32_000_000,
        sizeCalculation: (doc, source) => source.length + BYTES_PER_TOKEN * tokenCount(doc),
      }),
      errorCache: { get: () => undefined, set: () => {} },
    },
    context: ({ principal, requestId }) => ({ deps: forRequest(deps, requestId), principal }),
    // The limits come first: they refuse a document before graphql-jit's execute compiles it.
    plugins: [...queryLimits(limiter), useGraphQlJit(), useGraphiQLHeaders(), useUnknownFieldCode()],
    maskedErrors: {
      maskError(error) {
        const original = error instanceof GraphQLError ? error.originalError : error;
        const app = asAppError(original);
        if (app) {
          return new GraphQLError(app.message, {
            nodes: error instanceof GraphQLError ? error.nodes : undefined,
            path: error instanceof GraphQLError ? error.path : undefined,
            extensions: {
              code: app.code,
              ...(app.errors ? { errors: app.errors } : {}),
              // A database outage answers 503 with Retry-After, like REST (yoga reads `http`).
              ...(app.code === "unavailable"
                ? { http: { status: 503, headers: { "retry-after": String(UNAVAILABLE_RETRY_AFTER_S) } } }
                : {}),
            },
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

/**
 * Unknown input fields answer `extensions.code = "validation_failed"` with `errors[]` naming
 * the field, as the REST shim's strict bodies do. They are refused by graphql-js itself (in
 * validation, or in coercing variables before anything runs), so the result is rewritten.
 */
function useUnknownFieldCode(): Plugin {
  return {
    onResultProcess({ result, setResult }) {
      if (Array.isArray(result) || !("errors" in result) || !result.errors) return;
      let changed = false;
      const errors = result.errors.map((e) => {
        // Validation errors come with yoga's GRAPHQL_VALIDATION_FAILED, coercion errors with none.
        const code = e.extensions?.code;
        const ours = e instanceof GraphQLError && (code === undefined || code === "GRAPHQL_VALIDATION_FAILED");
        const unknown = ours ? unknownInputField(e) : null;
        if (!unknown) return e;
        changed = true;
        return new GraphQLError(e.message, {
          nodes: e.nodes,
          extensions: { code: "validation_failed", errors: [unknown] },
        });
      });
      if (changed) setResult({ ...result, errors });
    },
  };
}

/**
 * An input object's unknown field, as graphql-js words it in validation (`Field "x" is not
 * defined by type "T".`) and in variable coercion (`Variable "$i" got invalid value … at
 * "i.recipients[0]"; Field "x" is not defined by type "T".`): the REST shim's
 * `validation_failed` entry for it, its path as far as the message gives one.
 */
function unknownInputField(error: GraphQLError): { path: string; message: string } | null {
  const m = error.message.match(/Field "([^"]+)" is not defined by type "[^"]+"/);
  if (!m) return null;
  // Under a variable, the path starts with the variable's name (`i.recipients.0.x`).
  const at = error.message.match(/ at "([^"]+)"/)?.[1] ?? error.message.match(/^Variable "\$(\w+)"/)?.[1];
  const base = at ? at.replace(/\[(\d+)\]/g, ".$1") + "." : "";
  return { path: base + m[1], message: "is not a known field" };
}
