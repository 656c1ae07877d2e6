// Webhook deliveries queued in groups, ahead of deliveries: the email_events trigger
// (migration 0010) now gives each group of up to DISPATCH_GROUP deliveries of one statement
// one dispatch_webhook job (payload `{deliveryIds}`, priority -1) instead of a job each. Measured in the bench's webhooks scenario
// (20,000 sends, 60,000 deliveries): see the commit.
import { type Kysely, sql } from "kysely";

/** Deliveries per job; webhooks/jobs.ts posts a job's deliveries a few at a time. */
const DISPATCH_GROUP = 50;

// deno-lint-ignore no-explicit-any
export async function up(db: Kysely<any>): Promise<void> {
  await sql.raw(`
    create or replace function pp_queue_webhooks() returns trigger language plpgsql as $$
    declare
      ids uuid[];
    begin
      -- Most deployments have few endpoints: nothing to do costs one index probe.
      if not exists (select 1 from webhook_endpoints where enabled) then return null; end if;
      with d as (
        insert into webhook_deliveries (endpoint_id, account_id, event_id, event_type, payload)
        select w.id, ev.account_id, ev.id, 'email.' || ev.type,
          jsonb_build_object(
            'type', 'email.' || ev.type,
            'timestamp', to_char(ev.occurred_at at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"'),
            'data', jsonb_build_object(
              'sendId', s.id, 'batchId', s.batch_id, 'to', s.to_email, 'tags', s.tags,
              'event', jsonb_build_object(
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
      -- One job per DISPATCH_GROUP deliveries: a job per delivery spent the worker's slots and
      -- two job-queue round trips on each POST. Retries and redeliveries get a job of their own.
      -- Priority -1: ahead of a backlog of deliveries queued earlier (jobs run by priority, then
      -- run_at), or an event's webhook waits for the whole backlog to drain.
      perform graphile_worker.add_jobs(array(
        select ('dispatch_webhook', json_build_object('deliveryIds', array_agg(u.id::text)), null, null,
          3::smallint, null, -1, null)::graphile_worker.job_spec
        from unnest(ids) with ordinality as u(id, n)
        group by (u.n - 1) / ${DISPATCH_GROUP}));
      return null;
    end $$
  `).execute(db);
}

// deno-lint-ignore no-explicit-any
export async function down(db: Kysely<any>): Promise<void> {
  await sql`
    create or replace function pp_queue_webhooks() returns trigger language plpgsql as $$
    declare
      ids uuid[];
    begin
      -- Most deployments have few endpoints: nothing to do costs one index probe.
      if not exists (select 1 from webhook_endpoints where enabled) then return null; end if;
      with d as (
        insert into webhook_deliveries (endpoint_id, account_id, event_id, event_type, payload)
        select w.id, ev.account_id, ev.id, 'email.' || ev.type,
          jsonb_build_object(
            'type', 'email.' || ev.type,
            'timestamp', to_char(ev.occurred_at at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"'),
            'data', jsonb_build_object(
              'sendId', s.id, 'batchId', s.batch_id, 'to', s.to_email, 'tags', s.tags,
              'event', jsonb_build_object(
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
      perform graphile_worker.add_jobs(array(
        select ('dispatch_webhook', json_build_object('deliveryId', u.id::text), null, null,
          3::smallint, 'webhook:' || u.id::text, null, null)::graphile_worker.job_spec
        from unnest(ids) as u(id)));
      return null;
    end $$`.execute(db);
}
