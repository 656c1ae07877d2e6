/**
 * The HTTP handler: composes `/healthz` (rest/health.ts), `/graphql` (graphql/http.ts) and
 * GraphiQL's assets under `/graphql/assets/` (graphql/graphiql.ts), the
 * tracking endpoints (events/tracking_http.ts), the relays' inbound webhooks and the REST
 * shim under `/api/v1` (rest/router.ts, its middleware in rest/middleware.ts), and `/metrics`
 * (metrics/rest.ts); rest/observe.ts wraps it all (X-Request-Id, the HTTP metrics).
 */
import type { Deps } from "./context.ts";
import { AppError } from "./errors.ts";
import { GRAPHIQL_ASSETS_PATH, graphiqlAsset } from "./graphql/graphiql.ts";
import { createGraphQLHandler } from "./graphql/http.ts";
import { handleInbound } from "./inbound/webhook.ts";
import * as tracking from "./events/tracking_http.ts";
import { rateLimiterOf } from "./ratelimit.ts";
import { DOCS_PATH, docsHandler } from "./rest/docs.ts";
import { createHealthz } from "./rest/health.ts";
import { problemResponse } from "./rest/problem.ts";
import { createRestRouter } from "./rest/router.ts";
import { createMetricsEndpoint } from "./metrics/rest.ts";
import { observe } from "./rest/observe.ts";
import type { MetricsJson } from "./metrics/metrics.ts";

/** The HTTP handler; `info` (from Deno.serve) gives the client's address to tracking. */
export interface App {
  fetch(req: Request, info?: Deno.ServeHandlerInfo): Promise<Response>;
}

const TRACKING = /^\/(?<kind>t\/o|t\/c|u)\/(?<token>[^/]+)$/;

/**
 * Builds the handler for role `api`/`all` (everything) or `worker` (health only). `/healthz`
 * answers 503 until `ready()` says the process is fully started; `/metrics` adds
 * `moreMetrics()` (the worker thread's counters) to this loop's.
 */
export function createApp(
  deps: Deps,
  opts: { healthOnly?: boolean; ready?: () => boolean; moreMetrics?: () => Promise<MetricsJson> } = {},
): App {
  const limiter = rateLimiterOf(deps);
  const healthz = createHealthz(deps, opts.ready);
  const graphql = createGraphQLHandler(deps, limiter);
  const rest = createRestRouter(deps, limiter);
  const metrics = createMetricsEndpoint(deps, opts.moreMetrics);

  async function handle(req: Request, info?: Deno.ServeHandlerInfo): Promise<Response> {
    const url = new URL(req.url);
    if (url.pathname === "/healthz") return await healthz();
    // Every role: each process exposes its own counters. Before the REST shim: no tenant rate limit.
    if (url.pathname === "/metrics") return await metrics(req);
    if (opts.healthOnly) {
      return problemResponse(new AppError("not_found", "this process runs the worker only"), deps.log);
    }

    const tracked = TRACKING.exec(url.pathname)?.groups;
    if (tracked) {
      const remote = info?.remoteAddr as Deno.NetAddr | undefined;
      const token = tracked.token!;
      try {
        if (tracked.kind === "t/o" && (req.method === "GET" || req.method === "HEAD")) {
          return await tracking.openPixel(deps, token, req, remote);
        }
        if (tracked.kind === "t/c" && (req.method === "GET" || req.method === "HEAD")) {
          return await tracking.clickRedirect(deps, token, req, remote);
        }
        if (tracked.kind === "u" && req.method === "GET") return tracking.unsubscribePage(deps, token);
        if (tracked.kind === "u" && req.method === "POST") {
          return await tracking.unsubscribePost(deps, token, req, remote);
        }
        return new Response("Method not allowed\n", { status: 405 });
      } catch (err) {
        // A body over the unsubscribe POST's limit: the caller's error, answered as such.
        if (err instanceof AppError) return problemResponse(err, deps.log);
        deps.log.error("tracking endpoint failed", { path: url.pathname.slice(0, 4), err });
        return new Response("Temporarily unavailable\n", { status: 503 });
      }
    }

    if (url.pathname === "/graphql") return await graphql(req);
    // GraphiQL's scripts, styles, fonts and workers: public, no key.
    if (url.pathname.startsWith(GRAPHIQL_ASSETS_PATH)) return await graphiqlAsset(req, url.pathname);

    // Relays' bounce/complaint reports: authenticated by X-PP-Signature, not by an API key.
    if (url.pathname === "/api/v1/events/inbound" || url.pathname === "/api/v1/events/inbound/ses") {
      return await handleInbound(deps, req, url.pathname.endsWith("/ses") ? "ses" : "json");
    }

    // The API reference (rest/docs.ts), from /api/v1/openapi.json (public, in the REST shim).
    if (url.pathname === DOCS_PATH || url.pathname.startsWith(`${DOCS_PATH}/`)) {
      return await docsHandler(req, url.pathname, deps.log);
    }
    if (url.pathname.startsWith("/api/")) return await rest(req, url);
    return problemResponse(new AppError("not_found", `no route for ${url.pathname}`), deps.log);
  }

  // X-Request-Id on every answer and its log lines, and the HTTP metrics (rest/observe.ts).
  return { fetch: observe(deps.log, handle) };
}
