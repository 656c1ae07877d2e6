/**
 * SQL for webhook endpoints, their deliveries (made by the email_events trigger, migration
 * 0010), the queue of pending ones (`webhook_queue`, migration 0023) and their attempts.
 */
import { type Insertable, type Kysely, type Selectable, sql, type Updateable } from "kysely";
import type {
  Database,
  WebhookAttemptsTable,
  WebhookDeliveriesTable,
  WebhookDeliveryStatus,
  WebhookEndpointsTable,
} from "../db/tables.ts";
import type { Cursor } from "../pagination.ts";

export type EndpointRow = Selectable<WebhookEndpointsTable>;
export type DeliveryRow = Selectable<WebhookDeliveriesTable>;
export type AttemptRow = Selectable<WebhookAttemptsTable>;

/** How long an endpoint may fail without a success before it is disabled. */
export const DISABLE_AFTER = "5 days";

/**
 * Announced when an endpoint is added or enabled: a process whose dispatcher runs on demand
 * (role `all`, server.ts) starts it now rather than at its next check.
 */
export const WEBHOOK_WORK_CHANNEL = "pp_webhook_work";

async function announceWork(db: Kysely<Database>): Promise<void> {
  await sql`select pg_notify(${WEBHOOK_WORK_CHANNEL}, '')`.execute(db);
}

/** Adds an endpoint, and announces it (WEBHOOK_WORK_CHANNEL). */
export async function insertEndpoint(db: Kysely<Database>, row: Insertable<WebhookEndpointsTable>) {
  const endpoint = await db.insertInto("webhook_endpoints").values(row).returningAll().executeTakeFirstOrThrow();
  await announceWork(db);
  return endpoint;
}

/** An account's endpoints, oldest first. */
export function listEndpoints(db: Kysely<Database>, accountId: string) {
  return db.selectFrom("webhook_endpoints").selectAll().where("account_id", "=", accountId)
    .orderBy("created_at").orderBy("id").execute();
}

/** One of an account's endpoints. */
export function findEndpoint(db: Kysely<Database>, accountId: string, id: string) {
  return db.selectFrom("webhook_endpoints").selectAll().where("account_id", "=", accountId).where("id", "=", id)
    .executeTakeFirst();
}

/**
 * Changes an endpoint; enabling it again forgets why it was disabled and its run of
 * failures, and is announced (WEBHOOK_WORK_CHANNEL).
 */
export async function updateEndpoint(
  db: Kysely<Database>,
  accountId: string,
  id: string,
  set: Updateable<WebhookEndpointsTable>,
) {
  const reset = set.enabled === true ? { disabled_reason: null, failing_since: null } : {};
  const row = await db.updateTable("webhook_endpoints").set({ ...set, ...reset, updated_at: sql`now()` })
    .where("account_id", "=", accountId).where("id", "=", id).returningAll().executeTakeFirst();
  if (row && set.enabled === true) await announceWork(db);
  return row;
}

/** Deletes an endpoint with its deliveries and attempts; the id, or undefined when unknown. */
export async function deleteEndpoint(db: Kysely<Database>, accountId: string, id: string) {
  const r = await db.deleteFrom("webhook_endpoints").where("account_id", "=", accountId).where("id", "=", id)
    .returning("id").executeTakeFirst();
  return r?.id;
}

/** Replaces the secret; the previous one stays signed with for a day (see jobs.ts). */
export function rotateSecret(db: Kysely<Database>, accountId: string, id: string, secretEnc: string) {
  return db.updateTable("webhook_endpoints")
    .set({
      previous_secret_enc: sql`secret_enc`,
      secret_enc: secretEnc,
      rotated_at: sql`now()`,
      updated_at: sql`now()`,
    })
    .where("account_id", "=", accountId).where("id", "=", id).returningAll().executeTakeFirst();
}

/** Queues a delivery, due now (again, when it is queued already). */
async function enqueue(db: Kysely<Database>, deliveryId: string): Promise<void> {
  await sql`insert into webhook_queue (delivery_id) values (${deliveryId})
    on conflict (delivery_id) do update set run_at = now(), lease_until = null`.execute(db);
}

/** Adds a delivery that no event made (`webhook.test`) and queues it, in one transaction. */
export function queueDelivery(db: Kysely<Database>, row: Insertable<WebhookDeliveriesTable>) {
  return db.transaction().execute(async (trx) => {
    const d = await trx.insertInto("webhook_deliveries").values(row).returningAll().executeTakeFirstOrThrow();
    await enqueue(trx, d.id);
    return d;
  });
}

/** Sends a delivery again now (whatever its status), keeping its id; undefined when not the account's. */
export function redeliver(db: Kysely<Database>, accountId: string, deliveryId: string) {
  return db.transaction().execute(async (trx) => {
    const d = await trx.updateTable("webhook_deliveries").set({ status: "pending", next_attempt_at: sql`now()` })
      .where("account_id", "=", accountId).where("id", "=", deliveryId).returningAll().executeTakeFirst();
    if (d) await enqueue(trx, d.id);
    return d;
  });
}

