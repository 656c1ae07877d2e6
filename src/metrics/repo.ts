/** SQL of the scrape-time metrics: graphile-worker's queues, read through their public `jobs` views. */
import { type Kysely, sql } from "kysely";
import type { Database } from "../db/tables.ts";
import { JOB_SCHEMAS } from "../jobs/schemas.ts";

/** One task's jobs, by state (see metrics.ts jobsQueued and its neighbours). */
export interface TaskQueue {
  task: string;
  due: number;
  scheduled: number;
  running: number;
  failed: number;
  /** Seconds the oldest due, unlocked job with attempts left has waited past its run_at; 0 when none. */
  oldestDueS: number;
}

/**
 * Every task's jobs by state, in one pass over the queue (one row per task): what
 * graphile-worker holds is the backlog itself, so this reads as many rows as are queued
 * and nothing else of the database.
 */
export async function queueByTask(db: Kysely<Database>): Promise<TaskQueue[]> {
  // Per task: waiting (due or ahead), locked, out of attempts, and the oldest due's wait.
  const r = await sql<
    { task: string; due: string; scheduled: string; running: string; failed: string; oldest_due_s: number | null }
  >`
    select task_identifier as task,
      count(*) filter (where locked_at is null and attempts < max_attempts and run_at <= now()) as due,
      count(*) filter (where locked_at is null and attempts < max_attempts and run_at > now()) as scheduled,
      count(*) filter (where locked_at is not null) as running,
      count(*) filter (where locked_at is null and attempts >= max_attempts) as failed,
      extract(epoch from now() - min(run_at) filter (
        where locked_at is null and attempts < max_attempts and run_at <= now()))::float8 as oldest_due_s
    from (${
    sql.join(
      JOB_SCHEMAS.map((s) =>
        sql`select task_identifier, locked_at, attempts, max_attempts, run_at from ${sql.id(s, "jobs")}`
      ),
      sql` union all `,
    )
  }) as jobs
    group by task_identifier`.execute(db);
  return r.rows.map((row) => ({
    task: row.task,
    due: Number(row.due),
    scheduled: Number(row.scheduled),
    running: Number(row.running),
    failed: Number(row.failed),
    oldestDueS: row.oldest_due_s ?? 0,
  }));
}
