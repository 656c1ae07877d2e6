// Webhook deliveries queued in groups, ahead of deliveries: the email_events trigger
// (migration 0010) now gives each group of up to DISPATCH_GROUP deliveries of one statement
// one dispatch_webhook job (payload `{deliveryIds}`, priority -1) instead of a job each.
// Measured in the bench's webhooks scenario (20,000 sends, 60,000 deliveries): see the commit.
import { type Kysely, sql } from "kysely";
import { ONE_JOB_EACH, queueWebhooksFunction } from "./0010_webhooks.ts";

/** Deliveries per job; webhooks/jobs.ts posts a job's deliveries a few at a time. */
const DISPATCH_GROUP = 50;

/**
 * One job per group of DISPATCH_GROUP new deliveries, at priority -1, with `maxAttempts` tries
 * (migration 0012 raised them), in graphile-worker's `schema` (migration 0020 moved them).
 */
export const groupedJobs = (maxAttempts: number, schema = "graphile_worker") => `
      -- One job per DISPATCH_GROUP deliveries: a job per delivery spent the worker's slots and
      -- two job-queue round trips on each POST. Retries and redeliveries get a job of their own.
      -- Priority -1: ahead of a backlog of deliveries queued earlier (jobs run by priority, then
      -- run_at), or an event's webhook waits for the whole backlog to drain.
      perform ${schema}.add_jobs(array(
        select ('dispatch_webhook', json_build_object('deliveryIds', array_agg(u.id::text)), null, null,
          ${maxAttempts}::smallint, null, -1, null)::${schema}.job_spec
        from unnest(ids) with ordinality as u(id, n)
        group by (u.n - 1) / ${DISPATCH_GROUP}));`;

// deno-lint-ignore no-explicit-any
export async function up(db: Kysely<any>): Promise<void> {
  await sql.raw(queueWebhooksFunction(groupedJobs(3))).execute(db);
}

// deno-lint-ignore no-explicit-any
export async function down(db: Kysely<any>): Promise<void> {
  await sql.raw(queueWebhooksFunction(ONE_JOB_EACH)).execute(db);
}
