// A dispatch_webhook job is tried 10 times (was 3). A job fails only when the database does
// mid-attempt (a receiver's failure is recorded and retried on API.md's schedule, not
// thrown), and graphile-worker's backoff after 3 tries was ~10 s: a longer Postgres outage
// left the job spent and its deliveries pending with no job. 10 tries back off for ~3 h.
import { type Kysely, sql } from "kysely";
import { queueWebhooksFunction } from "./0010_webhooks.ts";
import { groupedJobs } from "./0011_webhook_groups.ts";

// deno-lint-ignore no-explicit-any
export async function up(db: Kysely<any>): Promise<void> {
  await sql.raw(queueWebhooksFunction(groupedJobs(10))).execute(db);
}

// deno-lint-ignore no-explicit-any
export async function down(db: Kysely<any>): Promise<void> {
  await sql.raw(queueWebhooksFunction(groupedJobs(3))).execute(db);
}
