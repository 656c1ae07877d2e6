/** SQL for email events: append-only, read oldest first. */
import { type Kysely, sql } from "kysely";
import type { Database, EventType } from "../db/tables.ts";
import type { RecordEventPayload } from "./inputs.ts";

/** One event to record. */
export interface NewEvent {
  send_id: string | null;
  account_id: string;
  contact_id?: string | null;
  type: EventType;
  data?: Record<string, unknown>;
}

/**
 * Appends events and announces each on EVENTS_CHANNEL, in one statement, so that live
 * subscribers in any process (LISTEN) learn of it when the caller's transaction commits.
 */
export async function insertEvents(db: Kysely<Database>, events: NewEvent[]): Promise<void> {
  if (events.length === 0) return;
  const col = <T>(f: (e: NewEvent) => T) => events.map(f);
  await sql`
    with ins as (
      insert into email_events (send_id, account_id, contact_id, type, data)
      select u.send_id, u.account_id, u.contact_id, u.type, u.data::jsonb
      from unnest(${col((e) => e.send_id)}::uuid[], ${col((e) => e.account_id)}::uuid[],
        ${col((e) => e.contact_id ?? null)}::uuid[], ${col((e) => e.type)}::text[],
        ${col((e) => JSON.stringify(e.data ?? {}))}::text[]) as u(send_id, account_id, contact_id, type, data)
      returning id, send_id, account_id, type)
    ${notifySelect}`.execute(db);
}

/** `select pg_notify(…) from ins`: one notice per inserted event (see EventNotice). */
export const notifySelect = sql`
  select pg_notify('pp_events', json_build_object('id', ins.id::text, 'sendId', ins.send_id,
    'batchId', s.batch_id, 'accountId', ins.account_id, 'type', ins.type)::text)
  from ins left join sends s on s.id = ins.send_id`;

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

/**
 * Queues a `record_event` job (one statement): the HTTP endpoints and report readers answer
 * at once and leave the writing to the worker.
 */
export async function enqueueEvent(db: Kysely<Database>, payload: RecordEventPayload): Promise<void> {
  await sql`select graphile_worker.add_job('record_event', ${JSON.stringify(payload)}::json, max_attempts := 5)`
    .execute(db);
}

/** The notification channel of recorded events (LISTEN pp_events). */
export const EVENTS_CHANNEL = "pp_events";

/** What is sent on EVENTS_CHANNEL for each recorded event. */
export interface EventNotice {
  id: string;
  sendId: string | null;
  batchId: string | null;
  accountId: string;
  type: EventType;
}