/** A claimed delivery with what sending it needs of its endpoint. */
export interface DeliveryToDispatch {
  id: string;
  /** This claim's lease (`lease_until` as Postgres writes it), to release it by (release). */
  lease: string;
  endpoint_id: string;
  status: WebhookDeliveryStatus;
  attempts: number;
  /** The payload as stored: sent as it is, not parsed and written again. */
  body: string;
  url: string;
  enabled: boolean;
  secret_enc: string;
  previous_secret_enc: string | null;
  rotated_at: Date | null;
}

/**
 * Claims up to `limit` due deliveries, oldest due first, skipping those another claimer holds
 * or is taking: each is leased for `leaseS` seconds, so a delivery whose claimer died before
 * recording its attempt is claimed again then. Returns them with their endpoints. (The rows
 * are updated by `= any(array(…))`: a join to the subquery was planned as a hash join over a
 * scan of the whole queue, 2–4 ms per claim with 20,000 queued.)
 */
export async function claimDue(db: Kysely<Database>, limit: number, leaseS: number): Promise<DeliveryToDispatch[]> {
  const r = await sql<DeliveryToDispatch>`
    with claimed as (
      update webhook_queue set lease_until = now() + make_interval(secs => ${leaseS})
      where delivery_id = any(array(
        select delivery_id from webhook_queue where run_at <= now() and (lease_until is null or lease_until < now())
        order by run_at limit ${limit} for update skip locked))
      returning delivery_id, lease_until)
    select d.id, c.lease_until::text as lease, d.endpoint_id, d.status, d.attempts, d.payload::text as body,
      e.url, e.enabled, e.secret_enc, e.previous_secret_enc, e.rotated_at
    from claimed c join webhook_deliveries d on d.id = c.delivery_id join webhook_endpoints e on e.id = d.endpoint_id`
    .execute(db);
  return r.rows;
}

/**
 * Ends the leases of claimed deliveries that were not sent: due again at once. Only leases
 * still the caller's (`lease` as claimDue returned it): one that ran out and was claimed by
 * another worker is left to that worker, whose POST may be under way.
 */
export async function release(db: Kysely<Database>, claims: { id: string; lease: string }[]): Promise<void> {
  await sql`update webhook_queue set lease_until = null
    where delivery_id = any(${claims.map((c) => c.id)}::uuid[])
      and lease_until = any(${claims.map((c) => c.lease)}::timestamptz[])`.execute(db);
}

/** What one POST of a delivery got. */
export interface AttemptOutcome {
  deliveryId: string;
  endpointId: string;
  ok: boolean;
  responseStatus: number | null;
  responseBody: string | null;
  error: string | null;
  durationMs: number;
  /** When to try again; null: no more attempts (succeeded, or the schedule is spent). */
  nextAttemptAt: Date | null;
}

/**
 * Records attempts set-wise in one statement: their attempt rows, their deliveries' state,
 * their endpoints' runs of failures (a success ends one; failing for DISABLE_AFTER disables
 * the endpoint and ends the delivery) and their queue rows (a retry's is due at its time,
 * the others' are deleted). Returns, per outcome in order, whether it disabled its endpoint.
 *
 * One statement rather than a transaction of five: each was a round trip and a statement's
 * fixed cost for a few outcomes (the dispatcher's group commit writes as outcomes come).
 * Queue rows are found by `= any(array(…))`, a probe of the primary key each: a join to a
 * CTE or subquery was planned as a hash join over a scan of the whole queue, a cost that grew
 * with the backlog (so with `claimDue`).
 * Every part reads the rows as they were before it (Postgres runs a statement's parts on one
 * snapshot), which is what each part needs: an endpoint is disabled by a run of failures that
 * began in an earlier statement, and a delivery already succeeded stays so.
 */
