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
import type { ContactStatus } from "../db/tables.ts";
import { RecordEventPayload } from "./inputs.ts";
import { insertEvents } from "./repo.ts";

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

/** Builds the `record_event` task. */
export function recordEventTask(deps: Deps): Task {
  const { db, log } = deps;
  return async (payload: unknown, _helpers: JobHelpers) => {
    const p = RecordEventPayload.parse(payload);
    const occurredAt = new Date(p.occurredAt);
    const send = await db.selectFrom("sends").select(["id", "account_id", "contact_id", "sent_at", "status"])
      .where("id", "=", p.sendId).executeTakeFirst();
    if (!send) {
      log.warn("record_event: unknown send, ignored", { sendId: p.sendId, type: p.type });
      return;
    }
    const data: Record<string, unknown> = { ...p.data };
    if (p.type === "opened" || p.type === "clicked") {
      const reason = machineReason(data, occurredAt, send.sent_at);
      data.machine = reason !== null;
      if (reason) data.machineReason = reason;
    }
    const hard = p.type === "bounced" && data.bounceType !== "soft";
    if (p.type === "bounced") data.bounceType = hard ? "hard" : "soft";
    const contactStatus: ContactStatus | null = p.type === "unsubscribed"
      ? "unsubscribed"
      : p.type === "complained"
      ? "complained"
      : hard
      ? "bounced"
      : null;

    await db.transaction().execute(async (trx) => {
      await insertEvents(trx, [{ send_id: send.id, account_id: send.account_id, type: p.type, data }]);
      if (p.type === "opened") {
        await trx.updateTable("sends").set({ opened_at: sql`coalesce(opened_at, ${occurredAt})` })
          .where("id", "=", send.id).execute();
      } else if (p.type === "clicked") {
        await trx.updateTable("sends").set({ clicked_at: sql`coalesce(clicked_at, ${occurredAt})` })
          .where("id", "=", send.id).execute();
      } else if (p.type === "delivered") {
        await trx.updateTable("sends")
          .set({
            status: "delivered",
            delivered_at: sql`coalesce(delivered_at, ${occurredAt})`,
            updated_at: sql`now()`,
          })
          .where("id", "=", send.id).where("status", "in", ["sending", "sent"]).execute();
      } else if (hard) {
        await trx.updateTable("sends")
          .set({ status: "bounced", bounced_at: sql`coalesce(bounced_at, ${occurredAt})`, updated_at: sql`now()` })
          .where("id", "=", send.id).where("status", "in", ["sending", "sent", "delivered"]).execute();
      }
      if (contactStatus) {
        // A complaint or bounce outranks an unsubscribe, never the other way round.
        const weaker: ContactStatus[] = contactStatus === "unsubscribed"
          ? ["subscribed"]
          : ["subscribed", "unsubscribed"];
        await trx.updateTable("contacts").set({ status: contactStatus, updated_at: sql`now()` })
          .where("id", "=", send.contact_id).where("status", "in", weaker).execute();
      }
    });
    log.info("event recorded", { sendId: send.id, accountId: send.account_id, type: p.type, machine: data.machine });
  };
}
