/**
 * Batch sends (1–1,000 recipients in one call) and segment sends (every subscribed
 * member of a segment, expanded by the `expand_segment` job). Both are written as sets:
 * a constant number of statements per batch or per page, whatever its size.
 */
import type { Deps, Principal } from "../context.ts";
import { requireTenant } from "../context.ts";
import { AppError } from "../errors.ts";
import * as accounts from "../accounts/repo.ts";
import type { Quota } from "../accounts/service.ts";
import * as events from "../events/repo.ts";
import { uuidv7 } from "../ids.ts";
import { assertCompiles } from "../mail/render.ts";
import { prepareAttachments } from "../attachments/service.ts";
import { findSegment } from "../segments/service.ts";
import * as sendsRepo from "../sends/repo.ts";
import { type AcceptContext, acceptSends, prepareSend, rejectDuplicates } from "../sends/service.ts";
import { RescheduleInput } from "../sends/inputs.ts";
import { assertUuid, isUuid, parseInput } from "../validation.ts";
import { BatchRecipient, CreateBatchInput, CreateSegmentSendInput, MAX_BATCH, PermissiveBatchInput } from "./inputs.ts";
import * as repo from "./repo.ts";
import type { BatchAccepted, RecipientError, SegmentSendAccepted } from "./view.ts";
import * as contactsRepo from "../contacts/repo.ts";

/**
 * Accepts a batch. `strict` (the default) is all or nothing: every recipient is validated
 * first (each bad one is named, `recipients.3.to`), then the batch row and, through
 * acceptSends, its contacts, sends, events, jobs and the quota for the whole batch, in one
 * transaction. `permissive` accepts the valid recipients the same way and answers the others
 * in `errors` with their index (a bad field, a repeat, an unknown contact); quota is taken
 * only for what was accepted, and a batch with no valid recipient is a 422. `quota` is the
 * account's after the reservation; absent when nothing was reserved (all suppressed).
 */
export async function createBatchSend(
  deps: Deps,
  p: Principal,
  input: unknown,
): Promise<{ batch: BatchAccepted; quota?: Quota }> {
  const t = requireTenant(p, "sending");
  const size = (input as { recipients?: unknown })?.recipients;
  if (Array.isArray(size) && size.length > MAX_BATCH) {
    throw new AppError("batch_too_large", `a batch has at most ${MAX_BATCH} recipients; this one has ${size.length}`);
  }
  const permissive = (input as { validation?: unknown })?.validation === "permissive";
  const { v, kept, errors } = permissive
    ? await permissiveRecipients(deps, t.accountId, input)
    : strictRecipients(input);
  await assertCompiles(deps.renderer, { subject: v.subject });
  const prep = await prepareSend(deps.db, t, v);
  const batchId = uuidv7();
  const ctx: AcceptContext = {
    accountId: t.accountId,
    sandbox: t.mode === "test",
    prep,
    options: v,
    batchId,
    scheduledAt: v.scheduledAt ? new Date(v.scheduledAt) : null,
    attachments: await prepareAttachments(v.attachments),
  };
  const recipients = kept.map(({ r, i }) => ({ ...r, path: `recipients.${i}.to` }));

  const { sends, quota } = await deps.db.transaction().execute(async (trx) => {
    await repo.insertBatch(trx, {
      id: batchId,
      account_id: t.accountId,
      template_id: prep.template?.id ?? null,
      status: "accepted",
      count: recipients.length,
      request: "{}",
      updated_at: new Date(),
    });
    return await acceptSends(trx, deps.config, [{ ctx, recipients }]);
  });
  const batch: BatchAccepted = {
    batchId,
    count: sends[0].length,
    sends: sends[0].map((s) => ({ id: s.id, to: s.to_email, status: s.status })),
    ...(permissive ? { errors } : {}),
  };
  deps.log.info("batch accepted", {
    accountId: t.accountId,
    batchId,
    count: batch.count,
    refused: errors.length,
    sandbox: ctx.sandbox,
  });
  return { batch, quota: quota.get(t.accountId) };
}

type Kept = { r: BatchRecipient; i: number }[];

/** A strict batch's recipients: all of them, or a 422 naming every bad one. */
function strictRecipients(input: unknown): { v: CreateBatchInput; kept: Kept; errors: RecipientError[] } {
  const v = parseInput(CreateBatchInput, input);
  rejectDuplicates(v.recipients.map((r) => r.to.toLowerCase()), (i) => `recipients.${i}.to`);
  return { v, kept: v.recipients.map((r, i) => ({ r, i })), errors: [] };
}

/**
 * A permissive batch's recipients checked one by one: the shared fields must be valid (else
 * 422 as strict), then each recipient's fields, repeats (the first is kept) and contact
 * uuids of no contact of the account. None left is a 422 naming them all.
 */
