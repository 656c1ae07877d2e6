// Webhook deliveries are queued in a table of their own, `webhook_queue`, and claimed from
// it hundreds at a time by each worker's dispatcher (src/webhooks/jobs.ts), instead of one
// graphile-worker job per group of up to 50 (migrations 0011, 0020). A job cost the event's
// statement an `add_jobs` call (1.1 ms in pg_stat_statements) and its runner a fetch and a
// completion, for ~16 deliveries in the drain; a queue row is one small insert, and one claim
// statement takes as many as the dispatcher has room for.
//
// A row is a pending delivery, due at `run_at`. A claim leases it (`lease_until`: the
// claimer's POST timeout and then some), so a delivery whose claimer died is claimed again
// when its lease runs out. Recording an attempt deletes the row, or sets `run_at` to the
// retry's time and ends the lease. A claim changes no indexed column: the update is HOT.
// Pending deliveries carried by webhook jobs move here, and those jobs go with the webhook
// queue's graphile-worker schema.
import { type Kysely, sql } from "kysely";
import { queueWebhooksFunction } from "./0010_webhooks.ts";
import { groupedJobs } from "./0011_webhook_groups.ts";

/** The trigger's step after inserting the deliveries (`ids`): one queue row each, due now. */
export const QUEUE_ROWS = `
      insert into webhook_queue (delivery_id) select unnest(ids);`;

// deno-lint-ignore no-explicit-any
export async function up(db: Kysely<any>): Promise<void> {
  await sql`create table webhook_queue (
    delivery_id uuid primary key references webhook_deliveries (id) on delete cascade,
    run_at timestamptz not null default now(),
    lease_until timestamptz
  )`.execute(db);
  await sql`create index webhook_queue_run_at on webhook_queue (run_at)`.execute(db);
  await sql`alter table webhook_queue set (fillfactor = 80)`.execute(db);
  await sql`insert into webhook_queue (delivery_id, run_at)
    select id, coalesce(next_attempt_at, now()) from webhook_deliveries where status = 'pending'`.execute(db);
  // graphile-worker's schemas are installed after these migrations: on a new database
  // neither is there yet.
  await sql`drop schema if exists graphile_worker_webhooks cascade`.execute(db);
  await sql`do $$ begin
    if to_regclass('graphile_worker._private_jobs') is not null then
      delete from graphile_worker._private_jobs
        where task_id in (select id from graphile_worker._private_tasks where identifier = 'dispatch_webhook');
    end if;
  end $$`.execute(db);
  await sql.raw(queueWebhooksFunction(QUEUE_ROWS)).execute(db);
}

// deno-lint-ignore no-explicit-any
export async function down(db: Kysely<any>): Promise<void> {
  // Pending deliveries are left without a job: redeliver them after going back.
  await sql.raw(queueWebhooksFunction(groupedJobs(10, "graphile_worker_webhooks"))).execute(db);
  await sql`drop table webhook_queue`.execute(db);
}
