/**
 * The `record_event` task: writes an event that arrived after the send (open, click,
 * unsubscribe, delivery report, bounce, complaint), keeps every one, sets the send's
 * first `openedAt`/`clickedAt`, and marks the contact `unsubscribed`/`complained`/`bounced`
 * as the event says. Opens and clicks by machines (Apple Mail Privacy Protection, link
 * scanners) are recorded with `data.machine` so humans can be counted apart.
 */
import type { JobHelpers, Task } from "graphile-worker";
import type { Deps } from "../context.ts";
import type { ContactStatus } from "../db/tables.ts";
import { queueReputationCheck } from "../accounts/jobs.ts";
import { RecordEventJob, type RecordEventPayload } from "./inputs.ts";
import { type NewEvent, sendFacts, writeEventBatch } from "./repo.ts";

/** Seconds after sending within which an open or click is a scanner's, not a person's. */
export const SCANNER_WINDOW_S = 2;

const SCANNER_UA =
  /(bot|crawler|spider|scanner|python-requests|curl|wget|go-http-client|java\/|okhttp|barracuda|proofpoint|mimecast|symantec|trendmicro|forcepoint|safelinks|microsoft office|bingpreview|headlesschrome)/i;

/**
 * Why an open or click looks automated, or null when it looks human. Apple Mail Privacy
 * Protection fetches every pixel through Apple's proxies (17.0.0.0/8, a bare
 * `Mozilla/5.0` user agent); security scanners follow links within seconds of delivery
 * or announce themselves in the user agent.
 */
export function machineReason(
  data: { userAgent?: unknown; ip?: unknown; method?: unknown },
  occurredAt: Date,
  sentAt: Date | null,
): string | null {
  const ua = typeof data.userAgent === "string" ? data.userAgent : "";
  const ip = typeof data.ip === "string" ? data.ip : "";
  if (ip.startsWith("17.") || ua.trim() === "Mozilla/5.0") return "apple_mpp";
  if (data.method === "HEAD") return "prefetch";
  if (!ua || SCANNER_UA.test(ua)) return "scanner";
  if (sentAt && occurredAt.getTime() - sentAt.getTime() < SCANNER_WINDOW_S * 1000) return "scanner";
  return null;
}

/** Builds the `record_event` task: a batch of events in one transaction, set-wise. */
export function recordEventTask(deps: Deps): Task {
  return (payload: unknown, _helpers: JobHelpers) => recordEvents(deps, RecordEventJob.parse(payload).events);
}

/** What recording an event needs of its send; fixed once the send went out. */
interface SendFacts {
  id: string;
  account_id: string;
  contact_id: string;
  sent_at: Date | null;
}

/**
 * Facts of sent sends, most recent last: a send's opens and clicks come in runs (a reader
 * reopening, a scanner then a person), and each group of hits would otherwise start with a
 * lookup. Only sends with `sent_at` are kept: their account, contact and sent time never change.
 */
const sentFacts = new Map<string, SendFacts>();
const SENT_FACTS_MAX = 10_000;

async function factsOf(deps: Deps, ids: string[]): Promise<Map<string, SendFacts>> {
  const found = new Map<string, SendFacts>();
  const missing: string[] = [];
  for (const id of ids) {
    const hit = sentFacts.get(id);
    if (hit) found.set(id, hit);
    else missing.push(id);
  }
  if (missing.length === 0) return found;
  const rows = await sendFacts(deps.db, missing);
  for (const row of rows) {
    found.set(row.id, row);
    if (!row.sent_at) continue;
    if (sentFacts.size >= SENT_FACTS_MAX) sentFacts.delete(sentFacts.keys().next().value!);
    sentFacts.set(row.id, row);
  }
  return found;
}

/**
 * Records a batch of events set-wise (see the module comment) in one statement, or one
 * transaction when a bounce or complaint also queues a reputation check: the
 * `record_event` task for reports, and the tracking endpoints' group commit directly.
 */
export async function recordEvents(deps: Deps, events: RecordEventPayload[]): Promise<void> {
  const { db, log } = deps;
  const sends = await factsOf(deps, [...new Set(events.map((e) => e.sendId))]);
  const rows: NewEvent[] = [];
  const firstOpen = new Map<string, Date>();
  const firstClick = new Map<string, Date>();
  const delivered = new Map<string, Date>();
  const hardBounced = new Map<string, Date>();
  const contactStatus = new Map<string, ContactStatus>();
  const rank: Record<ContactStatus, number> = { subscribed: 0, unsubscribed: 1, complained: 2, bounced: 2 };
  const accountsToCheck = new Set<string>();
  const earliest = (m: Map<string, Date>, k: string, t: Date) => {
    const cur = m.get(k);
    if (!cur || t < cur) m.set(k, t);
  };

  for (const e of events) {
    const send = sends.get(e.sendId);
    if (!send) {
      log.warn("record_event: unknown send, ignored", { sendId: e.sendId, type: e.type });
      continue;
    }
    const at = new Date(e.occurredAt);
    const data: Record<string, unknown> = { ...e.data };
    if (e.type === "opened" || e.type === "clicked") {
      const reason = machineReason(data, at, send.sent_at);
      data.machine = reason !== null;
      if (reason) data.machineReason = reason;
    }
    const hard = e.type === "bounced" && data.bounceType !== "soft";
    if (e.type === "bounced") data.bounceType = hard ? "hard" : "soft";
    rows.push({ send_id: send.id, account_id: send.account_id, type: e.type, data, occurred_at: at });

    if (e.type === "opened") earliest(firstOpen, send.id, at);
    if (e.type === "clicked") earliest(firstClick, send.id, at);
    if (e.type === "delivered") earliest(delivered, send.id, at);
    if (hard) earliest(hardBounced, send.id, at);
    const status: ContactStatus | null = e.type === "unsubscribed"
      ? "unsubscribed"
      : e.type === "complained"
      ? "complained"
      : hard
      ? "bounced"
      : null;
    // A complaint or bounce outranks an unsubscribe, never the other way round.
    if (status && rank[status] > rank[contactStatus.get(send.contact_id) ?? "subscribed"]) {
      contactStatus.set(send.contact_id, status);
    }
    if (hard || e.type === "complained") accountsToCheck.add(send.account_id);
  }
  if (rows.length === 0) return;

  const stamps = { opened_at: firstOpen, clicked_at: firstClick, delivered_at: delivered, bounced_at: hardBounced };
  if (accountsToCheck.size === 0) await writeEventBatch(db, rows, stamps, contactStatus);
  else {
    await db.transaction().execute(async (trx) => {
      await writeEventBatch(trx, rows, stamps, contactStatus);
      for (const accountId of accountsToCheck) await queueReputationCheck(trx, accountId);
    });
  }
  log.info("events recorded", { count: rows.length, sends: sends.size });
}