async function permissiveRecipients(
  deps: Deps,
  accountId: string,
  input: unknown,
): Promise<{ v: CreateBatchInput; kept: Kept; errors: RecipientError[] }> {
  const shared = parseInput(PermissiveBatchInput, input);
  const errors: RecipientError[] = [];
  let kept: Kept = [];
  const seen = new Map<string, number>();
  shared.recipients.forEach((raw, i) => {
    const r = BatchRecipient.safeParse(raw);
    if (!r.success) {
      const issue = r.error.issues[0];
      const at = issue.code === "unrecognized_keys" ? [issue.keys[0]] : issue.path;
      const path = ["recipients", i, ...at].map(String).join(".");
      const message = issue.code === "unrecognized_keys" ? "is not a known field" : issue.message;
      errors.push({ index: i, code: "validation_failed", message, path });
      return;
    }
    const key = r.data.to.toLowerCase();
    const first = seen.get(key);
    if (first !== undefined) {
      errors.push({
        index: i,
        code: "validation_failed",
        message: `repeats recipients.${first}.to: one email per recipient`,
        path: `recipients.${i}.to`,
      });
      return;
    }
    seen.set(key, i);
    kept.push({ r: r.data, i });
  });
  // Contact uuids that name no contact of the account; an address and a uuid of one contact
  // repeat too, and the later of the two is the repeat.
  const ids = kept.filter(({ r }) => isUuid(r.to)).map(({ r }) => r.to.toLowerCase());
  if (ids.length) {
    const found = new Map((await contactsRepo.findContactsByIds(deps.db, accountId, ids)).map((c) => [c.id, c]));
    const byEmail = new Map(kept.filter(({ r }) => !isUuid(r.to)).map(({ r, i }) => [r.to.toLowerCase(), i]));
    const refused = new Set<number>();
    const repeat = (later: number, first: number) => {
      refused.add(later);
      errors.push({
        index: later,
        code: "validation_failed",
        message: `repeats recipients.${first}.to: one email per recipient`,
        path: `recipients.${later}.to`,
      });
    };
    for (const { r, i } of kept) {
      if (!isUuid(r.to)) continue;
      const c = found.get(r.to.toLowerCase());
      if (!c) {
        refused.add(i);
        errors.push({
          index: i,
          code: "contact_not_found",
          message: `contact ${r.to} does not exist`,
          path: `recipients.${i}.to`,
        });
        continue;
      }
      const twin = byEmail.get(c.email.toLowerCase());
      if (twin !== undefined) repeat(Math.max(i, twin), Math.min(i, twin));
    }
    kept = kept.filter(({ i }) => !refused.has(i));
  }
  errors.sort((a, b) => a.index - b.index);
  if (kept.length === 0) {
    throw new AppError(
      "validation_failed",
      "no recipient of the batch is valid",
      errors.map((e) => ({ path: e.path, message: e.message })),
    );
  }
  return { v: { ...shared, recipients: kept.map((k) => k.r) }, kept, errors };
}

/**
 * Accepts a segment send at once: a batch row (`expanding`) and its `expand_segment` job in
 * one transaction. The job turns the segment's subscribed members into sends, page by page.
 */
export async function createSegmentSend(deps: Deps, p: Principal, input: unknown): Promise<SegmentSendAccepted> {
  const t = requireTenant(p, "sending");
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
      template_id: prep.template?.id ?? null,
      segment_id: segment.id,
      status: "expanding",
      request: JSON.stringify({ ...v, sandbox: t.mode === "test" }),
      updated_at: new Date(),
    });
    await repo.queueExpansion(trx, batchId, null);
  });
  deps.log.info("segment send accepted", { accountId: t.accountId, batchId, segmentId: segment.id });
  return { batchId, segmentId: segment.id, status: "queued" };
}

/** A batch with its progress: how many of its sends are in each status. */
export async function getBatch(deps: Deps, p: Principal, id: string) {
  const t = requireTenant(p, "sending");
  const batch = await repo.findBatch(deps.db, t.accountId, assertUuid(id));
  if (!batch) throw new AppError("not_found", "batch not found");
  return { ...batch, counts: await repo.countByStatus(deps.db, batch.id) };
}

/** Like getBatch, but null instead of 404 (GraphQL's nullable `batch`). */
export async function findBatch(deps: Deps, p: Principal, id: string) {
  requireTenant(p, "sending");
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
  const t = requireTenant(p, "sending");
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

/**
 * Moves every send of the batch that is still `scheduled` or `queued` to `scheduledAt` (as
 * sends/service rescheduleSend does for one), in one transaction; the others are left as they
 * are. A segment send still expanding answers 409 `not_reschedulable` (sends yet to be
 * created would keep the old time).
 */
export async function rescheduleBatch(deps: Deps, p: Principal, id: string, input: unknown) {
  const t = requireTenant(p, "sending");
  const { scheduledAt } = parseInput(RescheduleInput, input);
  assertUuid(id);
  const rescheduled = await deps.db.transaction().execute(async (trx) => {
    const batch = await repo.findBatch(trx, t.accountId, id);
    if (!batch) throw new AppError("not_found", "batch not found");
    if (batch.status === "expanding") {
      throw new AppError("not_reschedulable", "the segment send is still creating its sends; try again when accepted");
    }
    const at = new Date(scheduledAt);
    return (await sendsRepo.reschedulePending(trx, t.accountId, { batchId: id }, at, deps.config)).length;
  });
  deps.log.info("batch rescheduled", { accountId: t.accountId, batchId: id, rescheduled });
  return { ...(await getBatch(deps, p, id)), rescheduled };
}
