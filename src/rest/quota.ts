/** The quota headers of POST answers: `X-Quota-Limit` and `X-Quota-Remaining` (API.md). */
import type { Quota } from "../accounts/service.ts";

/** The headers for a quota (`unlimited` when the account has no limit); none without one. */
export function quotaHeaders(q: Quota | null | undefined): Record<string, string> {
  if (!q) return {};
  return {
    "x-quota-limit": q.limit === null ? "unlimited" : String(q.limit),
    "x-quota-remaining": q.limit === null ? "unlimited" : String(Math.max(q.limit - q.used, 0)),
  };
}
