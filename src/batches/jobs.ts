/**
 * The `expand_segment` task: turns a segment send into sends, 1,000 contacts a page, in
 * keyset order (contact id) so memory stays bounded whatever the segment's size. Each page
 * is one transaction — sends, events, jobs, quota and the batch's cursor together — so an
 * interrupted run resumes at its cursor, and the unique (batch, contact) index makes a
 * repeated page add nothing: nobody gets the email twice.
 */
import type { JobHelpers, Task } from "graphile-worker";
import type { Kysely } from "kysely";
import type { Deps, Tenant } from "../context.ts";
import type { Database } from "../db/tables.ts";
import { AppError } from "../errors.ts";
import * as accounts from "../accounts/repo.ts";
import * as events from "../events/repo.ts";
import { uuidv7 } from "../ids.ts";
import { segmentWhere } from "../segments/rules.ts";
import { findSegment } from "../segments/service.ts";
import * as sendsRepo from "../sends/repo.ts";
import { messageId, prepareSend, sendCommon } from "../sends/service.ts";
import { ExpandSegmentPayload, SegmentSendRequest } from "./inputs.ts";
import * as repo from "./repo.ts";

/** Contacts turned into sends per transaction. */
export const EXPAND_PAGE = 1000;
/** How long an expansion of a paused account waits before it looks again. */
export const EXPAND_PAUSED_RECHECK_MS = 30_000;

type PageOutcome = "more" | "done" | "held";

/** Builds the `expand_segment` task. */
export function expandSegmentTask(deps: Deps): Task {
  return async (payload: unknown, _helpers: JobHelpers) => {
    const { batchId } = ExpandSegmentPayload.parse(payload);
    let pages = 0;
    let outcome: PageOutcome = "more";
    while (outcome === "more") {
      outcome = await deps.db.transaction().execute((trx) => expandPage(deps, trx, batchId));
      pages++;
    }
    deps.log.info("segment expansion step finished", { batchId, pages, outcome });
  };
}

/** Expands one page of a batch's segment in the caller's transaction. */
async function expandPage(deps: Deps, trx: Kysely<Database>, batchId: string): Promise<PageOutcome> {
  // The row lock makes two runs of the same expansion take turns, page by page.
  const batch = await repo.lockBatch(trx, batchId);
  if (!batch || batch.status !== "expanding") return "done";
  const fail = async (code: string, message: string): Promise<PageOutcome> => {
    await repo.updateBatch(trx, batchId, { status: "failed", error_code: code, error_message: message });
    deps.log.warn("segment expansion failed", { batchId, code });
    return "done";
  };
  const segment = batch.segment_id ? await findSegment(trx, batch.account_id, batch.segment_id) : undefined;
  if (!segment) return await fail("segment_not_found", "the segment was deleted");
  const request = SegmentSendRequest.parse(batch.request);
  const tenant: Tenant = {
    kind: "tenant",
    accountId: batch.account_id,
    apiKeyId: "",
    mode: request.sandbox ? "test" : "live",
  };
  let prep;
  try {
    prep = await prepareSend(trx, tenant, request);
  } catch (e) {
    if (!(e instanceof AppError)) throw e;
    if (e.code === "sending_paused") {
      // Held, not lost: look again later; ops resuming the account lets it go on.
      await repo.queueExpansion(trx, batchId, new Date(Date.now() + EXPAND_PAUSED_RECHECK_MS));
      return "held";
    }
    return await fail(e.code, e.message);
  }

  const page = await trx.selectFrom("contacts").select(["id", "email"])
    .where("account_id", "=", batch.account_id)
    .where("status", "=", "subscribed")
    .where(segmentWhere(segment.rules))
    .$if(batch.expand_cursor !== null, (q) => q.where("id", ">", batch.expand_cursor!))
    // A repeated page (re-run from an earlier cursor) skips contacts that have their send,
    // so it neither reserves quota for them nor fails an account at its limit.
    .where(({ not, exists, selectFrom }) =>
      not(exists(
        selectFrom("sends").select("sends.id").where("sends.batch_id", "=", batchId)
          .whereRef("sends.contact_id", "=", "contacts.id"),
      ))
    )
    .orderBy("id").limit(EXPAND_PAGE).execute();
  if (page.length === 0) {
    await repo.updateBatch(trx, batchId, { status: "accepted" });
    return "done";
  }
  if (!(await accounts.reserveUsage(trx, batch.account_id, page.length, prep.monthlyLimit))) {
    return await fail("quota_exceeded", "the monthly email limit was reached while expanding the segment");
  }
  const scheduledAt = request.scheduledAt ? new Date(request.scheduledAt) : null;
  const deferred = scheduledAt !== null && scheduledAt.getTime() > Date.now();
  const personalizations = JSON.stringify(request.personalizations ?? {});
  const common = sendCommon(tenant, prep, request, batchId, scheduledAt, deps.config);
  const inserted = await sendsRepo.insertSends(
    trx,
    common,
    page.map((c) => {
      const id = uuidv7();
      return {
        id,
        contact_id: c.id,
        to_email: c.email,
        personalizations,
        status: deferred ? "scheduled" : "queued",
        message_id: messageId(id, prep.from.address),
      };
    }),
  );
  // Contacts that already had their send (a repeated page) give their unit back.
  if (inserted.length < page.length) {
    await accounts.releaseUsage(trx, batch.account_id, Array(page.length - inserted.length).fill(new Date()));
  }
  const ids = inserted.map((s) => s.id);
  await events.insertEvents(
    trx,
    ids.map((id) => ({ send_id: id, account_id: batch.account_id, type: "queued", data: { batchId } })),
  );
  await sendsRepo.queueDeliveries(trx, ids, scheduledAt, deps.config, common.job_deferred);
  await repo.advanceBatch(trx, batchId, inserted.length, page[page.length - 1].id);
  if (page.length < EXPAND_PAGE) {
    await repo.updateBatch(trx, batchId, { status: "accepted" });
    return "done";
  }
  return "more";
}
