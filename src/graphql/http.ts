/** `/graphql` over HTTP: what runs before yoga, each step before the next costs anything. */
import { shouldRenderGraphiQL } from "graphql-yoga";
import { authenticate } from "../accounts/service.ts";
import type { Deps, Principal } from "../context.ts";
import { requestIdFor } from "../rest/request_id.ts";
import { AppError, asAppError, UNAVAILABLE_RETRY_AFTER_S } from "../errors.ts";
import { rateHeaders, type RateLimiter } from "../ratelimit.ts";
import { BODY_LIMITS, BodyLease, readBody } from "../rest/body.ts";
import { json } from "../rest/problem.ts";
import { createGraphQL } from "./yoga.ts";

/**
 * The `/graphql` handler: the caller from the headers (401 without one, except the GraphiQL
 * page), a tenant's first rate token (429), the body up to `BODY_LIMITS.graphql` (413); then
 * yoga parses, checks the document's limits (limits.ts) and runs it. Errors before yoga are
 * GraphQL errors with `extensions.code`; 503 carries Retry-After.
 */
export function createGraphQLHandler(deps: Deps, limiter: RateLimiter | null) {
  const graphql = createGraphQL(deps, limiter);
  return async function handle(req: Request): Promise<Response> {
    // In this order, each before the next costs anything: the caller (headers only), its
    // first rate token, the body up to its limit; then yoga parses, checks the document's
    // limits (graphql/limits.ts) and runs it.
    const graphqlError = (err: AppError) =>
      json(
        { errors: [{ message: err.message, extensions: { code: err.code } }] },
        err.status,
        err.status === 503 ? { "retry-after": String(UNAVAILABLE_RETRY_AFTER_S) } : undefined,
      );
    let principal: Principal;
    try {
      principal = await authenticate(deps, req.headers);
    } catch (err) {
      const app = asAppError(err);
      if (!app) throw err;
      return graphqlError(app);
    }
    // Only the GraphiQL page (a browser's GET; yoga never runs an operation for it) is open.
    if (!principal && !shouldRenderGraphiQL(req)) {
      return graphqlError(
        new AppError(
          "unauthorized",
          "an API key or the admin token is required (X-API-Key or Authorization: Bearer)",
        ),
      );
    }
    if (principal?.kind === "tenant" && limiter) {
      const rate = limiter.take(principal.apiKeyId);
      if (!rate.allowed) {
        return json(
          {
            errors: [{
              message: `more than ${rate.limit} requests per second`,
              extensions: { code: "rate_limited" },
            }],
          },
          429,
          rateHeaders(rate),
        );
      }
    }
    // The request's id, for the logger of its services (context.ts forRequest).
    const requestId = requestIdFor(req);
    if (!req.body) return await graphql.fetch(req, { principal, requestId });
    // A large body (files) waits for one of the few slots for large bodies (rest/body.ts).
    const lease = new BodyLease(deps.config.largeBodyTimeoutMs);
    try {
      let body: Uint8Array<ArrayBuffer>;
      try {
        body = await readBody(req, BODY_LIMITS.graphql, lease);
      } catch (err) {
        if (!(err instanceof AppError)) throw err;
        return graphqlError(err);
      }
      return await graphql.fetch(new Request(req.url, { method: req.method, headers: req.headers, body }), {
        principal,
        requestId,
      });
    } finally {
      lease.release();
    }
  };
}
