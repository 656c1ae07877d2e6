/**
 * Recording what reports say (DSN and ARF by mail, the JSON webhook, SES through SNS): name
 * the send, drop the ones that name no known send (counted and logged by id), and queue a
 * `record_event` job for the rest. The job does the writing (event, send status, contact
 * suppression), so every source behaves exactly like the others.
 */
import type { Deps } from "../context.ts";
import { enqueueEvent } from "../events/repo.ts";
import type { InboundEvent } from "./inputs.ts";
import { sendIdFromMessageId } from "./parse.ts";
import { existingSendIds } from "./repo.ts";

/** What became of a batch of inbound events. */
export interface InboundResult {
  /** Events queued for recording. */
  accepted: number;
  /** Events whose send is unknown (or not one of ours): not recorded. */
  ignored: number;
}

/**
 * Queues one `record_event` job per event whose send exists; `sendId` wins over
 * `messageId` (`<sendId@domain>`). All jobs of a call are queued in one transaction, so a
 * retried call after a failure does not record half a batch twice. `source` names the
 * report channel in logs (`dsn`, `arf`, `webhook`, `ses`).
 */
export async function recordInbound(deps: Deps, events: InboundEvent[], source: string): Promise<InboundResult> {
  const named = events.map((e) => ({ e, sendId: e.sendId ?? sendIdFromMessageId(e.messageId) }));
  const known = await existingSendIds(deps.db, [...new Set(named.flatMap((n) => n.sendId ? [n.sendId] : []))]);
  const accepted = named.filter((n) => n.sendId !== null && known.has(n.sendId));
  for (const n of named) {
    if (n.sendId !== null && known.has(n.sendId)) continue;
    // Ids only: a foreign Message-ID may hold anything, so it is not logged.
    deps.log.warn("inbound report for an unknown send, ignored", {
      source,
      type: n.e.type,
      sendId: n.sendId ?? undefined,
      named: n.sendId ? "sendId" : n.e.messageId ? "foreign messageId" : "nothing",
    });
  }
  if (accepted.length > 0) {
    await deps.db.transaction().execute(async (trx) => {
      for (const { e, sendId } of accepted) {
        await enqueueEvent(trx, { sendId: sendId!, type: e.type, occurredAt: e.occurredAt, data: e.data });
      }
    });
  }
  for (const { e, sendId } of accepted) {
    deps.log.info("inbound report queued", { source, sendId, type: e.type, bounceType: e.data.bounceType });
  }
  return { accepted: accepted.length, ignored: events.length - accepted.length };
}
