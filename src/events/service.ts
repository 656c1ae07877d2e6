/**
 * Reading events: a send's, a contact's, and live ones. Delivery events are recorded by the
 * tasks that cause them; the contact-level ones of API status changes by contactStatusEvent.
 */
import type { Kysely } from "kysely";
import { isKeyActive } from "../accounts/service.ts";
import { findBatch } from "../batches/repo.ts";
import type { Deps, Principal, Tenant } from "../context.ts";
import { requireTenant } from "../context.ts";
import type { ContactStatus, Database, EventType } from "../db/tables.ts";
import { AppError, invalid } from "../errors.ts";
import { findSend } from "../sends/repo.ts";
import { isUuid } from "../validation.ts";
import { liveEvents, type LiveSubscription } from "./live.ts";
import * as repo from "./repo.ts";

/** A send's events, oldest first; `after` is an event id (the connection cursor). */
export async function sendEvents(
  deps: Deps,
  p: Principal,
  sendId: string,
  opts: { type?: EventType | null; first?: number | null; after?: string | null } = {},
) {
  const t = requireTenant(p, "sending");
  if (!isUuid(sendId)) return [];
  if (opts.after != null && !/^\d{1,18}$/.test(opts.after)) throw invalid("after", "is not a cursor from this API");
  return await repo.listEvents(deps.db, t.accountId, sendId, {
    type: opts.type ?? undefined,
    afterId: opts.after ?? undefined,
    limit: Math.min(Math.max(opts.first ?? 100, 1), 1000),
  });
}

/**
 * A live stream of one send's events, or of those of every send of a batch: each event
 * committed from now on, by any process, in commit order. Needs a tenant key (401
 * `unauthorized`); exactly one of `sendId` and `batchId` (422 `validation_failed`); an
 * unknown or foreign send or batch is 404 `not_found`, before anything streams. One key holds
 * at most 20 streams per process (the next is 429 `rate_limited`); once the key is revoked its
 * streams yield `unauthorized` and end within PP_LIVE_KEY_CHECK_MS. The caller must `return()`
 * the iterator when its client goes away.
 */
export async function subscribeSendEvents(
  deps: Deps,
  p: Principal,
  by: { sendId?: string | null; batchId?: string | null },
): Promise<LiveSubscription<repo.EventRow>> {
  const t = requireTenant(p, "sending");
  const sendId = by.sendId ?? null;
  const batchId = by.batchId ?? null;
  if ((sendId === null) === (batchId === null)) {
    const message = "give exactly one of sendId and batchId";
    throw new AppError("validation_failed", message, [{ path: "sendId", message }, { path: "batchId", message }]);
  }
  let of: { sendId: string } | { batchId: string };
  if (sendId !== null) {
    if (!isUuid(sendId) || !(await findSend(deps.db, t.accountId, sendId))) {
      throw new AppError("not_found", "send not found");
    }
    of = { sendId };
  } else {
    if (!isUuid(batchId!) || !(await findBatch(deps.db, t.accountId, batchId!))) {
      throw new AppError("not_found", "batch not found");
    }
    of = { batchId: batchId! };
  }
  const startId = await repo.maxEventId(deps.db);
  return await liveEvents(deps).subscribe({
    accountId: t.accountId,
    apiKeyId: t.apiKeyId || undefined,
    keyActive: () => isKeyActive(deps, t.apiKeyId),
    ...of,
    startId,
    load: (ids) => repo.eventsByIds(deps.db, t.accountId, ids),
    since: (afterId, limit) => repo.eventsAfter(deps.db, t.accountId, of, afterId, limit),
  });
}

/**
 * A contact's latest events, newest first (`first` 1–500, default 50): its own and its
 * sends'. The contact's own tenant, or ops (who reach contacts through updateContact).
 */
export async function contactEvents(
  deps: Deps,
  p: Principal,
  contact: { id: string; account_id: string },
  first?: number | null,
) {
  const accountId = p?.kind === "admin" ? contact.account_id : requireTenant(p).accountId;
  return await repo.contactEvents(deps.db, accountId, contact.id, Math.min(Math.max(first ?? 50, 1), 500));
}

/**
 * Records a contact status change made through the API, inside the caller's transaction:
 * lifting a suppression (back to subscribed) is `resubscribed`, unsubscribing is
 * `unsubscribed`. Both are contact-level events (no send) with data
 * `{previousStatus, by: "api", apiKeyId}`. Other changes, and no change, record nothing.
 */
export async function contactStatusEvent(
  db: Kysely<Database>,
  t: Tenant,
  contactId: string,
  previous: ContactStatus,
  next: ContactStatus,
): Promise<void> {
  if (previous === next || (next !== "subscribed" && next !== "unsubscribed")) return;
  await repo.insertEvents(db, [{
    send_id: null,
    contact_id: contactId,
    account_id: t.accountId,
    type: next === "subscribed" ? "resubscribed" : "unsubscribed",
    data: t.apiKeyId
      ? { previousStatus: previous, by: "api", apiKeyId: t.apiKeyId }
      : { previousStatus: previous, by: "ops" },
  }]);
}
