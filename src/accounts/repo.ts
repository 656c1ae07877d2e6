/** SQL for accounts, API keys and monthly usage. Each function takes the db (or a transaction) first. */
import { type Kysely, type Selectable, sql } from "kysely";
import type { AccountsTable, Database, KeyScope } from "../db/tables.ts";
import { HOUR } from "../../migrations/0021_reputation_rollup.ts";

/** An account as read. */
export type AccountRow = Selectable<AccountsTable>;

/** Inserts an account. */
export function insertAccount(db: Kysely<Database>, name: string, monthlyLimit: number | null) {
  return db.insertInto("accounts").values({ name, monthly_limit: monthlyLimit }).returningAll()
    .executeTakeFirstOrThrow();
}

/** One account by id. */
export function findAccount(db: Kysely<Database>, id: string): Promise<AccountRow | undefined> {
  return db.selectFrom("accounts").selectAll().where("id", "=", id).executeTakeFirst();
}

/** Takes the seed's transaction-wide advisory lock: two processes starting at once must not both seed. */
export async function lockSeed(db: Kysely<Database>): Promise<void> {
  await sql`select pg_advisory_xact_lock(7311)`.execute(db);
}

/** Whether any account exists (the seed runs only on an empty database). */
export async function anyAccount(db: Kysely<Database>): Promise<boolean> {
  return (await db.selectFrom("accounts").select("id").limit(1).executeTakeFirst()) !== undefined;
}

/**
 * Turns an account's sending on or off (ops), recording why. Resuming restarts the
 * reputation window, so the account is judged on what it sends from now on.
 */
export function updateSending(db: Kysely<Database>, id: string, enabled: boolean, reason: string | null) {
  return db.updateTable("accounts").set({
    sending_enabled: enabled,
    paused_reason: reason,
    paused_by: enabled ? null : "ops",
    ...(enabled ? { reputation_since: sql`now()` } : {}),
    updated_at: sql`now()`,
  }).where("id", "=", id).returningAll().executeTakeFirst();
}

/**
 * Brings the held delivery jobs of an account's queued sends forward to now (after a
 * resume), instead of waiting for their next paused-account recheck.
 */
export async function releaseHeldSends(db: Kysely<Database>, accountId: string): Promise<void> {
  await sql`select graphile_worker.reschedule_jobs(array(
      select j.id from graphile_worker.jobs j
      join sends s on j.key = 'send:' || s.id::text
      where s.account_id = ${accountId} and s.status = 'queued' and j.locked_at is null),
    run_at := now())`.execute(db);
}

/** Inserts an API key row (hash and prefix only). */
export function insertApiKey(
  db: Kysely<Database>,
  row: {
    account_id: string;
    mode: "live" | "test";
    prefix: string;
    key_hash: string;
    scope?: KeyScope;
    domains?: string[] | null;
  },
) {
  return db.insertInto("api_keys").values(row).returningAll().executeTakeFirstOrThrow();
}

/** The live (unrevoked) key with this hash, for authentication. */
export function findActiveKeyByHash(db: Kysely<Database>, hash: string) {
  return db.selectFrom("api_keys").select(["id", "account_id", "mode", "scope", "domains"])
    .where("key_hash", "=", hash).where("revoked_at", "is", null).executeTakeFirst();
}

/** The key with this id if it is not revoked, for re-checking a long-lived stream. */
export function findActiveKeyById(db: Kysely<Database>, id: string) {
  return db.selectFrom("api_keys").select("id").where("id", "=", id).where("revoked_at", "is", null)
    .executeTakeFirst();
}

/** Marks a key revoked; returns it, or undefined when unknown. */
export function revokeKey(db: Kysely<Database>, id: string) {
  return db.updateTable("api_keys").set({ revoked_at: sql`coalesce(revoked_at, now())` })
    .where("id", "=", id).returningAll().executeTakeFirst();
}

/** An account's keys, newest first. */
export function listKeys(db: Kysely<Database>, accountId: string) {
  return db.selectFrom("api_keys").selectAll().where("account_id", "=", accountId).orderBy("created_at", "desc")
    .execute();
}

/**
 * Reserves `n` units of this month's quota in one statement, or reserves nothing and
 * returns undefined when the limit would be passed. The row lock of the upsert makes
 * concurrent reservations queue, so the count can never pass the limit.
 */
export async function reserveUsage(db: Kysely<Database>, accountId: string, n: number, limit: number | null) {
  const r = await sql<{ used: number }>`
    insert into account_usage (account_id, month, used)
    select ${accountId}, date_trunc('month', now() at time zone 'utc')::date, ${n}
    where ${limit}::int is null or ${n} <= ${limit}::int
    on conflict (account_id, month) do update set used = account_usage.used + excluded.used
      where ${limit}::int is null or account_usage.used + excluded.used <= ${limit}::int
    returning used`.execute(db);
  return r.rows[0];
}

/** Gives one unit back per time, each to the month it was taken in (one statement for any number). */
export async function releaseUsage(db: Kysely<Database>, accountId: string, takenAt: Date[]) {
  if (takenAt.length === 0) return;
  await sql`
    update account_usage u set used = greatest(u.used - g.n, 0)
    from (select date_trunc('month', t at time zone 'utc')::date as m, count(*)::int as n
          from unnest(${takenAt}::timestamptz[]) as t group by 1) g
    where u.account_id = ${accountId} and u.month = g.m`.execute(db);
}

/** Units used in the current UTC month. */
export async function currentUsage(db: Kysely<Database>, accountId: string): Promise<{ month: string; used: number }> {
  const r = await sql<{ month: string; used: number }>`
    select to_char(m, 'YYYY-MM') as month, coalesce((select used from account_usage where account_id = ${accountId} and month = m), 0) as used
    from (select date_trunc('month', now() at time zone 'utc')::date as m) x`.execute(db);
  return r.rows[0];
}

