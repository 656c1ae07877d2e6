/**
 * What every HTTP answer gets, in one wrapper around the app's fetch (app.ts): an
 * `X-Request-Id` (the caller's when it is sane, else a new one), which the edges read back
 * with `requestIdFor` to give the request's services a logger carrying it (context.ts
 * forRequest), and the HTTP metrics (`pp_http_requests_total`,
 * `pp_http_request_seconds`) under a bounded route label.
 */
import { GRAPHIQL_ASSETS_PATH } from "../graphql/graphiql.ts";
import { type Logger, withFields } from "../log.ts";
import { assignRequestId } from "./request_id.ts";
import { httpRequests, httpRequestSeconds } from "../metrics/metrics.ts";
import { DOCS_PATH } from "./docs.ts";
import { OPENAPI_PATH, openApiPath } from "./openapi.ts";
import { problemResponse } from "./problem.ts";
import { ROUTES } from "./router.ts";

/** Paths answered as themselves (each is one route). */
const FIXED = new Set([
  "/healthz",
  "/metrics",
  "/graphql",
  DOCS_PATH,
  OPENAPI_PATH,
  "/api/v1/events/inbound",
  "/api/v1/events/inbound/ses",
]);

const TRACKING = /^\/(?:t\/o|t\/c|u)\//;
const DOCS_ASSETS = `${DOCS_PATH}/`;

/** Every REST route's RegExp with its pattern as written in router.ts (`/api/v1/sends/:id`). */
const REST = ROUTES.map((r) => ({
  pattern: r.pattern,
  label: openApiPath(r.pattern).path.replace(/\{(\w+)\}/g, ":$1"),
}));

/**
 * The `route` label of a request: a REST route's pattern (`/api/v1/sends/:id`), one of the
 * fixed paths, `tracking` (opens, clicks, unsubscribes), the asset folders of GraphiQL and
 * `/docs` (`/graphql/assets/*`, `/docs/*`), else `other`: never anything the caller chose.
 */
export function routeLabel(pathname: string): string {
  if (FIXED.has(pathname)) return pathname;
  if (pathname.startsWith("/api/")) return REST.find((r) => r.pattern.test(pathname))?.label ?? "other";
  if (TRACKING.test(pathname)) return "tracking";
  if (pathname.startsWith(GRAPHIQL_ASSETS_PATH)) return `${GRAPHIQL_ASSETS_PATH}*`;
  if (pathname.startsWith(DOCS_ASSETS)) return `${DOCS_ASSETS}*`;
  return "other";
}

/** `handle` wrapped: request id in, on every answer and on the wrapper's own lines; the HTTP metrics out. */
export function observe<I>(
  log: Logger,
  handle: (req: Request, info?: I) => Promise<Response>,
): (req: Request, info?: I) => Promise<Response> {
  return (req, info) => {
    const started = performance.now();
    const id = assignRequestId(req);
    const reqLog = withFields(log, { requestId: id });
    return (async () => {
      const { pathname } = new URL(req.url);
      let res: Response;
      try {
        res = await handle(req, info);
      } catch (err) {
        // Nothing below should throw; if it does, the caller still gets problem+json and the id.
        res = problemResponse(err, reqLog, { method: req.method, path: pathname });
      }
      try {
        res.headers.set("x-request-id", id);
      } catch {
        // Immutable headers (Response.redirect, a proxied fetch): a copy with the id.
        res = new Response(res.body, { status: res.status, statusText: res.statusText, headers: res.headers });
        res.headers.set("x-request-id", id);
      }
      const route = routeLabel(pathname);
      const seconds = (performance.now() - started) / 1000;
      httpRequests.inc({ route, status: res.status });
      httpRequestSeconds.observe({ route }, seconds);
      reqLog.debug("request", { method: req.method, route, status: res.status, ms: Math.round(seconds * 1000) });
      return res;
    })();
  };
}