export async function recordAttempts(db: Kysely<Database>, outcomes: AttemptOutcome[]): Promise<boolean[]> {
  const col = <K extends keyof AttemptOutcome>(k: K) => outcomes.map((o) => o[k]);
  const r = await sql<{ id: string }>`
    with u as (
      select * from unnest(${col("deliveryId")}::uuid[], ${col("endpointId")}::uuid[], ${col("ok")}::bool[],
        ${col("responseStatus")}::int[], ${col("responseBody")}::text[], ${col("error")}::text[],
        ${col("durationMs")}::int[], ${col("nextAttemptAt")}::timestamptz[])
        as u(id, endpoint_id, ok, status, body, error, ms, next_at)),
    ep as (
      select endpoint_id, bool_or(ok) as any_ok, bool_or(not ok) as any_failed from u group by endpoint_id),
    -- Failing since DISABLE_AFTER, and failing again with no success among these outcomes.
    off as (
      select w.id from webhook_endpoints w join ep on ep.endpoint_id = w.id
      where ep.any_failed and not ep.any_ok and w.enabled
        and w.failing_since <= now() - interval '${sql.raw(DISABLE_AFTER)}'),
    -- A success ends a run of failures, a failure starts one (written only when that changes it).
    e as (
      update webhook_endpoints w set
        failing_since = case when not ep.any_failed then null
          when ep.any_ok then now() else coalesce(w.failing_since, now()) end,
        enabled = w.enabled and w.id not in (select id from off),
        disabled_reason = case when w.id in (select id from off) then 'every attempt failed since ' ||
          to_char(w.failing_since at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"') ||
          ' (${sql.raw(DISABLE_AFTER)}); re-enable it with enabled: true' else w.disabled_reason end,
        updated_at = case when w.id in (select id from off) then now() else w.updated_at end
      from ep where w.id = ep.endpoint_id
        and ((w.failing_since is null) = ep.any_failed or (ep.any_failed and ep.any_ok) or w.id in (select id from off))
      returning w.id),
    -- A failure recorded after a success (two claims of one delivery: a lease that ran out, a
    -- redelivery during an attempt) is kept in the log but does not undo the success.
    d as (
      update webhook_deliveries d set
        status = case when u.ok or d.status = 'succeeded' then 'succeeded'
          when u.next_at is not null and u.endpoint_id not in (select id from off) then 'pending' else 'failed' end,
        attempts = d.attempts + 1, response_status = u.status, last_attempt_at = now(),
        next_attempt_at = case when (not u.ok and d.status = 'succeeded') or u.endpoint_id in (select id from off)
          then null else u.next_at end
      from u where d.id = u.id
      returning d.id, d.status, d.next_attempt_at),
    -- Only for deliveries still there (d holds them): attempts have no foreign key (migration 0024).
    a as (
      insert into webhook_attempts (delivery_id, response_status, response_body, error, duration_ms)
      select id, status, body, error, ms from u where id in (select id from d)),
    -- A retry's queue row is upserted: the other claim's outcome may have taken it off the
    -- queue already, and a pending delivery without one would never be tried again.
    q as (
      insert into webhook_queue (delivery_id, run_at)
      select id, next_attempt_at from d where status = 'pending'
      on conflict (delivery_id) do update set run_at = excluded.run_at, lease_until = null),
    gone as (
      delete from webhook_queue where delivery_id = any(array(select id from d where status <> 'pending')))
    select id from off`.execute(db);
  const disabled = new Set(r.rows.map((row) => row.id));
  return outcomes.map((o) => !o.ok && disabled.has(o.endpointId));
}

/** Ends a delivery that can no longer be sent (its endpoint is disabled), and takes it off the queue. */
export function failDelivery(db: Kysely<Database>, id: string): Promise<void> {
  return db.transaction().execute(async (trx) => {
    await trx.updateTable("webhook_deliveries").set({ status: "failed", next_attempt_at: null })
      .where("id", "=", id).where("status", "=", "pending").execute();
    await unqueue(trx, id);
  });
}

/** Takes a delivery off the queue (one that is over already: a redelivery raced its claim). */
export async function unqueue(db: Kysely<Database>, id: string): Promise<void> {
  await db.deleteFrom("webhook_queue").where("delivery_id", "=", id).execute();
}

/** Whether there is anything for a dispatcher to do or soon to do: an enabled endpoint, or a delivery queued. */
export async function hasWebhookWork(db: Kysely<Database>): Promise<boolean> {
  const r = await sql<{ yes: boolean }>`
    select exists (select 1 from webhook_endpoints where enabled) or exists (select 1 from webhook_queue) as yes`
    .execute(db);
  return r.rows[0].yes;
}

/** A page of an endpoint's deliveries, newest first. */
export function listDeliveries(
  db: Kysely<Database>,
  accountId: string,
  endpointId: string,
  opts: { limit: number; after?: Cursor },
) {
  let q = db.selectFrom("webhook_deliveries").selectAll().where("account_id", "=", accountId)
    .where("endpoint_id", "=", endpointId);
  if (opts.after) q = q.where(sql<boolean>`(created_at, id) < (${opts.after.createdAt}, ${opts.after.id}::uuid)`);
  return q.orderBy("created_at", "desc").orderBy("id", "desc").limit(opts.limit).execute();
}

/** The attempts of one delivery, oldest first. */
export function attemptsOf(db: Kysely<Database>, deliveryId: string) {
  return db.selectFrom("webhook_attempts").selectAll().where("delivery_id", "=", deliveryId).orderBy("id").execute();
}

/**
 * Deliveries waiting for an attempt or in one (every row of the queue), and how long the
 * oldest due one has been due (seconds, 0: none), one in flight included.
 */
export async function backlog(db: Kysely<Database>): Promise<{ pending: number; oldestDueS: number }> {
  const r = await sql<{ pending: number; oldest: number }>`
    select count(*)::int as pending,
      coalesce(extract(epoch from now() - min(run_at) filter (where run_at <= now())), 0)::float8 as oldest
    from webhook_queue`.execute(db);
  return { pending: r.rows[0].pending, oldestDueS: r.rows[0].oldest };
}
