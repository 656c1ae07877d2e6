/**
 * The `record_event` task: writes an event that arrived after the send (open, click,
 * unsubscribe, delivery report, bounce, complaint), keeps every one, sets the send's
 * first `openedAt`/`clickedAt`, and marks the contact `unsubscribed`/`complained`/`bounced`
 * as the event says. Opens and clicks by machines (Apple Mail Privacy Protection, link
 * scanners) are recorded with `data.machine` so humans can be counted apart.
 */
import type { JobHelpers, Task } from "graphile-worker";
import { sql } from "kysely";
import type { Deps } from "../context.ts";
import type { Kysely } from "kysely";
import type { ContactStatus, Database, SendStatus } from "../db/tables.ts";
import { queueReputationCheck } from "../accounts/jobs.ts";
import { RecordEventJob, type RecordEventPayload } from "./inputs.ts";
import { insertEvents, type NewEvent } from "./repo.ts";

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

/**
 * Records a batch of events in one transaction, set-wise (see the module comment): the
 * `record_event` task for reports, and the tracking endpoints' group commit directly.
 */
export async function recordEvents(deps: Deps, events: RecordEventPayload[]): Promise<void> {
  const { db, log } = deps;
  const ids = [...new Set(events.map((e) => e.sendId))];
  const sends = new Map(
    (await db.selectFrom("sends").select(["id", "account_id", "contact_id", "sent_at"]).where("id", "in", ids)
      .execute())
      .map((s) => [s.id, s]),
  );
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

  await db.transaction().execute(async (trx) => {
    await insertEvents(trx, rows);
    await stampFirst(trx, "opened_at", firstOpen);
    await stampFirst(trx, "clicked_at", firstClick);
    await stampFirst(trx, "delivered_at", delivered, "delivered", ["sending", "sent"]);
    await stampFirst(trx, "bounced_at", hardBounced, "bounced", ["sending", "sent", "delivered"]);
    if (contactStatus.size) {
      const [cids, statuses] = [[...contactStatus.keys()], [...contactStatus.values()]];
      // Only upgrades: subscribed → unsubscribed → complained/bounced.
      await sql`update contacts c set status = u.status, updated_at = now()
        from unnest(${cids}::uuid[], ${statuses}::text[]) as u(id, status)
        where c.id = u.id and (c.status = 'subscribed' or (c.status = 'unsubscribed' and u.status <> 'unsubscribed'))`
        .execute(trx);
    }
    for (const accountId of accountsToCheck) await queueReputationCheck(trx, accountId);
  });
  log.info("events recorded", { count: rows.length, sends: sends.size });
}

/**
 * Sets `column` to the earliest time per send where it is still null (one statement), and
 * optionally the send's status when it is in `from`; sends where neither changes are not written.
 */
async function stampFirst(
  db: Kysely<Database>,
  column: "opened_at" | "clicked_at" | "delivered_at" | "bounced_at",
  times: Map<string, Date>,
  status?: SendStatus,
  from?: SendStatus[],
): Promise<void> {
  if (times.size === 0) return;
  const ids = [...times.keys()];
  const at = [...times.values()];
  await sql`update sends s set ${sql.ref(column)} = coalesce(s.${sql.ref(column)}, u.at)
    ${status ? sql`, status = case when s.status = any(${from}::text[]) then ${status} else s.status end` : sql``},
    updated_at = now()
    from unnest(${ids}::uuid[], ${at}::timestamptz[]) as u(id, at)
    where s.id = u.id
      -- Only rows that change: a send opened a thousand times is written once, not a
      -- thousand times (each rewrite queued on the row's lock and left a dead version).
      and (s.${sql.ref(column)} is null ${status ? sql`or s.status = any(${from}::text[])` : sql``})`.execute(db);
}
