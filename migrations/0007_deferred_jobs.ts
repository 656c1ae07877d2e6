// Sends scheduled far ahead wait without a graphile-worker job until their time is near:
// every job fetch scans all available jobs that are not yet due (graphile-worker's index
// orders by priority, then run_at), so thousands of future jobs made each fetch cost
// milliseconds of database time.
import { type Kysely, sql } from "kysely";

// deno-lint-ignore no-explicit-any
export async function up(db: Kysely<any>): Promise<void> {
  await db.schema.alterTable("sends")
    .addColumn("job_deferred", "boolean", (c) => c.notNull().defaultTo(false))
    .execute();
  await sql`create index sends_job_deferred on sends (scheduled_at) where job_deferred`.execute(db);
}

// deno-lint-ignore no-explicit-any
export async function down(db: Kysely<any>): Promise<void> {
  await sql`drop index if exists sends_job_deferred`.execute(db);
  await db.schema.alterTable("sends").dropColumn("job_deferred").execute();
}
