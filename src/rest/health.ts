/** `/healthz`: 503 until the process is ready or while the database cannot be reached. */
import type { Deps } from "../context.ts";
import { ping } from "../db/database.ts";
import { UNAVAILABLE_RETRY_AFTER_S } from "../errors.ts";
import { json } from "./problem.ts";

/** How long /healthz trusts its last look at the database, ms. */
const HEALTH_CACHE_MS = 1_000;
/** How long /healthz waits for the database before it says it is unreachable, ms. */
const HEALTH_TIMEOUT_MS = 2_000;

/**
 * Whether the database answers, for /healthz: one `select 1` at most every HEALTH_CACHE_MS
 * (probes from several load balancers share it), answered within HEALTH_TIMEOUT_MS.
 */
export function healthCheck(deps: Deps) {
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

/**
 * The `/healthz` answer: 503 `starting` until `ready()` (when given) says the process is
 * fully started, 503 `unavailable` with Retry-After while the database does not answer,
 * else 200 `ok`.
 */
export function createHealthz(deps: Deps, ready?: () => boolean): () => Promise<Response> {
  const database = healthCheck(deps);
  return async () => {
    if (ready && !ready()) return json({ status: "starting" }, 503);
    return (await database.reachable())
      ? json({ status: "ok" })
      : json({ status: "unavailable", reason: "the database cannot be reached" }, 503, {
        "retry-after": String(UNAVAILABLE_RETRY_AFTER_S),
      });
  };
}
