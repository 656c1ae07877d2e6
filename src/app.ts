/**
 * The HTTP handler: `/healthz`, `/graphql` and the REST shim under `/api/v1`. It resolves
 * the caller once per request and hands it to thin handlers; errors become problem+json
 * (REST) or GraphQL errors with `extensions.code`.
 */
import { authenticate } from "./accounts/service.ts";
import { quotaOf } from "./accounts/repo.ts";
import type { Deps, Principal, Tenant } from "./context.ts";
import { fingerprint, idempotent, ReplayedError, validKey } from "./idempotency/service.ts";
import { rateHeaders, RateLimiter } from "./ratelimit.ts";
import { AppError, asAppError, UNAVAILABLE_RETRY_AFTER_S } from "./errors.ts";
import { ping } from "./db/database.ts";
import { shouldRenderGraphiQL } from "graphql-yoga";
import { createGraphQL } from "./graphql/yoga.ts";
import { BODY_LIMITS, readBody, readText } from "./rest/body.ts";
import { json, parseJson, problemResponse } from "./rest/problem.ts";
import { quotaHeaders } from "./rest/quota.ts";
import * as batches from "./batches/rest.ts";
import { handleInbound } from "./inbound/webhook.ts";
import * as tracking from "./events/tracking_http.ts";
import * as sends from "./sends/rest.ts";

type Handler = (deps: Deps, p: Principal, req: Request, params: Record<string, string>) => Promise<Response>;

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
const ROUTES: { method: string; pattern: RegExp; handler: Handler; idempotent?: boolean; maxBody?: number }[] = [
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
];

/** How long /healthz trusts its last look at the database, ms. */
const HEALTH_CACHE_MS = 1_000;
/** How long /healthz waits for the database before it says it is unreachable, ms. */
const HEALTH_TIMEOUT_MS = 2_000;

/**
 * Whether the database answers, for /healthz: one `select 1` at most every HEALTH_CACHE_MS
 * (probes from several load balancers share it), answered within HEALTH_TIMEOUT_MS.
 */
function healthCheck(deps: Deps) {
  let last = { at: -Infinity, ok: true };
  let inFlight: Promise<boolean> | null = null;
  return {
    reachable(): Promise<boolean> {
      if (performance.now() - last.at < HEALTH_CACHE_MS) return Promise.resolve(last.ok);
      inFlight ??= ping(deps.pool, HEALTH_TIMEOUT_MS).then((ok) => {
        last = { at: performance.now(), ok };
        inFlight = null;
        return ok;
      });
      return inFlight;
    },
  };
}

/** The HTTP handler; `info` (from Deno.serve) gives the client's address to tracking. */
export interface App {
  fetch(req: Request, info?: Deno.ServeHandlerInfo): Promise<Response>;
}

const TRACKING = /^\/(?<kind>t\/o|t\/c|u)\/(?<token>[^/]+)$/;

/**
 * Builds the handler for role `api`/`all` (everything) or `worker` (health only). `/healthz`
 * answers 503 until `ready()` says the process is fully started.
 */
export function createApp(deps: Deps, opts: { healthOnly?: boolean; ready?: () => boolean } = {}): App {
  const limiter = deps.config.rateLimit.rate > 0
    ? new RateLimiter(deps.config.rateLimit.rate, deps.config.rateLimit.burst)
    : null;
  const graphql = createGraphQL(deps, limiter);
  const database = healthCheck(deps);

  /**
   * A tenant REST call: rate limit, the body read up to the route's limit, then the handler
   * (under its Idempotency-Key when the route takes one); POST answers carry the quota
   * headers (the handler's, from its service's answer, or else read here), every answer
   * the rate headers.
   */
  async function tenantCall(route: typeof ROUTES[number], t: Tenant, req: Request, params: Record<string, string>) {
    const rate = limiter?.take(t.apiKeyId);
    const headers = new Headers(rate ? rateHeaders(rate) : {});
    let res: Response;
    try {
      if (rate && !rate.allowed) {
        throw new AppError(
          "rate_limited",
          `more than ${rate.limit} requests per second; retry in ${rate.retryAfter} s`,
        );
      }
      // Read here, before anything parses it: the handler gets the bounded copy.
      const body = req.body ? await readText(req, route.maxBody ?? BODY_LIMITS.rest) : null;
      const bounded = body === null ? req : new Request(req.url, { method: req.method, headers: req.headers, body });
      const key = route.idempotent ? req.headers.get("idempotency-key") : null;
      if (key === null) {
        res = await route.handler(deps, t, bounded, params);
      } else {
        const out = await idempotent(
          deps,
          t,
          validKey(key, "Idempotency-Key"),
          // The parsed body, as GraphQL fingerprints its input: key order does not matter.
          fingerprint(`${req.method} ${new URL(req.url).pathname}`, body ? parseJson(body) : null),
          async () => {
            const r = await route.handler(deps, t, bounded, params);
            return { status: r.status, body: await r.json() };
          },
        );
        res = json(out.body, out.status);
        if (out.replayed) headers.set("idempotent-replayed", "true");
      }
    } catch (err) {
      res = problemResponse(err, deps.log, { method: req.method, path: new URL(req.url).pathname });
      if (err instanceof ReplayedError) headers.set("idempotent-replayed", "true");
    }
    if (req.method === "POST" && !(rate && !rate.allowed) && res.status !== 503 && !res.headers.has("x-quota-limit")) {
      // Errors, replays and answers that reserved nothing: best effort, the answer stands
      // without them if the read fails.
      const q = await quotaOf(deps.db, t.accountId).catch(() => null);
      for (const [k, v] of Object.entries(quotaHeaders(q))) headers.set(k, v);
    }
    headers.forEach((v, k) => res.headers.set(k, v));
    return res;
  }

  async function handle(req: Request, info?: Deno.ServeHandlerInfo): Promise<Response> {
    const url = new URL(req.url);
    if (url.pathname === "/healthz") {
      if (opts.ready && !opts.ready()) return json({ status: "starting" }, 503);
      return (await database.reachable())
        ? json({ status: "ok" })
        : json({ status: "unavailable", reason: "the database cannot be reached" }, 503, {
          "retry-after": String(UNAVAILABLE_RETRY_AFTER_S),
        });
    }
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

    if (url.pathname === "/graphql") {
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
      if (!req.body) return await graphql.fetch(req, { principal });
      let body: Uint8Array<ArrayBuffer>;
      try {
        body = await readBody(req, BODY_LIMITS.graphql);
      } catch (err) {
        if (!(err instanceof AppError)) throw err;
        return graphqlError(err);
      }
      return await graphql.fetch(new Request(req.url, { method: req.method, headers: req.headers, body }), {
        principal,
      });
    }

    // Relays' bounce/complaint reports: authenticated by X-PP-Signature, not by an API key.
    if (url.pathname === "/api/v1/events/inbound" || url.pathname === "/api/v1/events/inbound/ses") {
      return await handleInbound(deps, req, url.pathname.endsWith("/ses") ? "ses" : "json");
    }

    if (url.pathname.startsWith("/api/")) {
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
        return await tenantCall(match, principal, req, params as Record<string, string>);
      } catch (err) {
        return problemResponse(err, deps.log, { method: req.method, path: url.pathname });
      }
    }
    return problemResponse(new AppError("not_found", `no route for ${url.pathname}`), deps.log);
  }

  return { fetch: handle };
}
