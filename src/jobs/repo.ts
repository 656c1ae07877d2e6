/** SQL for worker liveness: heartbeats of graphile-worker pools and freeing a dead pool's jobs. */
import { type Kysely, sql, type Transaction } from "kysely";
import type { Database } from "../db/tables.ts";
import { JOB_SCHEMAS, MAIN_JOBS } from "./schemas.ts";

/** Records that these pools are alive now (the first beat inserts). */
export async function beat(db: Kysely<Database>, poolIds: string[]): Promise<void> {
  if (poolIds.length === 0) return;
  await db.insertInto("worker_heartbeats")
    .values(poolIds.map((pool_id) => ({ pool_id })))
    .onConflict((c) => c.column("pool_id").doUpdateSet({ seen_at: sql`now()` }))
    .execute();
}

/** Forgets these pools (a graceful stop: they hold no jobs any more). */
export async function forget(db: Kysely<Database>, poolIds: string[]): Promise<void> {
  if (poolIds.length === 0) return;
  await db.deleteFrom("worker_heartbeats").where("pool_id", "in", poolIds).execute();
}

/**
 * The pools that are dead: a heartbeat older than `deadAfterS` (claimed by deleting it, so
 * two processes reaping at once free each pool once), or a job locked longer than that by
 * a pool with no heartbeat at all (one killed before its first beat landed).
 */
export async function claimDeadPools(trx: Transaction<Database>, deadAfterS: number): Promise<string[]> {
  const r = await sql<{ pool_id: string }>`
    with stale as (
      delete from worker_heartbeats where seen_at < now() - make_interval(secs => ${deadAfterS})
      returning pool_id),
    jobs as (${
    sql.join(JOB_SCHEMAS.map((s) => sql`select locked_by, locked_at from ${sql.id(s, "jobs")}`), sql` union all `)
  }),
    orphans as (
      select distinct j.locked_by as pool_id from jobs j
      where j.locked_by is not null and j.locked_at < now() - make_interval(secs => ${deadAfterS})
        and not exists (select 1 from worker_heartbeats h where h.pool_id = j.locked_by))
    select pool_id from stale union select pool_id from orphans`.execute(trx);
  return r.rows.map((row) => row.pool_id);
}

/**
 * Frees the jobs these pools had locked: the sends their deliveries had claimed go back
 * from `sending` to `queued` (deliver_send takes both), then graphile-worker's public
 * `force_unlock_workers` makes the jobs available to any worker's next fetch.
 */
export async function unlockPools(trx: Transaction<Database>, poolIds: string[]): Promise<void> {
  // The dead pools' claimed sends, back to waiting (a delivery job's key is `send:<id>`).
  await sql`
    update sends s set status = 'queued', updated_at = now()
    from ${sql.id(MAIN_JOBS, "jobs")} j
    where j.locked_by = any(${poolIds}::text[]) and j.task_identifier = 'deliver_send'
      and j.key like 'send:%' and s.id = substr(j.key, 6)::uuid and s.status = 'sending'`.execute(trx);
  // Their jobs and job queues, unlocked.
  for (const schema of JOB_SCHEMAS) {
    await sql`select ${sql.id(schema, "force_unlock_workers")}(${poolIds}::text[])`.execute(trx);
  }
}
