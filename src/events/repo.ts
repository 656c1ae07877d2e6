/** SQL for email events: append-only, read oldest first. */
import { type Kysely, type Selectable, sql } from "kysely";
import type { ContactStatus, Database, EmailEventsTable, EventType } from "../db/tables.ts";
import type { RecordEventPayload } from "./inputs.ts";

/** What recording an event needs of each send (its account, contact, and whether it went out). */
export function sendFacts(db: Kysely<Database>, ids: string[]) {
  return db.selectFrom("sends").select(["id", "account_id", "contact_id", "sent_at"]).where("id", "in", ids)
    .execute();
}

/** One event to record. */
export interface NewEvent {
  send_id: string | null;
  account_id: string;
  contact_id?: string | null;
  type: EventType;
  data?: Record<string, unknown>;
  /** When it happened; default: now (the database clock). */
  occurred_at?: Date;
}

/**
 * Appends events and announces each on EVENTS_CHANNEL, in one statement, so that live
 * subscribers in any process (LISTEN) learn of it when the caller's transaction commits.
 */
export async function insertEvents(db: Kysely<Database>, events: NewEvent[]): Promise<void> {
  if (events.length === 0) return;
  await sql`with ins as (${insertEventsSql(events)}) ${notifySelect}`.execute(db);
}

/** The set-wise insert of `events`, returning what notifySelect announces (for a CTE `ins`). */
function insertEventsSql(events: NewEvent[]) {
  const col = <T>(f: (e: NewEvent) => T) => events.map(f);
  return sql`
    insert into email_events (send_id, account_id, contact_id, type, data, occurred_at)
    select u.send_id, u.account_id, u.contact_id, u.type, u.data::jsonb, coalesce(u.at, clock_timestamp())
    from unnest(${col((e) => e.send_id)}::uuid[], ${col((e) => e.account_id)}::uuid[],
      ${col((e) => e.contact_id ?? null)}::uuid[], ${col((e) => e.type)}::text[],
      ${col((e) => JSON.stringify(e.data ?? {}))}::text[], ${col((e) => e.occurred_at ?? null)}::timestamptz[])
      as u(send_id, account_id, contact_id, type, data, at)
    returning id, send_id, account_id, type`;
}

/** First times per send that an event batch stamps (each only where still unset). */
export interface SendStamps {
  opened_at: Map<string, Date>;
  clicked_at: Map<string, Date>;
  /** Also moves a `sending`/`sent` send to `delivered`. */
  delivered_at: Map<string, Date>;
  /** Also moves a `sending`/`sent`/`delivered` send to `bounced` (a hard bounce). */
  bounced_at: Map<string, Date>;
}

/**
 * Appends `events` (announced as insertEvents does), stamps each send's first times and
 * status (`stamps`), and upgrades contacts' statuses (`contactStatus`: subscribed →
 * unsubscribed → complained/bounced, never back), all in ONE statement: one round trip and
 * one atomic write for a whole group of tracking hits. Every send is updated at most once
 * (Postgres cannot update a row twice in one statement), and only when something changes:
 * a send opened a thousand times is written once, not a thousand times.
 */
export async function writeEventBatch(
  db: Kysely<Database>,
  events: NewEvent[],
  stamps: SendStamps,
  contactStatus: Map<string, ContactStatus>,
): Promise<void> {
  if (events.length === 0) return;
  const ids = [
    ...new Set(
      [stamps.opened_at, stamps.clicked_at, stamps.delivered_at, stamps.bounced_at].flatMap((m) => [...m.keys()]),
    ),
  ];
  const at = (m: Map<string, Date>) => ids.map((id) => m.get(id) ?? null);
  const [cids, statuses] = [[...contactStatus.keys()], [...contactStatus.values()]];
  await sql`
    with ins as (${insertEventsSql(events)}),
    stamped as (
      update sends s set
        opened_at = coalesce(s.opened_at, u.opened), clicked_at = coalesce(s.clicked_at, u.clicked),
        delivered_at = coalesce(s.delivered_at, u.delivered), bounced_at = coalesce(s.bounced_at, u.bounced),
        status = case
          when u.bounced is not null and s.status in ('sending', 'sent', 'delivered') then 'bounced'
          when u.delivered is not null and s.status in ('sending', 'sent') then 'delivered'
          else s.status end,
        updated_at = now()
      from unnest(${ids}::uuid[], ${at(stamps.opened_at)}::timestamptz[], ${at(stamps.clicked_at)}::timestamptz[],
        ${at(stamps.delivered_at)}::timestamptz[], ${at(stamps.bounced_at)}::timestamptz[])
        as u(id, opened, clicked, delivered, bounced)
      where s.id = u.id and (
        (u.opened is not null and s.opened_at is null) or (u.clicked is not null and s.clicked_at is null)
        or (u.delivered is not null and (s.delivered_at is null or s.status in ('sending', 'sent')))
        or (u.bounced is not null and (s.bounced_at is null or s.status in ('sending', 'sent', 'delivered'))))),
    contacts_upgraded as (
      update contacts c set status = u.status, updated_at = now()
      from unnest(${cids}::uuid[], ${statuses}::text[]) as u(id, status)
      where c.id = u.id and (c.status = 'subscribed' or (c.status = 'unsubscribed' and u.status <> 'unsubscribed')))
    ${notifySelect}`.execute(db);
}

