/**
 * `GET /metrics` (API.md): Prometheus' text format, for `Authorization: Bearer` with
 * PP_METRICS_TOKEN or the admin token; 401 problem+json otherwise. Answered before the REST
 * shim and GraphQL (app.ts), so no tenant rate limit applies, in every role (a worker
 * process exposes its own counters).
 */
import { createHash, timingSafeEqual } from "node:crypto";
import type { Deps } from "../context.ts";
import { AppError } from "../errors.ts";
import { problemResponse } from "../rest/problem.ts";
import type { MetricsJson } from "./metrics.ts";
import { scrape } from "./service.ts";

/** Constant-time string comparison: SHA-256 both sides so the lengths match too. */
function sameSecret(a: string, b: string): boolean {
  const h = (v: string) => createHash("sha256").update(v).digest();
  return timingSafeEqual(h(a), h(b));
}

/** The `/metrics` handler for a process's deps; `more` gives the worker thread's counts (role `all`). */
export function createMetricsEndpoint(deps: Deps, more?: () => Promise<MetricsJson>) {
  return async function metrics(req: Request): Promise<Response> {
    if (req.method !== "GET" && req.method !== "HEAD") {
      const res = problemResponse(
        new AppError("method_not_allowed", `${req.method} is not allowed here; use GET`),
        deps.log,
      );
      res.headers.set("allow", "GET, HEAD");
      return res;
    }
    const bearer = req.headers.get("authorization")?.match(/^Bearer\s+(.+)$/i)?.[1]?.trim();
    const token = deps.config.metricsToken;
    const allowed = bearer !== undefined &&
      ((token !== undefined && sameSecret(bearer, token)) || sameSecret(bearer, deps.secrets.adminToken));
    if (!allowed) {
      return problemResponse(
        new AppError("unauthorized", "metrics need Authorization: Bearer <PP_METRICS_TOKEN> (or the admin token)"),
        deps.log,
      );
    }
    const { body, contentType } = await scrape(deps.db, deps.log, more);
    return new Response(req.method === "HEAD" ? null : body, {
      headers: { "content-type": contentType, "cache-control": "no-store" },
    });
  };
}
