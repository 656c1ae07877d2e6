/**
 * SQL of retention (retention/service.ts): bounded slices of what is older than the window.
 * Every function is one statement; called outside a transaction, each is its own short
 * transaction. Sends and batches are walked per account, on the (account_id, created_at, …)
 * indexes the listings already use, so retention adds no index to the send path.
 */
import { type Kysely, sql } from "kysely";
import type { Database, SendStatus } from "../db/tables.ts";

/** The statuses after which nothing more is done for a send (a late bounce or open may still be recorded). */
export const FINISHED: readonly SendStatus[] = ["sent", "delivered", "bounced", "failed", "cancelled", "suppressed"];

/** A keyset position in an account's sends by (created_at, id); created_at as Postgres' text, exact to the microsecond. */
export interface SendCursor {
  at: string;
  id: string;
}

/** The start of the window: now() (the database's clock) minus `days`. */
export async function cutoffFor(db: Kysely<Database>, days: number): Promise<Date> {
  // Purpose: one cutoff for a whole run, on the clock the rows were stamped with.
  const r = await sql<{ cutoff: Date }>`select now() - make_interval(days => ${days}) as cutoff`.execute(db);
  return r.rows[0].cutoff;
}

/** Every id of a table retention walks one row at a time: accounts (their sends and batches), webhook endpoints. */
export async function allIds(db: Kysely<Database>, table: "accounts" | "webhook_endpoints"): Promise<string[]> {
  // Purpose: the rows whose data is looked at, one walk each.
  const rows = await db.selectFrom(table).select("id").orderBy("id").execute();
  return rows.map((r) => r.id);
}

/**
 * The next at most `limit` sends of an account after `after` that finished before the
 * cutoff: created before it, in a FINISHED status, and last changed before it (a send held
 * for weeks and delivered yesterday stays). Reads only (index sends_account_created).
 */
export async function finishedSendsBefore(
  db: Kysely<Database>,
  accountId: string,
  cutoff: Date,
  after: SendCursor | null,
  limit: number,
): Promise<{ ids: string[]; next: SendCursor | null }> {
  const from = after ? sql`and (created_at, id) > (${after.at}::timestamptz, ${after.id}::uuid)` : sql``;
  // Purpose: the next slice of an account's sends that retention may delete, in index order.
  const r = await sql<{ id: string; at: string }>`
    select id, created_at::text as at from sends
    where account_id = ${accountId} and created_at < ${cutoff} ${from}
      and status = any(${FINISHED}::text[]) and updated_at < ${cutoff}
    order by created_at, id limit ${limit}`.execute(db);
  const last = r.rows.at(-1);
  return { ids: r.rows.map((x) => x.id), next: last ? { at: last.at, id: last.id } : null };
}

/** Deletes at most `limit` events of these sends (index email_events_send); returns how many. */
export async function deleteEventsOfSends(db: Kysely<Database>, sendIds: string[], limit: number): Promise<number> {
  // Purpose: one bounded slice of the events of sends about to be deleted, so that deleting
  // the sends cascades to (almost) nothing. One index lookup per send (lateral): with
  // `send_id = any(…)` the planner may pick a sequential scan that reads the whole table
  // when few of these events are left.
  const r = await sql`
    delete from email_events where id = any(array(
      select e.id from unnest(${sendIds}::uuid[]) s(id)
      cross join lateral (select id from email_events where send_id = s.id for update skip locked) e
      limit ${limit}))`.execute(db);
  return Number(r.numAffectedRows ?? 0);
}

/**
 * Deletes these sends if still FINISHED, skipping rows another transaction holds (a late
 * event being recorded: the next run takes them); events that arrived since the events
 * were deleted go with them (on delete cascade). Returns the deleted ids.
 */
export async function deleteSends(db: Kysely<Database>, sendIds: string[]): Promise<string[]> {
  // Purpose: delete one slice (≤ the slice picked by finishedSendsBefore) of finished sends.
  const r = await sql<{ id: string }>`
    delete from sends where id = any(array(
      select id from sends where id = any(${sendIds}::uuid[]) and status = any(${FINISHED}::text[])
      for update skip locked))
    returning id`.execute(db);
  return r.rows.map((x) => x.id);
}

/**
 * Deletes at most `limit` of an account's batches created before the cutoff that are no
 * longer expanding and have no send left (their sends went before them); returns how many.
 * A batch's `count` went with it: monthly usage (account_usage) is what stays.
 */
export async function deleteEmptyBatches(
  db: Kysely<Database>,
  accountId: string,
  cutoff: Date,
  limit: number,
): Promise<number> {
  // Purpose: one bounded slice of old, finished, empty batches (indexes batches_account, sends_batch_status).
  const r = await sql`
    delete from batches where id = any(array(
      select b.id from batches b
      where b.account_id = ${accountId} and b.created_at < ${cutoff} and b.status <> 'expanding'
        and not exists (select 1 from sends s where s.batch_id = b.id)
      order by b.created_at limit ${limit} for update skip locked))`.execute(db);
  return Number(r.numAffectedRows ?? 0);
}

/**
 * Deletes at most `limit` of an endpoint's webhook deliveries created before the cutoff that
 * are over (succeeded or failed), with their attempts (on delete cascade); returns how many.
 * A pending one stays, however old: its next attempt is due.
 */
export async function deleteOldWebhookDeliveries(
  db: Kysely<Database>,
  endpointId: string,
  cutoff: Date,
  limit: number,
): Promise<number> {
  // Purpose: one bounded slice of an endpoint's oldest finished deliveries (index webhook_deliveries_endpoint).
  const r = await sql`
    delete from webhook_deliveries where id = any(array(
      select d.id from webhook_deliveries d
      where d.endpoint_id = ${endpointId} and d.created_at < ${cutoff} and d.status <> 'pending'
      order by d.created_at limit ${limit} for update skip locked))`.execute(db);
  return Number(r.numAffectedRows ?? 0);
}

/**
 * Deletes an account's reputation rollup hours (migration 0021) before the cutoff; returns
 * how many. The cutoff is at least 7 days back, before every window's first hour.
 */
export async function deleteReputationHoursBefore(
  db: Kysely<Database>,
  accountId: string,
  cutoff: Date,
): Promise<number> {
  // Purpose: a range of the rollup's primary key (account_id, hour); ~24 rows a day an account.
  const r = await sql`delete from reputation_hours where account_id = ${accountId} and hour < ${cutoff}`.execute(db);
  return Number(r.numAffectedRows ?? 0);
}
