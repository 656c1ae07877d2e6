/**
 * Batch sends (1–1,000 recipients in one call) and segment sends (every subscribed
 * member of a segment, expanded by the `expand_segment` job). Both are written as sets:
 * a constant number of statements per batch or per page, whatever its size.
 */
import type { Deps, Principal } from "../context.ts";
import { requireTenant } from "../context.ts";
import type { SendStatus } from "../db/tables.ts";
import { AppError, type FieldError } from "../errors.ts";
import * as accounts from "../accounts/repo.ts";
import { noteQuota } from "../accounts/service.ts";
import * as contactsRepo from "../contacts/repo.ts";
import * as events from "../events/repo.ts";
import { uuidv7 } from "../ids.ts";
import { assertCompiles } from "../mail/render.ts";
import { findSegment } from "../segments/service.ts";
import * as sendsRepo from "../sends/repo.ts";
import { messageId, prepareSend, sendCommon } from "../sends/service.ts";
import { assertUuid, isUuid, parseInput } from "../validation.ts";
import { CreateBatchInput, CreateSegmentSendInput, MAX_BATCH } from "./inputs.ts";
import * as repo from "./repo.ts";

/** What `POST /api/v1/sends/batch` answers. */
export interface BatchAccepted {
  batchId: string;
  count: number;
  sends: { id: string; to: string; status: SendStatus }[];
}

/**
 * Accepts a batch, all or nothing: every recipient is validated first (each bad one is
 * named, `recipients.3.to`), the quota is reserved for the whole batch, then contacts,
 * sends, events and jobs are written with one statement each in one transaction.
 */
export async function createBatchSend(deps: Deps, p: Principal, input: unknown): Promise<BatchAccepted> {
  const t = requireTenant(p);
  const size = (input as { recipients?: unknown })?.recipients;
  if (Array.isArray(size) && size.length > MAX_BATCH) {
    throw new AppError("batch_too_large", `a batch has at most ${MAX_BATCH} recipients; this one has ${size.length}`);
  }
  const v = parseInput(CreateBatchInput, input);
  await assertCompiles(deps.renderer, { subject: v.subject });
  rejectDuplicates(v.recipients.map((r) => r.to.toLowerCase()), (i) => `recipients.${i}.to`);
  const prep = await prepareSend(deps.db, t, v);
  const scheduledAt = v.scheduledAt ? new Date(v.scheduledAt) : null;
  const deferred = scheduledAt !== null && scheduledAt.getTime() > Date.now();
  const batchId = uuidv7();

  const accepted = await deps.db.transaction().execute(async (trx) => {
    const emails = v.recipients.filter((r) => !isUuid(r.to)).map((r) => r.to);
    const ids = v.recipients.filter((r) => isUuid(r.to)).map((r) => r.to.toLowerCase());
    const byEmail = new Map(
      (await contactsRepo.upsertContactsByEmail(trx, t.accountId, emails)).map((c) => [c.email.toLowerCase(), c]),
    );
    const byId = new Map((await contactsRepo.findContactsByIds(trx, t.accountId, ids)).map((c) => [c.id, c]));
    const missing: FieldError[] = [];
    const contacts = v.recipients.map((r, i) => {
      const c = isUuid(r.to) ? byId.get(r.to.toLowerCase()) : byEmail.get(r.to.toLowerCase());
      if (!c) missing.push({ path: `recipients.${i}.to`, message: `contact ${r.to} does not exist` });
      return c!;
    });
    if (missing.length) throw new AppError("contact_not_found", missing.map((m) => m.message).join("; "), missing);
    // An address and a contact uuid may name the same contact: still one email each.
    rejectDuplicates(contacts.map((c) => c.id), (i) => `recipients.${i}.to`);

    await repo.insertBatch(trx, {
      id: batchId,
      account_id: t.accountId,
      template_id: prep.template.id,
      status: "accepted",
      count: contacts.length,
      request: "{}",
      updated_at: new Date(),
    });
    const items = contacts.map((c, i) => {
      const id = uuidv7();
      const status: SendStatus = c.status !== "subscribed" ? "suppressed" : deferred ? "scheduled" : "queued";
      return {
        id,
        contact_id: c.id,
        to_email: c.email,
        personalizations: JSON.stringify(v.recipients[i].personalizations ?? {}),
        status,
        message_id: messageId(id, prep.from.address),
      };
    });
    const common = sendCommon(t, prep, v, batchId, scheduledAt, deps.config);
    await sendsRepo.insertSends(trx, common, items);
    await events.insertEvents(
      trx,
      items.map((s, i) => ({
        send_id: s.id,
        account_id: t.accountId,
        type: s.status === "suppressed" ? "suppressed" as const : "queued" as const,
        data: s.status === "suppressed" ? { reason: contacts[i].status } : { batchId },
      })),
    );
    const queued = items.filter((s) => s.status !== "suppressed").map((s) => s.id);
    await sendsRepo.queueDeliveries(trx, queued, scheduledAt, deps.config, common.job_deferred);
    // The quota last: its row lock (every batch and send of the account queues on it) is then
    // held only until the commit that follows, not across the inserts; refused, it rolls
    // them back.
    const live = contacts.filter((c) => c.status === "subscribed").length;
    if (live > 0) {
      const reserved = await accounts.reserveUsage(trx, t.accountId, live, prep.monthlyLimit);
      if (!reserved) {
        throw new AppError("quota_exceeded", `the batch needs ${live} emails, more than this month's remaining quota`);
      }
      noteQuota({ limit: prep.monthlyLimit, used: reserved.used });
    }
    return { batchId, count: items.length, sends: items.map((s) => ({ id: s.id, to: s.to_email, status: s.status })) };
  });
  deps.log.info("batch accepted", {
    accountId: t.accountId,
    batchId,
    count: accepted.count,
    sandbox: t.mode === "test",
  });
  return accepted;
}

