/** SQL for webhook endpoints, their deliveries (queued by the email_events trigger, migration 0010) and attempts. */
import { type Insertable, type Kysely, type Selectable, sql, type Updateable } from "kysely";
import type { Database, WebhookAttemptsTable, WebhookDeliveriesTable, WebhookEndpointsTable } from "../db/tables.ts";
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

/** Queues a delivery's `dispatch_webhook` job under its key (`webhook:<id>`), at `runAt` (null: now). */
async function addDispatchJob(db: Kysely<Database>, deliveryId: string, runAt: Date | null): Promise<void> {
  await sql`select graphile_worker.add_job('dispatch_webhook', json_build_object('deliveryId', ${deliveryId}::text),
    run_at := coalesce(${runAt}::timestamptz, now()), max_attempts := 3::smallint,
    job_key := 'webhook:' || ${deliveryId}::text)`.execute(db);
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

/** A delivery with what sending it needs of its endpoint. */
export function deliveryToDispatch(db: Kysely<Database>, id: string) {
  return db.selectFrom("webhook_deliveries as d").innerJoin("webhook_endpoints as e", "e.id", "d.endpoint_id")
    .select([
      "d.id",
      "d.endpoint_id",
      "d.status",
      "d.attempts",
      "d.payload",
      "e.url",
      "e.enabled",
      "e.secret_enc",
      "e.previous_secret_enc",
      "e.rotated_at",
    ])
    .where("d.id", "=", id).executeTakeFirst();
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
 * Records an attempt in one transaction: the attempt row, the delivery's state, the endpoint's
 * run of failures (a success ends it; failing for DISABLE_AFTER disables the endpoint), and
 * the next attempt's job. Returns whether this attempt disabled the endpoint.
 */
export function recordAttempt(db: Kysely<Database>, o: AttemptOutcome): Promise<{ disabled: boolean }> {
  return db.transaction().execute(async (trx) => {
    await trx.insertInto("webhook_attempts").values({
      delivery_id: o.deliveryId,
      response_status: o.responseStatus,
      response_body: o.responseBody,
      error: o.error,
      duration_ms: o.durationMs,
    }).execute();
    await trx.updateTable("webhook_deliveries").set({
      status: o.ok ? "succeeded" : o.nextAttemptAt ? "pending" : "failed",
      attempts: sql`attempts + 1`,
      response_status: o.responseStatus,
      last_attempt_at: sql`now()`,
      next_attempt_at: o.nextAttemptAt,
    }).where("id", "=", o.deliveryId).execute();
    let disabled = false;
    if (o.ok) {
      await trx.updateTable("webhook_endpoints").set({ failing_since: null })
        .where("id", "=", o.endpointId).where("failing_since", "is not", null).execute();
    } else {
      await trx.updateTable("webhook_endpoints").set({ failing_since: sql`coalesce(failing_since, now())` })
        .where("id", "=", o.endpointId).execute();
      const r = await trx.updateTable("webhook_endpoints")
        .set({
          enabled: false,
          disabled_reason: sql`'every attempt failed since ' || to_char(failing_since at time zone 'UTC',
            'YYYY-MM-DD"T"HH24:MI:SS"Z"') || ' (${sql.raw(DISABLE_AFTER)}); re-enable it with enabled: true'`,
          updated_at: sql`now()`,
        })
        .where("id", "=", o.endpointId).where("enabled", "=", true)
        .where(sql<boolean>`failing_since <= now() - interval '${sql.raw(DISABLE_AFTER)}'`)
        .returning("id").executeTakeFirst();
      disabled = r !== undefined;
      // Disabled: this delivery is over; the endpoint's other pending ones end when their jobs run.
      if (disabled) {
        await trx.updateTable("webhook_deliveries").set({ status: "failed", next_attempt_at: null })
          .where("id", "=", o.deliveryId).execute();
      }
    }
    if (o.nextAttemptAt && !disabled) await addDispatchJob(trx, o.deliveryId, o.nextAttemptAt);
    return { disabled };
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

/** Deliveries waiting for an attempt, and how long the oldest due one has waited (seconds, 0: none). */
export async function backlog(db: Kysely<Database>): Promise<{ pending: number; oldestDueS: number }> {
  const r = await db.selectFrom("webhook_deliveries")
    .select([
      sql<number>`count(*)::int`.as("pending"),
      sql<
        number
      >`coalesce(extract(epoch from now() - min(next_attempt_at) filter (where next_attempt_at <= now())), 0)::float8`
        .as("oldest"),
    ])
    .where("status", "=", "pending").executeTakeFirstOrThrow();
  return { pending: r.pending, oldestDueS: r.oldest };
}
