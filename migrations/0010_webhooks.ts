// Outbound webhooks (API.md "Outbound webhooks"): endpoints per account, one delivery per
// (event, subscribed endpoint), every attempt kept.
//
// Deliveries are queued by the database itself: a statement trigger on email_events turns the
// rows one statement inserted into deliveries for the subscribed endpoints, with their
// dispatch_webhook jobs, in the transaction that records the events. So every event becomes a
// delivery whichever process or code path records it, set-wise, and a rolled-back event
// queues nothing.
import { type Kysely, sql } from "kysely";

// Millisecond precision, like every created_at (keyset cursors over (created_at, id)).
const nowMs = sql`date_trunc('milliseconds', now())`;

/** The trigger function's statement that queues the jobs of the new deliveries (`ids`): one job each. */
export const ONE_JOB_EACH = `      perform graphile_worker.add_jobs(array(
        select ('dispatch_webhook', json_build_object('deliveryId', u.id::text), null, null,
          3::smallint, 'webhook:' || u.id::text, null, null)::graphile_worker.job_spec
        from unnest(ids) as u(id)));`;

/**
 * The trigger function: the rows one statement inserted into email_events become deliveries
 * for the subscribed endpoints, then `queueJobs` queues their jobs (migration 0011 changes
 * only that). The body of each delivery is built here once (API.md): retries send the same
 * bytes. `build` makes its objects (migration 0024 builds json, not jsonb).
 */
export function queueWebhooksFunction(queueJobs: string, build = "jsonb_build_object"): string {
  return `
    create or replace function pp_queue_webhooks() returns trigger language plpgsql as $$
    declare
      ids uuid[];
    begin
      -- Most deployments have few endpoints: nothing to do costs one index probe.
      if not exists (select 1 from webhook_endpoints where enabled) then return null; end if;
      with d as (
        insert into webhook_deliveries (endpoint_id, account_id, event_id, event_type, payload)
        select w.id, ev.account_id, ev.id, 'email.' || ev.type,
          ${build}(
            'type', 'email.' || ev.type,
            'timestamp', to_char(ev.occurred_at at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"'),
            'data', ${build}(
              'sendId', s.id, 'batchId', s.batch_id, 'to', s.to_email, 'tags', s.tags,
              'event', ${build}(
                'type', ev.type,
                'occurredAt', to_char(ev.occurred_at at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"'),
                'data', ev.data)))
        from new_events ev
        join webhook_endpoints w on w.account_id = ev.account_id and w.enabled
          and (cardinality(w.event_types) = 0 or ev.type = any(w.event_types))
        join sends s on s.id = ev.send_id
        returning id
      )
      select array_agg(id) into ids from d;
      if ids is null then return null; end if;
${queueJobs}
      return null;
    end $$`;
}

// deno-lint-ignore no-explicit-any
export async function up(db: Kysely<any>): Promise<void> {
  await db.schema.createTable("webhook_endpoints")
    .addColumn("id", "uuid", (c) => c.primaryKey().defaultTo(sql`gen_random_uuid()`))
    .addColumn("account_id", "uuid", (c) => c.notNull().references("accounts.id").onDelete("cascade"))
    .addColumn("url", "text", (c) => c.notNull())
    .addColumn("description", "text")
    // Email event types without the `email.` prefix (EVENT_TYPES); empty: every type.
    .addColumn("event_types", sql`text[]`, (c) => c.notNull().defaultTo(sql`'{}'`))
    .addColumn("enabled", "boolean", (c) => c.notNull().defaultTo(true))
    .addColumn("disabled_reason", "text")
    // `whsec_…`, sealed with PP_SECRET like DKIM keys (crypto.ts).
    .addColumn("secret_enc", "text", (c) => c.notNull())
    // The secret before the last rotation, still signed with for a day so receivers can switch.
    .addColumn("previous_secret_enc", "text")
    .addColumn("rotated_at", "timestamptz")
    // When the current run of failed attempts began (null after a success): 5 days disable it.
    .addColumn("failing_since", "timestamptz")
    .addColumn("created_at", "timestamptz", (c) => c.notNull().defaultTo(nowMs))
    .addColumn("updated_at", "timestamptz", (c) => c.notNull().defaultTo(sql`now()`))
    .execute();
  await db.schema.createIndex("webhook_endpoints_account").on("webhook_endpoints").column("account_id").execute();

  await db.schema.createTable("webhook_deliveries")
    .addColumn("id", "uuid", (c) => c.primaryKey().defaultTo(sql`gen_random_uuid()`))
    .addColumn("endpoint_id", "uuid", (c) => c.notNull().references("webhook_endpoints.id").onDelete("cascade"))
    .addColumn("account_id", "uuid", (c) => c.notNull())
    .addColumn("event_id", "bigint")
    // `email.delivered`, or `webhook.test`.
    .addColumn("event_type", "text", (c) => c.notNull())
    .addColumn("payload", "jsonb", (c) => c.notNull())
    // pending | succeeded | failed
    .addColumn("status", "text", (c) => c.notNull().defaultTo("pending"))
    .addColumn("attempts", "integer", (c) => c.notNull().defaultTo(0))
    .addColumn("response_status", "integer")
    .addColumn("last_attempt_at", "timestamptz")
    .addColumn("next_attempt_at", "timestamptz", (c) => c.defaultTo(sql`now()`))
    .addColumn("created_at", "timestamptz", (c) => c.notNull().defaultTo(nowMs))
    .execute();
  await db.schema.createIndex("webhook_deliveries_endpoint").on("webhook_deliveries")
    .columns(["endpoint_id", "created_at", "id"]).execute();
  await db.schema.createIndex("webhook_deliveries_pending").on("webhook_deliveries").column("next_attempt_at")
    .where(sql.ref("status"), "=", "pending").execute();

  await db.schema.createTable("webhook_attempts")
    .addColumn("id", "bigserial", (c) => c.primaryKey())
    .addColumn("delivery_id", "uuid", (c) => c.notNull().references("webhook_deliveries.id").onDelete("cascade"))
    .addColumn("attempted_at", "timestamptz", (c) => c.notNull().defaultTo(sql`now()`))
    // null when no HTTP answer came (timeout, refused, address not allowed).
    .addColumn("response_status", "integer")
    .addColumn("response_body", "text")
    .addColumn("error", "text")
    .addColumn("duration_ms", "integer", (c) => c.notNull())
    .execute();
  await db.schema.createIndex("webhook_attempts_delivery").on("webhook_attempts").columns(["delivery_id", "id"])
    .execute();

  await sql.raw(queueWebhooksFunction(ONE_JOB_EACH)).execute(db);
  await sql`create trigger email_events_webhooks after insert on email_events
    referencing new table as new_events for each statement execute function pp_queue_webhooks()`.execute(db);
}

// deno-lint-ignore no-explicit-any
export async function down(db: Kysely<any>): Promise<void> {
  await sql`drop trigger if exists email_events_webhooks on email_events`.execute(db);
  await sql`drop function if exists pp_queue_webhooks()`.execute(db);
  for (const t of ["webhook_attempts", "webhook_deliveries", "webhook_endpoints"]) {
    await db.schema.dropTable(t).ifExists().execute();
  }
}
