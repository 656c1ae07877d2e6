// Each worker process's graphile-worker pools say they are alive every few seconds; a pool
// that stops (kill -9, a lost machine) leaves its locked jobs to the others within 30 s
// instead of graphile-worker's own 4 hours (src/jobs/heartbeat.ts).
import { type Kysely, sql } from "kysely";

// deno-lint-ignore no-explicit-any
export async function up(db: Kysely<any>): Promise<void> {
  await db.schema.createTable("worker_heartbeats")
    .addColumn("pool_id", "text", (c) => c.primaryKey())
    .addColumn("started_at", "timestamptz", (c) => c.notNull().defaultTo(sql`now()`))
    .addColumn("seen_at", "timestamptz", (c) => c.notNull().defaultTo(sql`now()`))
    .execute();
}

// deno-lint-ignore no-explicit-any
export async function down(db: Kysely<any>): Promise<void> {
  await db.schema.dropTable("worker_heartbeats").ifExists().execute();
}
