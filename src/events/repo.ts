/** SQL for email events: append-only, read oldest first. */
import type { Kysely } from "kysely";
import type { Database, EventType } from "../db/tables.ts";

/** One event to record. */
export interface NewEvent {
  send_id: string;
  account_id: string;
  type: EventType;
  data?: Record<string, unknown>;
}

/** Appends events in one statement. */
export async function insertEvents(db: Kysely<Database>, events: NewEvent[]): Promise<void> {
  if (events.length === 0) return;
  await db.insertInto("email_events")
    .values(
      events.map((e) => ({
        send_id: e.send_id,
        account_id: e.account_id,
        type: e.type,
        data: JSON.stringify(e.data ?? {}),
      })),
    )
    .execute();
}

/** A send's events, oldest first, optionally of one type and after an event id. */
export function listEvents(
  db: Kysely<Database>,
  accountId: string,
  sendId: string,
  opts: { type?: EventType; afterId?: string; limit?: number } = {},
) {
  let q = db.selectFrom("email_events").select(["id", "send_id", "type", "occurred_at", "data"])
    .where("send_id", "=", sendId).where("account_id", "=", accountId);
  if (opts.type) q = q.where("type", "=", opts.type);
  if (opts.afterId) q = q.where("id", ">", opts.afterId);
  return q.orderBy("id").limit(opts.limit ?? 1000).execute();
}