/** The account's monthly limit and this month's use, in one statement (quota headers). */
export async function quotaOf(
  db: Kysely<Database>,
  accountId: string,
): Promise<{ limit: number | null; used: number }> {
  const r = await sql<{ limit: number | null; used: number }>`
    select a.monthly_limit as limit, coalesce(u.used, 0) as used
    from accounts a left join account_usage u
      on u.account_id = a.id and u.month = date_trunc('month', now() at time zone 'utc')::date
    where a.id = ${accountId}`.execute(db);
  return r.rows[0] ?? { limit: null, used: 0 };
}

/**
 * An account's reputation counts over its window (the last `windowDays`, or since ops' last
 * resume when that is later): its live sends that went out (`sent`, `delivered`,
 * `bounced`; sandbox sends of `pp_test_` keys never count), how many of those bounced
 * hard, and how many of those drew a complaint. A complaint counts by its send's date, not
 * by the date the report gives, so a complaint about a send older than the window does not.
 *
 * The window's first, partial hour is counted from its sends (sends_account_created); every
 * later hour from the rollup of migration 0021 and its unfolded deltas (a few seconds' worth):
 * at most ~170 rows, whatever the account's volume.
 */
export async function reputationCounts(
  db: Kysely<Database>,
  accountId: string,
  windowDays: number,
): Promise<{ sends: number; bounces: number; complaints: number }> {
  const r = await sql<{ sends: number; bounces: number; complaints: number }>`
    with a as (
      select greatest(now() - make_interval(days => ${windowDays}), coalesce(reputation_since, '-infinity')) as since
      from accounts where id = ${accountId}),
    b as (select since, ${sql.raw(HOUR("since"))} + interval '1 hour' as hours_from from a),
    first_hour as materialized (
      select s.id, s.status from sends s, b
      where s.account_id = ${accountId} and s.created_at >= b.since and s.created_at < b.hours_from
        and not s.sandbox and s.status in ('sent', 'delivered', 'bounced')),
    later as (
      select coalesce(sum(x.sends), 0)::int as sends, coalesce(sum(x.bounces), 0)::int as bounces,
        coalesce(sum(x.complaints), 0)::int as complaints
      from (
        select h.sends, h.bounces, h.complaints from reputation_hours h, b
        where h.account_id = ${accountId} and h.hour >= b.hours_from
        union all
        select d.sends, d.bounces, d.complaints from reputation_delta d, b
        where d.account_id = ${accountId} and d.hour >= b.hours_from) x)
    select
      (select count(*)::int from first_hour) + later.sends as sends,
      (select count(*)::int from first_hour where status = 'bounced') + later.bounces as bounces,
      (select count(distinct e.send_id)::int from email_events e join first_hour f on f.id = e.send_id
        where e.account_id = ${accountId} and e.type = 'complained') + later.complaints as complaints
    from later`.execute(db);
  return r.rows[0] ?? { sends: 0, bounces: 0, complaints: 0 };
}

/**
 * Moves every reputation delta (migration 0021's triggers) into the hourly rollup, in one
 * statement; the rows it took are gone, those inserted meanwhile wait for the next fold.
 * Returns how many delta rows were folded. Run by the fold_stats task.
 */
export async function foldReputation(db: Kysely<Database>): Promise<number> {
  const r = await sql<{ n: number }>`
    with taken as (delete from reputation_delta returning *),
    folded as (
      insert into reputation_hours as h (account_id, hour, sends, bounces, complaints)
      select account_id, hour, sum(sends), sum(bounces), sum(complaints) from taken group by 1, 2
      on conflict (account_id, hour) do update set sends = h.sends + excluded.sends,
        bounces = h.bounces + excluded.bounces, complaints = h.complaints + excluded.complaints)
    select count(*)::int as n from taken`.execute(db);
  return r.rows[0].n;
}

/**
 * Pauses an account's sending for its reputation, with `reason`; true when this paused it,
 * false when it was already paused (by ops or earlier).
 */
export async function pauseForReputation(db: Kysely<Database>, accountId: string, reason: string): Promise<boolean> {
  const paused = await db.updateTable("accounts")
    .set({ sending_enabled: false, paused_by: "reputation", paused_reason: reason, updated_at: sql`now()` })
    .where("id", "=", accountId).where("sending_enabled", "=", true).returning("id").executeTakeFirst();
  return paused !== undefined;
}

/**
 * Queues a reputation check of the account in ~2 s; repeated calls before it runs keep one
 * job and its first time (job_key_mode preserve_run_at), so a stream of bounces cannot
 * postpone it.
 */
export async function queueReputationCheck(db: Kysely<Database>, accountId: string): Promise<void> {
  await sql`select graphile_worker.add_job('reputation_check', json_build_object('accountId', ${accountId}::text),
    run_at := now() + interval '2 seconds', job_key := ${"reputation:" + accountId},
    job_key_mode := 'preserve_run_at')`.execute(db);
}

/** Enabled accounts with a send created in the last `days` days, for the reputation sweep. */
export function listAccountsSentWithin(db: Kysely<Database>, days: number) {
  return db.selectFrom("accounts").select("id").where("sending_enabled", "=", true)
    .where((eb) =>
      eb.exists(
        eb.selectFrom("sends").select(sql`1`.as("x")).whereRef("sends.account_id", "=", "accounts.id")
          .where("sends.created_at", ">=", sql<Date>`now() - make_interval(days => ${days})`),
      )
    ).execute();
}