/** Throws 422 naming every entry that repeats an earlier one. */
function rejectDuplicates(keys: string[], path: (i: number) => string): void {
  const first = new Map<string, number>();
  const errors: FieldError[] = [];
  keys.forEach((k, i) => {
    const j = first.get(k);
    if (j === undefined) first.set(k, i);
    else errors.push({ path: path(i), message: `repeats ${path(j)}: one email per recipient` });
  });
  if (errors.length) {
    throw new AppError("validation_failed", errors.map((e) => `${e.path}: ${e.message}`).join("; "), errors);
  }
}

/**
 * Accepts a segment send at once: a batch row (`expanding`) and its `expand_segment` job in
 * one transaction. The job turns the segment's subscribed members into sends, page by page.
 */
export async function createSegmentSend(deps: Deps, p: Principal, input: unknown) {
  const t = requireTenant(p);
  const v = parseInput(CreateSegmentSendInput, input);
  await assertCompiles(deps.renderer, { subject: v.subject });
  const segment = await findSegment(deps.db, t.accountId, v.segmentId);
  if (!segment) throw new AppError("segment_not_found", `segment ${v.segmentId} does not exist`);
  const prep = await prepareSend(deps.db, t, v);
  const batchId = uuidv7();
  await deps.db.transaction().execute(async (trx) => {
    await repo.insertBatch(trx, {
      id: batchId,
      account_id: t.accountId,
      template_id: prep.template.id,
      segment_id: segment.id,
      status: "expanding",
      request: JSON.stringify({ ...v, sandbox: t.mode === "test" }),
      updated_at: new Date(),
    });
    await repo.queueExpansion(trx, batchId, null);
  });
  deps.log.info("segment send accepted", { accountId: t.accountId, batchId, segmentId: segment.id });
  return { batchId, segmentId: segment.id, status: "queued" as const };
}

/** A batch with its progress: how many of its sends are in each status. */
export async function getBatch(deps: Deps, p: Principal, id: string) {
  const t = requireTenant(p);
  const batch = await repo.findBatch(deps.db, t.accountId, assertUuid(id));
  if (!batch) throw new AppError("not_found", "batch not found");
  return { ...batch, counts: await repo.countByStatus(deps.db, batch.id) };
}

/** Like getBatch, but null instead of 404 (GraphQL's nullable `batch`). */
export async function findBatch(deps: Deps, p: Principal, id: string) {
  requireTenant(p);
  if (!isUuid(id)) return null;
  try {
    return await getBatch(deps, p, id);
  } catch (e) {
    if (e instanceof AppError && e.code === "not_found") return null;
    throw e;
  }
}

/**
 * Cancels every send of the batch that is still scheduled or queued (one statement), removes
 * their jobs, gives their quota back and stops an expansion that is still running.
 */
export async function cancelBatch(deps: Deps, p: Principal, id: string) {
  const t = requireTenant(p);
  assertUuid(id);
  const cancelled = await deps.db.transaction().execute(async (trx) => {
    const batch = await repo.findBatch(trx, t.accountId, id);
    if (!batch) throw new AppError("not_found", "batch not found");
    if (batch.status === "expanding") await repo.updateBatch(trx, id, { status: "cancelled" });
    const rows = await repo.cancelPendingOfBatch(trx, t.accountId, id);
    const ids = rows.map((r) => r.id);
    await sendsRepo.removeDeliveries(trx, ids);
    await accounts.releaseUsage(trx, t.accountId, rows.map((r) => r.created_at));
    await events.insertEvents(
      trx,
      ids.map((sendId) => ({ send_id: sendId, account_id: t.accountId, type: "cancelled" })),
    );
    return ids.length;
  });
  deps.log.info("batch cancelled", { accountId: t.accountId, batchId: id, cancelled });
  return { ...(await getBatch(deps, p, id)), cancelled };
}
