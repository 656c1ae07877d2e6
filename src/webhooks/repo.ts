/** SQL for webhook endpoints, their deliveries (queued by the email_events trigger, migration 0010) and attempts. */
import { type Insertable, type Kysely, type Selectable, sql, type Updateable } from "kysely";
import type { Database, WebhookAttemptsTable, WebhookDeliveriesTable, WebhookEndpointsTable } from "../db/tables.ts";
import type { Cursor } from "../pagination.ts";
import { WEBHOOK_JOBS } from "../jobs/schemas.ts";

export type EndpointRow = Selectable<WebhookEndpointsTable>;
export type DeliveryRow = Selectable<WebhookDeliveriesTable>;
export type AttemptRow = Selectable<WebhookAttemptsTable>;

/**
 * Tries of one dispatch_webhook job. It throws only when the database fails mid-attempt (a
 * receiver's failure is recorded, not thrown): 10 tries of graphile-worker's backoff outlast
 * an outage of hours (migration 0012 gives the trigger's jobs the same).
 */
const DISPATCH_ATTEMPTS = 10;

/** How long an endpoint may fail without a success before it is disabled. */
export const DISABLE_AFTER = "5 days";

/** Adds an endpoint. */
export function insertEndpoint(db: Kysely<Database>, row: Insertable<WebhookEndpointsTable>) {
  return db.insertInto("webhook_endpoints").values(row).returningAll().executeTakeFirstOrThrow();
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

/** Changes an endpoint; enabling it again forgets why it was disabled and its run of failures. */
export function updateEndpoint(
  db: Kysely<Database>,
  accountId: string,
  id: string,
  set: Updateable<WebhookEndpointsTable>,
) {
  const reset = set.enabled === true ? { disabled_reason: null, failing_since: null } : {};
  return db.updateTable("webhook_endpoints").set({ ...set, ...reset, updated_at: sql`now()` })
    .where("account_id", "=", accountId).where("id", "=", id).returningAll().executeTakeFirst();
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

/**
 * Queues a delivery's `dispatch_webhook` job under its key (`webhook:<id>`), at `runAt` (null:
 * now), in the webhooks' own queue (jobs/schemas.ts) like every webhook job since migration 0020.
 */
async function addDispatchJob(db: Kysely<Database>, deliveryId: string, runAt: Date | null): Promise<void> {
  await sql`select ${
    sql.id(WEBHOOK_JOBS, "add_job")
  }('dispatch_webhook', json_build_object('deliveryId', ${deliveryId}::text),
    run_at := coalesce(${runAt}::timestamptz, now()), max_attempts := ${DISPATCH_ATTEMPTS}::smallint,
    job_key := 'webhook:' || ${deliveryId}::text, priority := -1)`.execute(db);
}

/** Adds a delivery that no event made (`webhook.test`) and queues it, in one transaction. */
export function queueDelivery(db: Kysely<Database>, row: Insertable<WebhookDeliveriesTable>) {
  return db.transaction().execute(async (trx) => {
    const d = await trx.insertInto("webhook_deliveries").values(row).returningAll().executeTakeFirstOrThrow();
    await addDispatchJob(trx, d.id, null);
    return d;
  });
}

/** Sends a delivery again now (whatever its status), keeping its id; undefined when not the account's. */
export function redeliver(db: Kysely<Database>, accountId: string, deliveryId: string) {
  return db.transaction().execute(async (trx) => {
    const d = await trx.updateTable("webhook_deliveries").set({ status: "pending", next_attempt_at: sql`now()` })
      .where("account_id", "=", accountId).where("id", "=", deliveryId).returningAll().executeTakeFirst();
    if (d) await addDispatchJob(trx, d.id, null);
    return d;
  });
}

/** Deliveries with what sending them needs of their endpoints, by id (missing ids: deleted). */
export async function deliveriesToDispatch(db: Kysely<Database>, ids: string[]) {
  const rows = await db.selectFrom("webhook_deliveries as d").innerJoin(
    "webhook_endpoints as e",
    "e.id",
    "d.endpoint_id",
  )
    .select([
      "d.id",
      "d.endpoint_id",
      "d.status",
      "d.attempts",
      // The body as stored: sent as it is, not parsed and written again.
      sql<string>`d.payload::text`.as("body"),
      "e.url",
      "e.enabled",
      "e.secret_enc",
      "e.previous_secret_enc",
      "e.rotated_at",
      "e.failing_since",
    ])
    .where("d.id", "in", ids).execute();
  return new Map(rows.map((r) => [r.id, r]));
}
export type DeliveryToDispatch = NonNullable<ReturnType<Awaited<ReturnType<typeof deliveriesToDispatch>>["get"]>>;

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
 * Records attempts set-wise in one transaction: their attempt rows, their deliveries' state,
 * their endpoints' runs of failures (a success ends one; failing for DISABLE_AFTER disables
 * the endpoint and ends the delivery) and the next attempts' jobs. Returns, per outcome in
 * order, whether it disabled its endpoint.
 */
export function recordAttempts(db: Kysely<Database>, outcomes: AttemptOutcome[]): Promise<boolean[]> {
  const col = <K extends keyof AttemptOutcome>(k: K) => outcomes.map((o) => o[k]);
  return db.transaction().execute(async (trx) => {
    await sql`insert into webhook_attempts (delivery_id, response_status, response_body, error, duration_ms)
      select * from unnest(${col("deliveryId")}::uuid[], ${col("responseStatus")}::int[], ${
      col("responseBody")
    }::text[],
        ${col("error")}::text[], ${col("durationMs")}::int[])`.execute(trx);
    await sql`update webhook_deliveries d set
        status = case when u.ok then 'succeeded' when u.next_at is not null then 'pending' else 'failed' end,
        attempts = d.attempts + 1, response_status = u.status, last_attempt_at = now(), next_attempt_at = u.next_at
      from unnest(${col("deliveryId")}::uuid[], ${col("ok")}::bool[], ${col("responseStatus")}::int[],
        ${col("nextAttemptAt")}::timestamptz[]) as u(id, ok, status, next_at)
      where d.id = u.id`.execute(trx);
    const okEndpoints = [...new Set(outcomes.filter((o) => o.ok).map((o) => o.endpointId))];
    const failedEndpoints = [...new Set(outcomes.filter((o) => !o.ok).map((o) => o.endpointId))];
    if (okEndpoints.length) {
      await trx.updateTable("webhook_endpoints").set({ failing_since: null })
        .where("id", "in", okEndpoints).where("failing_since", "is not", null).execute();
    }
    let disabled = new Set<string>();
    if (failedEndpoints.length) {
      await trx.updateTable("webhook_endpoints").set({ failing_since: sql`coalesce(failing_since, now())` })
        .where("id", "in", failedEndpoints).where("failing_since", "is", null).execute();
      const off = await trx.updateTable("webhook_endpoints")
        .set({
          enabled: false,
          disabled_reason: sql`'every attempt failed since ' || to_char(failing_since at time zone 'UTC',
            'YYYY-MM-DD"T"HH24:MI:SS"Z"') || ' (${sql.raw(DISABLE_AFTER)}); re-enable it with enabled: true'`,
          updated_at: sql`now()`,
        })
        .where("id", "in", failedEndpoints).where("enabled", "=", true)
        .where(sql<boolean>`failing_since <= now() - interval '${sql.raw(DISABLE_AFTER)}'`)
        .returning("id").execute();
      disabled = new Set(off.map((r) => r.id));
    }
    const ended = outcomes.filter((o) => !o.ok && disabled.has(o.endpointId)).map((o) => o.deliveryId);
    // Disabled: these deliveries are over; the endpoint's other pending ones end when their jobs run.
    if (ended.length) {
      await trx.updateTable("webhook_deliveries").set({ status: "failed", next_attempt_at: null })
        .where("id", "in", ended).execute();
    }
    const retries = outcomes.filter((o) => o.nextAttemptAt && !disabled.has(o.endpointId));
    if (retries.length) {
      await sql`select 1 from ${sql.id(WEBHOOK_JOBS, "add_jobs")}(array(
        select ('dispatch_webhook', json_build_object('deliveryId', id::text), null, run_at, ${DISPATCH_ATTEMPTS}::smallint,
          'webhook:' || id::text, -1, null)::${sql.id(WEBHOOK_JOBS, "job_spec")}
        from unnest(${retries.map((o) => o.deliveryId)}::uuid[], ${retries.map((o) => o.nextAttemptAt)}::timestamptz[])
          as u(id, run_at)))`.execute(trx);
    }
    return outcomes.map((o) => !o.ok && disabled.has(o.endpointId));
  });
}

/** Ends a delivery that can no longer be sent (its endpoint is disabled). */
export async function failDelivery(db: Kysely<Database>, id: string): Promise<void> {
  await db.updateTable("webhook_deliveries").set({ status: "failed", next_attempt_at: null })
    .where("id", "=", id).where("status", "=", "pending").execute();
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
 * Deliveries waiting for an attempt, and how long the oldest due one has waited (seconds, 0:
 * none), from the webhook queue's jobs: a pending delivery is one that a job still carries
 * (its first attempt's group, or its retry). Deliveries are not indexed by status since
 * migration 0022, so that their updates stay HOT; each id a job carries is looked up by key
 * instead, and counted while it is still pending. A job that used up its tries is left out
 * (the `failed` jobs gauge counts it): its deliveries wait for a redelivery, not for it. The
 * payloads are read from graphile-worker's `_private_jobs` (its public `jobs` view leaves them
 * out; graphile-worker is pinned); jobs queued before migration 0020, in the main queue, are
 * not counted.
 */
export async function backlog(db: Kysely<Database>): Promise<{ pending: number; oldestDueS: number }> {
  const r = await sql<{ pending: number; oldest: number }>`
    with carried as (
      select j.run_at, x.id::uuid as id
      from ${sql.id(WEBHOOK_JOBS, "_private_jobs")} j,
        json_array_elements_text(coalesce(j.payload->'deliveryIds', json_build_array(j.payload->>'deliveryId'))) as x(id)
      where j.attempts < j.max_attempts and x.id is not null),
    waiting as (
      select c.run_at, c.id from carried c join webhook_deliveries d on d.id = c.id and d.status = 'pending')
    select (select count(distinct id) from waiting)::int as pending,
      coalesce(extract(epoch from now() - (select min(run_at) from waiting where run_at <= now())), 0)::float8 as oldest`
    .execute(db);
  return { pending: r.rows[0].pending, oldestDueS: r.rows[0].oldest };
}
