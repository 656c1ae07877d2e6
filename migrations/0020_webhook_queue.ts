// New webhook deliveries' jobs go to a graphile-worker schema of their own,
// `graphile_worker_webhooks` (src/jobs/schemas.ts says why), which db/migrate.ts installs
// after these migrations; the trigger's function is bound to it when it first runs. Jobs
// queued before stay in `graphile_worker`, where the main runner still takes them.
import { type Kysely, sql } from "kysely";
import { queueWebhooksFunction } from "./0010_webhooks.ts";
import { groupedJobs } from "./0011_webhook_groups.ts";

// deno-lint-ignore no-explicit-any
export async function up(db: Kysely<any>): Promise<void> {
  await sql.raw(queueWebhooksFunction(groupedJobs(10, "graphile_worker_webhooks"))).execute(db);
}

// deno-lint-ignore no-explicit-any
export async function down(db: Kysely<any>): Promise<void> {
  await sql.raw(queueWebhooksFunction(groupedJobs(10))).execute(db);
}
