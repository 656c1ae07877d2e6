/**
 * Rate limits per API key: a token bucket of `rate` requests per second holding up to
 * `burst`. The buckets live in this process, so with N API replicas behind a balancer a
 * key gets up to N × rate in total (see README); that keeps the check free of database
 * round trips on every request.
 */
import { type Deps, processDeps } from "./context.ts";

/** What one check says. */
export interface RateDecision {
  allowed: boolean;
  limit: number;
  remaining: number;
  /** Seconds until a request would be allowed (when refused). */
  retryAfter: number;
}

/** Token buckets keyed by API key id. */
export class RateLimiter {
  #buckets = new Map<string, { tokens: number; at: number }>();

  constructor(readonly rate: number, readonly burst: number, private readonly now = () => performance.now()) {}

  /**
   * Takes `n` tokens (default 1) for `key` if it has them all, else none. A GraphQL operation
   * takes one per root field, so `n` can exceed `burst`: such a request is never allowed.
   */
  take(key: string, n = 1): RateDecision {
    const now = this.now();
    const b = this.#buckets.get(key) ?? { tokens: this.burst, at: now };
    b.tokens = Math.min(this.burst, b.tokens + ((now - b.at) / 1000) * this.rate);
    b.at = now;
    if (this.#buckets.size > 100_000) this.#buckets.clear();
    this.#buckets.set(key, b);
    if (b.tokens >= n) {
      b.tokens -= n;
      return { allowed: true, limit: this.rate, remaining: Math.floor(b.tokens), retryAfter: 0 };
    }
    return {
      allowed: false,
      limit: this.rate,
      remaining: Math.floor(b.tokens),
      retryAfter: Math.max(1, Math.ceil((Math.min(n, this.burst) - b.tokens) / this.rate)),
    };
  }
}

/** The RateLimit-* (and, when refused, Retry-After) headers of a decision. */
export function rateHeaders(d: RateDecision): Record<string, string> {
  const h: Record<string, string> = { "ratelimit-limit": String(d.limit), "ratelimit-remaining": String(d.remaining) };
  if (!d.allowed) h["retry-after"] = String(d.retryAfter);
  return h;
}

const limiters = new WeakMap<Deps, RateLimiter | null>();

/**
 * The process's limiter (null when PP_RATE_LIMIT is 0): one for HTTP and SMTP submission, so
 * a key's requests over both share its buckets.
 */
export function rateLimiterOf(requestDeps: Deps): RateLimiter | null {
  const deps = processDeps(requestDeps);
  if (!limiters.has(deps)) {
    const { rate, burst } = deps.config.rateLimit;
    limiters.set(deps, rate > 0 ? new RateLimiter(rate, burst) : null);
  }
  return limiters.get(deps)!;
}
