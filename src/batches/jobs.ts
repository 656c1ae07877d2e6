/**
 * The `expand_segment` task: turns a segment send into sends, 1,000 contacts a page, in
 * keyset order (contact id) so memory stays bounded whatever the segment's size. Each page
 * is one transaction — acceptSends (sends, events, jobs, quota) and the batch's cursor — so an
 * interrupted run resumes at its cursor, and the unique (batch, contact) index makes a
 * repeated page add nothing: nobody gets the email twice.
 */
import type { JobHelpers, Task } from "graphile-worker";
import type { Transaction } from "kysely";
import type { Deps } from "../context.ts";
import type { Database } from "../db/tables.ts";
import { AppError } from "../errors.ts";
import { findSegment } from "../segments/service.ts";
import { acceptSends, prepareSend } from "../sends/service.ts";
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
      try {
        outcome = await deps.db.transaction().execute((trx) => expandPage(deps, trx, batchId));
      } catch (e) {
        if (!(e instanceof AppError) || e.code !== "quota_exceeded") throw e;
        // The page was rolled back; the batch fails in a transaction of its own.
        outcome = await deps.db.transaction().execute((trx) =>
          failExpansion(deps, trx, batchId, e.code, "the monthly email limit was reached while expanding the segment")
        );
      }
      pages++;
    }
    deps.log.info("segment expansion step finished", { batchId, pages, outcome });
  };
}

/** Ends a batch's expansion as failed (when it is still expanding). */
async function failExpansion(
  deps: Deps,
  trx: Transaction<Database>,
  batchId: string,
  code: string,
  message: string,
): Promise<PageOutcome> {
  const batch = await repo.lockBatch(trx, batchId);
  if (batch?.status !== "expanding") return "done";
  await repo.updateBatch(trx, batchId, { status: "failed", error_code: code, error_message: message });
  deps.log.warn("segment expansion failed", { batchId, code });
  return "done";
}

/** Expands one page of a batch's segment in the caller's transaction. */
async function expandPage(deps: Deps, trx: Transaction<Database>, batchId: string): Promise<PageOutcome> {
  // The row lock makes two runs of the same expansion take turns, page by page.
  const batch = await repo.lockBatch(trx, batchId);
  if (!batch || batch.status !== "expanding") return "done";
  const fail = (code: string, message: string) => failExpansion(deps, trx, batchId, code, message);
  const segment = batch.segment_id ? await findSegment(trx, batch.account_id, batch.segment_id) : undefined;
  if (!segment) return await fail("segment_not_found", "the segment was deleted");
  const request = SegmentSendRequest.parse(batch.request);
  let prep;
  try {
    // The key's domain restriction was checked when the segment send was accepted.
    prep = await prepareSend(trx, { accountId: batch.account_id, domains: null }, request);
  } catch (e) {
    if (!(e instanceof AppError)) throw e;
    if (e.code === "sending_paused") {
      // Held, not lost: look again later; ops resuming the account lets it go on.
      await repo.queueExpansion(trx, batchId, new Date(Date.now() + EXPAND_PAUSED_RECHECK_MS));
      return "held";
    }
    return await fail(e.code, e.message);
  }

  const page = await repo.segmentPage(trx, batch, segment.rules, EXPAND_PAGE);
  if (page.length === 0) {
    await repo.updateBatch(trx, batchId, { status: "accepted" });
    return "done";
  }
  const { sends } = await acceptSends(trx, deps.config, [{
    ctx: {
      accountId: batch.account_id,
      sandbox: request.sandbox,
      prep,
      options: request,
      batchId,
      scheduledAt: request.scheduledAt ? new Date(request.scheduledAt) : null,
      attachments: null, // segment sends carry no files (inputs.ts: messageFields)
    },
    recipients: page.map((c) => ({ to: c.id, personalizations: request.personalizations })),
  }]);
  await repo.advanceBatch(trx, batchId, sends[0].length, page[page.length - 1].id);
  if (page.length < EXPAND_PAGE) {
    await repo.updateBatch(trx, batchId, { status: "accepted" });
    return "done";
  }
  return "more";
}