/**
 * Inserted events per NOTIFY: a JSON array of this many EventNotices (~150 bytes each) stays
 * under Postgres' 8,000-byte payload limit.
 */
export const NOTICES_PER_NOTIFY = 40;

/**
 * `select pg_notify(…) from ins`: the inserted events announced as JSON arrays of
 * EventNotices, oldest first, NOTICES_PER_NOTIFY to a notification. One NOTIFY per event
 * cost Postgres a queue entry each: 1,000 per batch, two per delivered email.
 */
export const notifySelect = sql`
  select pg_notify('pp_events', json_agg(n.notice order by n.id)::text)
  from (
    select ins.id, (row_number() over (order by ins.id) - 1) / ${NOTICES_PER_NOTIFY} as chunk,
      json_build_object('id', ins.id::text, 'sendId', ins.send_id, 'batchId', s.batch_id,
        'accountId', ins.account_id, 'type', ins.type) as notice
    from ins left join sends s on s.id = ins.send_id) n
  group by n.chunk
  order by n.chunk`;

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
 * Queues a `record_event` job for one event (one statement): report readers answer at
 * once and leave the writing to the worker.
 */
export async function enqueueEvent(db: Kysely<Database>, payload: RecordEventPayload): Promise<void> {
  await sql`select graphile_worker.add_job('record_event', ${JSON.stringify({ events: [payload] })}::json,
    max_attempts := 5)`.execute(db);
}

/** The notification channel of recorded events (LISTEN pp_events). */
export const EVENTS_CHANNEL = "pp_events";

/** What is sent on EVENTS_CHANNEL for each recorded event, in arrays (see notifySelect). */
export interface EventNotice {
  id: string;
  sendId: string | null;
  batchId: string | null;
  accountId: string;
  type: EventType;
}

/** The columns of an event as the API shows it (see EmailEvent in schema.ts). */
const EVENT_COLUMNS = ["id", "send_id", "contact_id", "type", "occurred_at", "data"] as const;

/** An event as the API shows it. */
export type EventRow = Pick<Selectable<EmailEventsTable>, typeof EVENT_COLUMNS[number]>;

/** The highest event id so far ("0" when there is none): where a live subscription starts. */
export async function maxEventId(db: Kysely<Database>): Promise<string> {
  // A backward scan of the primary key: one index entry, whatever the table's size.
  const r = await sql<{ id: string }>`select coalesce(max(id), 0)::text as id from email_events`.execute(db);
  return r.rows[0].id;
}

/** An account's events by id, in any order; ids of other accounts' events are left out. */
export function eventsByIds(db: Kysely<Database>, accountId: string, ids: string[]): Promise<EventRow[]> {
  if (ids.length === 0) return Promise.resolve([]);
  return db.selectFrom("email_events").select(EVENT_COLUMNS)
    .where("account_id", "=", accountId).where("id", "in", ids).execute();
}

/**
 * Up to `limit` events of one send, or of every send of a batch, with an id above `afterId`,
 * oldest first: what a live subscriber catches up on after it may have missed notices.
 */
export function eventsAfter(
  db: Kysely<Database>,
  accountId: string,
  of: { sendId: string } | { batchId: string },
  afterId: string,
  limit: number,
): Promise<EventRow[]> {
  let q = db.selectFrom("email_events").select(EVENT_COLUMNS)
    .where("account_id", "=", accountId).where("id", ">", afterId);
  q = "sendId" in of
    ? q.where("send_id", "=", of.sendId)
    : q.where("send_id", "in", (eb) => eb.selectFrom("sends").select("id").where("batch_id", "=", of.batchId));
  return q.orderBy("id").limit(limit).execute();
}

/**
 * A contact's latest `limit` events, newest first: its contact-level events (suppression
 * lifted, unsubscribed by the API) and the events of its sends.
 */
export async function contactEvents(
  db: Kysely<Database>,
  accountId: string,
  contactId: string,
  limit: number,
): Promise<EventRow[]> {
  // Two index walks (email_events_contact; sends_contact + email_events_send), each cut at
  // `limit`, merged: an OR over both would scan the account's whole history.
  const r = await sql<EventRow>`
    select * from (
      (select id, send_id, contact_id, type, occurred_at, data from email_events
       where contact_id = ${contactId} and account_id = ${accountId}
       order by id desc limit ${limit})
      union all
      (select e.id, e.send_id, e.contact_id, e.type, e.occurred_at, e.data from email_events e
       where e.send_id in (select s.id from sends s where s.contact_id = ${contactId})
         and e.account_id = ${accountId} and e.contact_id is distinct from ${contactId}
       order by e.id desc limit ${limit})
    ) x order by id desc limit ${limit}`.execute(db);
  return r.rows;
}

/** The tracked links of a send (null before delivery), for the click redirect. */
export async function findSendLinks(db: Kysely<Database>, sendId: string): Promise<string[] | null> {
  const row = await db.selectFrom("sends").select("links").where("id", "=", sendId).executeTakeFirst();
  return row?.links ?? null;
}
