/** SQL for sends and their jobs. */
import { type Insertable, type Kysely, type Selectable, sql } from "kysely";
import type { Database, SendsTable, SendStatus } from "../db/tables.ts";
import type { Cursor } from "../pagination.ts";

/** A stored send row. */
export type SendRow = Selectable<SendsTable>;

/** Statuses from which a send may still be cancelled or delivered. */
export const PENDING: SendStatus[] = ["scheduled", "queued"];

/** The graphile-worker job key of a send's delivery: cancelling removes it by this key. */
export function deliveryJobKey(sendId: string): string {
  return `send:${sendId}`;
}

/** Inserts a send row. */
export function insertSend(db: Kysely<Database>, row: Insertable<SendsTable>) {
  return db.insertInto("sends").values(row).returningAll().executeTakeFirstOrThrow();
}

/**
 * Queues the delivery job in the caller's transaction, so the send and its job commit or
 * roll back together. `runAt` null means now.
 */
export async function queueDelivery(db: Kysely<Database>, sendId: string, runAt: Date | null, maxAttempts: number) {
  await sql`select graphile_worker.add_job(
    'deliver_send', json_build_object('sendId', ${sendId}::text),
    run_at := ${runAt}::timestamptz, max_attempts := ${maxAttempts}::int, job_key := ${deliveryJobKey(sendId)})`
    .execute(db);
}

/** Removes a send's pending job (a job already running is left; it sees the new status). */
export async function removeDelivery(db: Kysely<Database>, sendId: string) {
  await sql`select graphile_worker.remove_job(${deliveryJobKey(sendId)})`.execute(db);
}

/** One of an account's sends. */
export function findSend(db: Kysely<Database>, accountId: string, id: string) {
  return db.selectFrom("sends").selectAll().where("id", "=", id).where("account_id", "=", accountId).executeTakeFirst();
}

/** One send by id, any account (the worker). */
export function findSendById(db: Kysely<Database>, id: string) {
  return db.selectFrom("sends").selectAll().where("id", "=", id).executeTakeFirst();
}

/** A page of an account's sends, newest first, filtered by status and batch. */
export function listSends(
  db: Kysely<Database>,
  accountId: string,
  opts: { limit: number; status?: SendStatus | null; batchId?: string | null; after?: Cursor },
) {
  let q = db.selectFrom("sends").selectAll().where("account_id", "=", accountId);
  if (opts.status) q = q.where("status", "=", opts.status);
  if (opts.batchId) q = q.where("batch_id", "=", opts.batchId);
  if (opts.after) q = q.where(sql<boolean>`(created_at, id) < (${opts.after.createdAt}, ${opts.after.id}::uuid)`);
  return q.orderBy("created_at", "desc").orderBy("id", "desc").limit(opts.limit).execute();
}

/** Marks a still-pending send cancelled; undefined when it is not pending (or not theirs). */
export function cancelPending(db: Kysely<Database>, accountId: string, id: string) {
  return db.updateTable("sends").set({ status: "cancelled", updated_at: sql`now()` })
    .where("id", "=", id).where("account_id", "=", accountId).where("status", "in", PENDING)
    .returningAll().executeTakeFirst();
}

/**
 * Claims a send for delivery: pending (or `sending` after a crashed attempt) becomes
 * `sending`. Undefined when it is already past that, so a re-run job mails nothing.
 */
export function claimForDelivery(db: Kysely<Database>, id: string) {
  return db.updateTable("sends").set({ status: "sending", updated_at: sql`now()` })
    .where("id", "=", id).where("status", "in", [...PENDING, "sending"])
    .returningAll().executeTakeFirst();
}

/** Updates a send's delivery outcome. */
export function updateSend(db: Kysely<Database>, id: string, set: Partial<Insertable<SendsTable>>) {
  return db.updateTable("sends").set({ ...set, updated_at: sql`now()` }).where("id", "=", id).execute();
}
