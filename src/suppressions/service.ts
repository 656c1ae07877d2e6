/**
 * Suppressions: the account's contacts that are not mailed (unsubscribed, bounced,
 * complained) and why. A suppression is lifted by setting the contact back to subscribed
 * (`updateContact`), which records a `resubscribed` event.
 */
import type { Deps, Principal } from "../context.ts";
import { requireTenant } from "../context.ts";
import { decodeCursor } from "../pagination.ts";
import * as repo from "./repo.ts";

/**
 * A page of the caller's suppressed contacts, the most recently changed first (`first`
 * 1–100, default 20), optionally of one reason; `after` is a cursor from this list (422
 * `validation_failed` otherwise).
 */
export async function listSuppressions(
  deps: Deps,
  p: Principal,
  opts: { first?: number | null; after?: string | null; reason?: repo.SuppressionReason | null },
) {
  const t = requireTenant(p);
  const limit = Math.min(Math.max(opts.first ?? 20, 1), 100);
  const after = opts.after ? decodeCursor(opts.after, "after") : undefined;
  const rows = await repo.listSuppressions(deps.db, t.accountId, {
    limit: limit + 1,
    reason: opts.reason ?? undefined,
    after,
  });
  return { rows: rows.slice(0, limit), hasMore: rows.length > limit };
}
