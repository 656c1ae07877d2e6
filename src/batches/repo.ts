/** SQL for batches. */
import { type Insertable, type Kysely, sql } from "kysely";
import type { BatchesTable, Database, SegmentRule, SendStatus } from "../db/tables.ts";
import { segmentWhere } from "../segments/repo.ts";

/** Inserts a batch row. */
export function insertBatch(db: Kysely<Database>, row: Insertable<BatchesTable>) {
  return db.insertInto("batches").values(row).returningAll().executeTakeFirstOrThrow();
}

/** One of an account's batches. */
export function findBatch(db: Kysely<Database>, accountId: string, id: string) {
  return db.selectFrom("batches").selectAll().where("id", "=", id).where("account_id", "=", accountId)
    .executeTakeFirst();
}

/** A batch by id, locked for the caller's transaction (the expansion job). */
export function lockBatch(db: Kysely<Database>, id: string) {
  return db.selectFrom("batches").selectAll().where("id", "=", id).forUpdate().executeTakeFirst();
}

/** Updates a batch. */
export function updateBatch(db: Kysely<Database>, id: string, set: Partial<Insertable<BatchesTable>>) {
  return db.updateTable("batches").set({ ...set, updated_at: sql`now()` }).where("id", "=", id).execute();
}

/** Adds `n` sends to a batch's count and moves its expansion cursor. */
export function advanceBatch(db: Kysely<Database>, id: string, n: number, cursor: string) {
  return db.updateTable("batches")
    .set({ count: sql`count + ${n}`, expand_cursor: cursor, updated_at: sql`now()` })
    .where("id", "=", id).execute();
}

/**
 * The next page of a segment expansion: the account's subscribed contacts that match the
 * rules, after the batch's cursor in id order, that have no send of this batch yet (a page
 * repeated from an earlier cursor then neither sends twice nor reserves quota for them).
 */
export function segmentPage(
  db: Kysely<Database>,
  batch: { id: string; account_id: string; expand_cursor: string | null },
  rules: readonly SegmentRule[],
  limit: number,
) {
  return db.selectFrom("contacts").select(["id", "email"])
    .where("account_id", "=", batch.account_id)
    .where("status", "=", "subscribed")
    .where(segmentWhere(rules))
    .$if(batch.expand_cursor !== null, (q) => q.where("id", ">", batch.expand_cursor!))
    .where(({ not, exists, selectFrom }) =>
      not(exists(
        selectFrom("sends").select("sends.id").where("sends.batch_id", "=", batch.id)
          .whereRef("sends.contact_id", "=", "contacts.id"),
      ))
    )
    .orderBy("id").limit(limit).execute();
}

/** How many of a batch's sends are in each status. */
export async function countByStatus(db: Kysely<Database>, batchId: string) {
  const rows = await db.selectFrom("sends").select(["status", (eb) => eb.fn.countAll<string>().as("n")])
    .where("batch_id", "=", batchId).groupBy("status").execute();
  return rows.map((r) => ({ status: r.status as SendStatus, count: Number(r.n) }));
}

/** Cancels every still-pending send of a batch in one statement; returns their ids and ages. */
export function cancelPendingOfBatch(db: Kysely<Database>, accountId: string, batchId: string) {
  return db.updateTable("sends").set({ status: "cancelled", updated_at: sql`now()` })
    .where("batch_id", "=", batchId).where("account_id", "=", accountId)
    .where("status", "in", ["scheduled", "queued"])
    .returning(["id", "created_at"]).execute();
}

/**
 * Queues (or re-queues) a segment expansion. Its job key `batch:<id>` keeps one job per
 * batch; `runAt` null means now.
 */
export async function queueExpansion(db: Kysely<Database>, batchId: string, runAt: Date | null) {
  await sql`select graphile_worker.add_job('expand_segment', json_build_object('batchId', ${batchId}::text),
    run_at := ${runAt}::timestamptz, job_key := ${"batch:" + batchId})`.execute(db);
}
