/**
 * The middleware of a tenant REST call, in order: rate limit, body limit (counted while the
 * body streams in, before anything parses it), Idempotency-Key, the handler, problem+json for
 * errors, then the quota and rate headers.
 */
import { quotaOf } from "../accounts/repo.ts";
import type { Deps, Tenant } from "../context.ts";
import { AppError } from "../errors.ts";
import { fingerprint, idempotent, ReplayedError, validKey } from "../idempotency/service.ts";
import { rateHeaders, type RateLimiter } from "../ratelimit.ts";
import { BODY_LIMITS, BodyLease, readText } from "./body.ts";
import { json, parseJson, problemResponse } from "./problem.ts";
import { quotaHeaders } from "./quota.ts";
import type { Route } from "./router.ts";

/**
 * A tenant REST call: rate limit, the body read up to the route's limit, then the handler
 * (under its Idempotency-Key when the route takes one); POST answers carry the quota
 * headers (the handler's, from its service's answer, or else read here), every answer
 * the rate headers.
 */
export async function tenantCall(
  deps: Deps,
  limiter: RateLimiter | null,
  route: Route,
  t: Tenant,
  req: Request,
  params: Record<string, string>,
): Promise<Response> {
  const rate = limiter?.take(t.apiKeyId);
  const headers = new Headers(rate ? rateHeaders(rate) : {});
  let res: Response;
  const lease = new BodyLease(deps.config.largeBodyTimeoutMs);
  try {
    if (rate && !rate.allowed) {
      throw new AppError(
        "rate_limited",
        `more than ${rate.limit} requests per second; retry in ${rate.retryAfter} s`,
      );
    }
    // Read here, before anything parses it: the handler gets the bounded copy.
    const body = req.body ? await readText(req, route.maxBody ?? BODY_LIMITS.rest, lease) : null;
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
  } finally {
    lease.release();
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
