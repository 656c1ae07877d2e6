/**
 * Recording what reports say (DSN and ARF by mail, the JSON webhook, SES through SNS): name
 * the send, drop the ones that name no known send or another recipient (counted and logged
 * by id), keep one event per (send, type), and queue a `record_event` job for the rest. The
 * job does the writing (event, send status, contact suppression), so every source behaves
 * exactly like the others.
 */
import type { Deps } from "../context.ts";
import { enqueueEvent } from "../events/repo.ts";
import type { InboundEvent } from "./inputs.ts";
import { sendIdFromMessageId } from "./parse.ts";
import { sendRecipients } from "./repo.ts";

/** What became of a batch of inbound events. */
export interface InboundResult {
  /** Events queued for recording. */
  accepted: number;
  /**
   * Events not recorded: their send is unknown (or not one of ours), their `recipient` is
   * not the send's address, or they repeat an accepted event's (send, type).
   */
  ignored: number;
}

/**
 * Queues one `record_event` job per event whose send exists; `sendId` wins over
 * `messageId` (`<sendId@domain>`). An event with a `recipient` is recorded only when that
 * is the send's address (case-insensitive): a DSN group about a cc, or about anyone else,
 * records nothing. One call is one report (or one relay batch) and records at most one
 * event per (send, type): the first, except that a hard bounce wins over a soft one — a DSN
 * with 5,000 groups naming one send is one bounce. All jobs of a call are queued in one
 * transaction, so a retried call after a failure does not record half a batch twice.
 * `source` names the report channel in logs (`dsn`, `arf`, `webhook`, `ses`).
 */
export async function recordInbound(deps: Deps, events: InboundEvent[], source: string): Promise<InboundResult> {
  const named = events.map((e) => ({ e, sendId: e.sendId ?? sendIdFromMessageId(e.messageId) }));
  const recipients = await sendRecipients(deps.db, [...new Set(named.flatMap((n) => n.sendId ? [n.sendId] : []))]);
  const kept = new Map<string, { e: InboundEvent; sendId: string }>();
  let otherRecipient = 0;
  let repeats = 0;
  for (const n of named) {
    const to = n.sendId === null ? undefined : recipients.get(n.sendId);
    if (to === undefined) {
      // Ids only: a foreign Message-ID may hold anything, so it is not logged.
      deps.log.warn("inbound report for an unknown send, ignored", {
        source,
        type: n.e.type,
        sendId: n.sendId ?? undefined,
        named: n.sendId ? "sendId" : n.e.messageId ? "foreign messageId" : "nothing",
      });
      continue;
    }
    if (n.e.recipient !== undefined && n.e.recipient.toLowerCase() !== to) {
      otherRecipient++;
      continue;
    }
    const key = `${n.sendId}:${n.e.type}`;
    const first = kept.get(key);
    if (!first) kept.set(key, { e: n.e, sendId: n.sendId! });
    else {
      repeats++;
      if (n.e.type === "bounced" && first.e.data.bounceType === "soft" && n.e.data.bounceType !== "soft") {
        kept.set(key, { e: n.e, sendId: n.sendId! });
      }
    }
  }
  if (otherRecipient > 0 || repeats > 0) {
    // Counts only: the addresses a report names are not ours to log.
    deps.log.warn("inbound report: events for another recipient or repeated, ignored", {
      source,
      otherRecipient,
      repeats,
    });
  }
  const accepted = [...kept.values()];
  if (accepted.length > 0) {
    await deps.db.transaction().execute(async (trx) => {
      for (const { e, sendId } of accepted) {
        await enqueueEvent(trx, { sendId, type: e.type, occurredAt: e.occurredAt, data: e.data });
      }
    });
  }
  for (const { e, sendId } of accepted) {
    deps.log.info("inbound report queued", { source, sendId, type: e.type, bounceType: e.data.bounceType });
  }
  return { accepted: accepted.length, ignored: events.length - accepted.length };
}
