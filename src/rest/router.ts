/**
 * The REST shim under `/api/v1`: its routes, and the dispatch that answers 404 for an unknown
 * path, 405 (with Allow) for a known path with another method, 401 without a tenant's API
 * key, and otherwise runs the route through the middleware (middleware.ts).
 */
import { authenticate } from "../accounts/service.ts";
import type { Deps, Principal } from "../context.ts";
import { AppError } from "../errors.ts";
import type { RateLimiter } from "../ratelimit.ts";
import * as batches from "../batches/rest.ts";
import * as sends from "../sends/rest.ts";
import * as webhooks from "../webhooks/rest.ts";
import { BODY_LIMITS } from "./body.ts";
import { tenantCall } from "./middleware.ts";
import { problemResponse } from "./problem.ts";

/** A route's handler: the caller, the bounded request, the path's parameters. */
export type Handler = (deps: Deps, p: Principal, req: Request, params: Record<string, string>) => Promise<Response>;

/**
 * A path pattern (`/api/v1/sends/:id`) as an anchored RegExp with named groups. Routing by
 * the pathname alone: URLPattern matched every part of the URL, ~5% of a GraphQL read's CPU.
 */
function path(pattern: string): RegExp {
  return new RegExp(`^${pattern.replace(/:(\w+)/g, "(?<$1>[^/]+)")}$`);
}

/**
 * The REST routes: method, path pattern, handler; `idempotent` routes honour Idempotency-Key;
 * `maxBody` is the route's body limit in bytes (default `BODY_LIMITS.rest`).
 */
/** One REST route (see ROUTES). */
export interface Route {
  method: string;
  pattern: RegExp;
  handler: Handler;
  idempotent?: boolean;
  maxBody?: number;
}

const ROUTES: Route[] = [
  {
    method: "POST",
    pattern: path("/api/v1/sends"),
    handler: (d, p, r) => sends.postSend(d, p, r),
    idempotent: true,
    maxBody: BODY_LIMITS.send,
  },
  {
    method: "GET",
    pattern: path("/api/v1/sends"),
    handler: (d, p, r) => sends.getSends(d, p, r),
  },
  {
    method: "POST",
    pattern: path("/api/v1/sends/batch"),
    handler: (d, p, r) => batches.postBatch(d, p, r),
    idempotent: true,
    maxBody: BODY_LIMITS.batch,
  },
  {
    method: "GET",
    pattern: path("/api/v1/sends/:id"),
    handler: (d, p, _r, a) => sends.getSend(d, p, a.id),
  },
  {
    method: "POST",
    pattern: path("/api/v1/sends/:id/cancel"),
    handler: (d, p, _r, a) => sends.postCancel(d, p, a.id),
    idempotent: true,
  },
  {
    method: "GET",
    pattern: path("/api/v1/batches/:id"),
    handler: (d, p, _r, a) => batches.getBatch(d, p, a.id),
  },
  {
    method: "POST",
    pattern: path("/api/v1/batches/:id/cancel"),
    handler: (d, p, _r, a) => batches.postCancelBatch(d, p, a.id),
    idempotent: true,
  },
  { method: "GET", pattern: path("/api/v1/webhooks"), handler: (d, p) => webhooks.getEndpoints(d, p) },
  { method: "POST", pattern: path("/api/v1/webhooks"), handler: (d, p, r) => webhooks.postEndpoint(d, p, r) },
  {
    method: "GET",
    pattern: path("/api/v1/webhooks/:id"),
    handler: (d, p, _r, a) => webhooks.getEndpoint(d, p, a.id),
  },
  {
    method: "PATCH",
    pattern: path("/api/v1/webhooks/:id"),
    handler: (d, p, r, a) => webhooks.patchEndpoint(d, p, r, a.id),
  },
  {
    method: "DELETE",
    pattern: path("/api/v1/webhooks/:id"),
    handler: (d, p, _r, a) => webhooks.deleteEndpoint(d, p, a.id),
  },
];

/**
 * The dispatch of `/api/…` requests (the inbound webhooks excepted, see app.ts); `limiter`
 * is the per-key rate limiter, null when rate limits are off.
 */
export function createRestRouter(deps: Deps, limiter: RateLimiter | null) {
  return async function rest(req: Request, url: URL): Promise<Response> {
    try {
      const candidates = ROUTES.filter((r) => r.pattern.test(url.pathname));
      if (candidates.length === 0) throw new AppError("not_found", `no route for ${url.pathname}`);
      const match = candidates.find((r) => r.method === req.method);
      if (!match) {
        const allow = candidates.map((r) => r.method).join(", ");
        const res = problemResponse(
          new AppError("method_not_allowed", `${req.method} is not allowed here; use ${allow}`),
          deps.log,
        );
        res.headers.set("allow", allow);
        return res;
      }
      const principal = await authenticate(deps, req.headers);
      if (!principal || principal.kind !== "tenant") {
        throw new AppError("unauthorized", "a valid API key is required (X-API-Key or Authorization: Bearer)");
      }
      const params = match.pattern.exec(url.pathname)?.groups ?? {};
      return await tenantCall(deps, limiter, match, principal, req, params as Record<string, string>);
    } catch (err) {
      return problemResponse(err, deps.log, { method: req.method, path: url.pathname });
    }
  };
}
