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
 * recording its attempt is claimed again then. Returns them with their endpoints.
 */
export async function claimDue(db: Kysely<Database>, limit: number, leaseS: number): Promise<DeliveryToDispatch[]> {
  const r = await sql<DeliveryToDispatch>`
    with claimed as (
      update webhook_queue q set lease_until = now() + make_interval(secs => ${leaseS})
      from (select delivery_id from webhook_queue where run_at <= now() and (lease_until is null or lease_until < now())
        order by run_at limit ${limit} for update skip locked) due
      where q.delivery_id = due.delivery_id
      returning q.delivery_id)
    select d.id, d.endpoint_id, d.status, d.attempts, d.payload::text as body,
      e.url, e.enabled, e.secret_enc, e.previous_secret_enc, e.rotated_at
    from claimed c join webhook_deliveries d on d.id = c.delivery_id join webhook_endpoints e on e.id = d.endpoint_id`
    .execute(db);
  return r.rows;
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
 * Records attempts set-wise in one transaction: their attempt rows, their deliveries' state,
 * their endpoints' runs of failures (a success ends one; failing for DISABLE_AFTER disables
 * the endpoint and ends the delivery) and their queue rows (a retry's is due at its time,
 * the others' are deleted). Returns, per outcome in order, whether it disabled its endpoint.
 */
export function recordAttempts(db: Kysely<Database>, outcomes: AttemptOutcome[]): Promise<boolean[]> {
  const col = <K extends keyof AttemptOutcome>(k: K) => outcomes.map((o) => o[k]);
  return db.transaction().execute(async (trx) => {
    await sql`insert into webhook_attempts (delivery_id, response_status, response_body, error, duration_ms)
      select * from unnest(${col("deliveryId")}::uuid[], ${col("responseStatus")}::int[], ${
      col("responseBody")
    }::text[],
        ${col("error")}::text[], ${col("durationMs")}::int[])`.execute(trx);
    // A failure recorded after a success (two claims of one delivery: a lease that ran out, a
    // redelivery during an attempt) is kept in the log but does not undo the success.
    await sql`update webhook_deliveries d set
        status = case when u.ok or d.status = 'succeeded' then 'succeeded'
          when u.next_at is not null then 'pending' else 'failed' end,
        attempts = d.attempts + 1, response_status = u.status, last_attempt_at = now(),
        next_attempt_at = case when not u.ok and d.status = 'succeeded' then null else u.next_at end
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
    const retry = (o: AttemptOutcome) => o.nextAttemptAt !== null && !disabled.has(o.endpointId);
    const retries = outcomes.filter(retry);
    const over = outcomes.filter((o) => !retry(o)).map((o) => o.deliveryId);
    if (retries.length) {
      // Upserted: the other claim's outcome may have taken the row off the queue already, and
      // a pending delivery without one would never be tried again.
      await sql`insert into webhook_queue (delivery_id, run_at)
        select id, next_attempt_at from webhook_deliveries
        where id = any(${retries.map((o) => o.deliveryId)}::uuid[]) and status = 'pending'
        on conflict (delivery_id) do update set run_at = excluded.run_at, lease_until = null`.execute(trx);
    }
    if (over.length) await trx.deleteFrom("webhook_queue").where("delivery_id", "in", over).execute();
    return outcomes.map((o) => !o.ok && disabled.has(o.endpointId));
  });
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
