/** SQL for sends and their jobs. */
import { type Insertable, type Kysely, type Selectable, sql } from "kysely";
import type { ContactStatus, Database, EventType, SendsTable, SendStatus } from "../db/tables.ts";
import { notifySelect } from "../events/repo.ts";
import type { ContactFields } from "../mail/render.ts";
import type { Cursor } from "../pagination.ts";

/** A stored send row. */
export type SendRow = Selectable<SendsTable>;

/**
 * Queues the `promote_scheduled` job in `delayS` seconds under its one job key (graphile-worker's
 * public add_job: adding it again replaces the waiting run).
 */
export async function queuePromotion(db: Kysely<Database>, delayS: number): Promise<void> {
  await sql`select graphile_worker.add_job('promote_scheduled', '{}'::json,
    run_at := now() + make_interval(secs => ${delayS}), job_key := 'promote_scheduled')`.execute(db);
}

/** Statuses from which a send may still be cancelled or delivered. */
export const PENDING: SendStatus[] = ["scheduled", "queued"];

// A send's delivery job has the job key `send:<sendId>`: cancelling removes it by that key.

/** What the sends created together (one request, one page of a segment) share. */
export interface SendCommon {
  account_id: string;
  /** Null for a submitted message: `content` then holds its parts. */
  template_id: string | null;
  batch_id: string | null;
  subject: string;
  from_email: string;
  from_name: string | null;
  reply_to: string | null;
  tags: string;
  track_opens: boolean;
  track_clicks: boolean;
  sandbox: boolean;
  scheduled_at: Date | null;
  /** Due beyond the horizon (jobDeferred): its scheduled sends wait without a job. */
  job_deferred: boolean;
  /** The files' list (AttachmentMeta[]) as JSON text; null: none. */
  attachments: string | null;
  /** A submitted message's SubmittedContent as JSON text; null: a template send. */
  content: string | null;
}

/** What differs per send. `personalizations`, `headers`, `cc` and `bcc` are JSON text. */
export interface SendItem {
  id: string;
  contact_id: string;
  to_email: string;
  personalizations: string;
  headers: string | null;
  cc: string | null;
  bcc: string | null;
  status: SendStatus;
  message_id: string;
}

/**
 * Inserts many sends in one statement (`unnest` of per-send arrays). A send whose
 * (batch, contact) already exists is skipped, so a re-run segment page adds nothing;
 * the rows actually inserted are returned.
 */
export async function insertSends(db: Kysely<Database>, common: SendCommon, items: SendItem[]): Promise<SendRow[]> {
  if (items.length === 0) return [];
  const col = <K extends keyof SendItem>(k: K) => items.map((i) => i[k]);
  const r = await sql<SendRow>`
    insert into sends (id, contact_id, to_email, personalizations, headers, cc, bcc, status, message_id,
      account_id, template_id, batch_id, subject, from_email, from_name, reply_to, tags,
      track_opens, track_clicks, sandbox, scheduled_at, job_deferred, attachments, content)
    select u.id, u.contact_id, u.to_email, u.personalizations::jsonb, u.headers::jsonb,
      case when u.cc is not null then array(select jsonb_array_elements_text(u.cc::jsonb)) end,
      case when u.bcc is not null then array(select jsonb_array_elements_text(u.bcc::jsonb)) end,
      u.status, u.message_id,
      ${common.account_id}::uuid, ${common.template_id}::uuid, ${common.batch_id}::uuid, ${common.subject},
      ${common.from_email}, ${common.from_name}, ${common.reply_to}, ${common.tags}::jsonb,
      ${common.track_opens}, ${common.track_clicks}, ${common.sandbox}, ${common.scheduled_at}::timestamptz,
      u.status = 'scheduled' and ${common.job_deferred}, ${common.attachments}::jsonb, ${common.content}::jsonb
    from unnest(${col("id")}::uuid[], ${col("contact_id")}::uuid[], ${col("to_email")}::text[],
      ${col("personalizations")}::text[], ${col("headers")}::text[], ${col("cc")}::text[], ${col("bcc")}::text[],
      ${col("status")}::text[], ${col("message_id")}::text[])
      as u(id, contact_id, to_email, personalizations, headers, cc, bcc, status, message_id)
    on conflict (batch_id, contact_id) where batch_id is not null do nothing
    returning *`.execute(db);
  return r.rows;
}

/** How deliveries are queued: attempts per job, and how far ahead a job is created. */
export interface QueueOptions {
  smtpMaxAttempts: number;
  /** Sends due later than this many seconds from now wait with `job_deferred` instead of a job. */
  scheduleHorizonS: number;
}

/**
 * Whether sends due at `runAt` are created without a delivery job (SendCommon.job_deferred):
 * due more than the horizon from now. promoteDeferred gives them their jobs when their time
 * comes within it: thousands of not-yet-due jobs would make every job fetch of every worker
 * scan them all (graphile-worker's index orders by priority, then run_at).
 */
export function jobDeferred(runAt: Date | null, opts: QueueOptions): boolean {
  return runAt !== null && runAt.getTime() > Date.now() + opts.scheduleHorizonS * 1000;
}

/**
 * Queues the delivery jobs of many sends in one statement (graphile-worker's add_jobs), in
 * the caller's transaction, so sends and jobs commit or roll back together. `runAt` null
 * means now. Sends created with `job_deferred` get no job here (pass `deferred`).
 */
export async function queueDeliveries(
  db: Kysely<Database>,
  sendIds: string[],
  runAt: Date | null,
  opts: QueueOptions,
  deferred = false,
) {
  if (sendIds.length === 0 || deferred) return;
  await addDeliveryJobs(db, sendIds.map((id) => ({ id, runAt })), opts.smtpMaxAttempts);
}

/** One add_jobs for many sends, each with its own run_at (null: now). */
async function addDeliveryJobs(db: Kysely<Database>, jobs: { id: string; runAt: Date | null }[], maxAttempts: number) {
  await sql`select 1 from graphile_worker.add_jobs(array(
    select (
      'deliver_send', json_build_object('sendId', id::text), null, run_at,
      ${maxAttempts}::smallint, 'send:' || id::text, null, null
    )::graphile_worker.job_spec
    from unnest(${jobs.map((j) => j.id)}::uuid[], ${jobs.map((j) => j.runAt)}::timestamptz[]) as u(id, run_at)))`
    .execute(db);
}

/** Most deferred sends promoted per statement; a bigger backlog is taken by the next runs. */
export const PROMOTE_MAX = 10_000;

/**
 * Gives deferred sends due within the horizon their delivery jobs (run_at = their time), in
 * one transaction; cancelled ones are only unmarked. Safe with any number of worker
 * processes: rows are taken with SKIP LOCKED and unmarked in the same transaction.
 * Returns how many rows were taken (PROMOTE_MAX: there may be more) and how many got a job.
 */
export async function promoteDeferred(
  db: Kysely<Database>,
  opts: QueueOptions,
): Promise<{ taken: number; queued: number }> {
  return await db.transaction().execute(async (trx) => {
    const due = await sql<{ id: string; status: string; scheduled_at: Date }>`
      update sends s set job_deferred = false
      from (select id from sends
        where job_deferred and scheduled_at <= now() + make_interval(secs => ${opts.scheduleHorizonS})
        order by scheduled_at limit ${PROMOTE_MAX} for update skip locked) d
      where s.id = d.id
      returning s.id, s.status, s.scheduled_at`.execute(trx);
    const jobs = due.rows.filter((r) => r.status === "scheduled").map((r) => ({ id: r.id, runAt: r.scheduled_at }));
    if (jobs.length) await addDeliveryJobs(trx, jobs, opts.smtpMaxAttempts);
    return { taken: due.rows.length, queued: jobs.length };
  });
}

/** Removes a send's pending job (a job already running is left; it sees the new status). */
export async function removeDelivery(db: Kysely<Database>, sendId: string) {
  await removeDeliveries(db, [sendId]);
}

/** Removes the pending jobs of many sends in one statement. */
export async function removeDeliveries(db: Kysely<Database>, sendIds: string[]) {
  if (sendIds.length === 0) return;
  await sql`select graphile_worker.remove_job('send:' || id::text) from unnest(${sendIds}::uuid[]) as id`.execute(db);
}

/** One of an account's sends. */
export function findSend(db: Kysely<Database>, accountId: string, id: string) {
  return db.selectFrom("sends").selectAll().where("id", "=", id).where("account_id", "=", accountId).executeTakeFirst();
}

/** One send by id, any account (the worker). */
export function findSendById(db: Kysely<Database>, id: string) {
  return db.selectFrom("sends").selectAll().where("id", "=", id).executeTakeFirst();
}

/** A page of an account's sends, newest first, filtered by status and batch. */
export function listSends(
  db: Kysely<Database>,
  accountId: string,
  opts: { limit: number; status?: SendStatus | null; batchId?: string | null; after?: Cursor },
) {
  let q = db.selectFrom("sends").selectAll().where("account_id", "=", accountId);
  if (opts.status) q = q.where("status", "=", opts.status);
  if (opts.batchId) q = q.where("batch_id", "=", opts.batchId);
  if (opts.after) q = q.where(sql<boolean>`(created_at, id) < (${opts.after.createdAt}, ${opts.after.id}::uuid)`);
  return q.orderBy("created_at", "desc").orderBy("id", "desc").limit(opts.limit).execute();
}

/**
 * Moves an account's pending sends — one (`sendId`) or a batch's (`batchId`) — to `at`, in
 * the caller's transaction: `scheduled` when `at` is ahead, else `queued` (due now); each
 * pending job is replaced by one at the new time, or by none when the time is beyond the
 * horizon (promoteDeferred creates it later). A job already running for one of them finds
 * its send not yet due and leaves it (claimForDelivery). Returns the moved rows.
 */
export async function reschedulePending(
  db: Kysely<Database>,
  accountId: string,
  which: { sendId: string } | { batchId: string },
  at: Date,
  opts: QueueOptions,
): Promise<SendRow[]> {
  const ahead = at.getTime() > Date.now();
  const deferred = jobDeferred(at, opts);
  let q = db.updateTable("sends").set({
    scheduled_at: at,
    status: ahead ? "scheduled" : "queued",
    job_deferred: deferred,
    updated_at: sql`now()`,
  }).where("account_id", "=", accountId).where("status", "in", PENDING);
  q = "sendId" in which ? q.where("id", "=", which.sendId) : q.where("batch_id", "=", which.batchId);
  const rows = await q.returningAll().execute();
  const ids = rows.map((r) => r.id);
  await removeDeliveries(db, ids);
  if (!deferred && ids.length) {
    await addDeliveryJobs(db, ids.map((id) => ({ id, runAt: ahead ? at : null })), opts.smtpMaxAttempts);
  }
  return rows;
}

/** Marks a still-pending send cancelled; undefined when it is not pending (or not theirs). */
export function cancelPending(db: Kysely<Database>, accountId: string, id: string) {
  return db.updateTable("sends").set({ status: "cancelled", updated_at: sql`now()` })
    .where("id", "=", id).where("account_id", "=", accountId).where("status", "in", PENDING)
    .returningAll().executeTakeFirst();
}

/** What a delivery needs, read in the same statement that claims the send. */
export interface Claimed {
  send: SendRow;
  /** Null for a submitted message (the send's `content` is its body). */
  template: { id: string; updated_at: Date; html: string | null; text: string | null } | null;
  contact: ContactFields;
  sendingEnabled: boolean;
}

/**
 * Claims sends for delivery and reads their templates, contacts and account states, in one
 * statement: pending (or `sending` after a crashed attempt) becomes `sending`. A send that is
 * already past that, or not due yet (rescheduled), is missing from the answer, so a re-run
 * or stale job mails nothing.
 */
export async function claimForDelivery(db: Kysely<Database>, ids: string[]): Promise<Map<string, Claimed>> {
  const r = await sql<SendRow & Record<string, unknown>>`
    with claimed as (
      update sends set status = 'sending', updated_at = now()
      where id = any(${ids}::uuid[]) and status in ('scheduled', 'queued', 'sending')
        -- A send rescheduled later while its old job was already running is not due yet:
        -- the old job leaves it to the new one.
        and (status = 'sending' or scheduled_at is null or scheduled_at <= now() + interval '5 seconds')
      returning *)
    select c.*, t.updated_at as tpl_updated_at, t.html as tpl_html, t.text as tpl_text,
      ct.email as ct_email, ct.first_name as ct_first_name, ct.last_name as ct_last_name,
      ct.company as ct_company, ct.fields as ct_fields, a.sending_enabled as acct_sending_enabled
    from claimed c
    left join templates t on t.id = c.template_id
    join contacts ct on ct.id = c.contact_id
    join accounts a on a.id = c.account_id`.execute(db);
  return new Map(r.rows.map((row) => [row.id, {
    send: row,
    template: row.template_id === null ? null : {
      id: row.template_id,
      updated_at: row.tpl_updated_at as Date,
      html: row.tpl_html as string | null,
      text: row.tpl_text as string | null,
    },
    contact: {
      email: row.ct_email as string,
      first_name: row.ct_first_name as string | null,
      last_name: row.ct_last_name as string | null,
      company: row.ct_company as string | null,
      fields: row.ct_fields as Record<string, unknown>,
    },
    sendingEnabled: row.acct_sending_enabled as boolean,
  }]));
}

/** A delivery's outcome: the send's new columns, its events and, for a hard bounce, the contact's status. */
export interface Outcome {
  send: { id: string; account_id: string; contact_id: string };
  set: Partial<Insertable<SendsTable>>;
  events: { type: EventType; data?: Record<string, unknown> }[];
  contactStatus?: ContactStatus;
}

/**
 * Records many delivery outcomes in one statement (data-modifying CTEs commit together):
 * each send's columns from its own patch (`jsonb_populate_record` over the row, so columns
 * a patch leaves out keep their value), the contacts' new statuses, and the events,
 * announced on EVENTS_CHANNEL.
 */
export async function recordOutcomes(db: Kysely<Database>, outcomes: Outcome[]): Promise<void> {
  if (outcomes.length === 0) return;
  const columns = [...new Set(outcomes.flatMap((o) => Object.keys(o.set)))];
  const evs = outcomes.flatMap((o) => o.events.map((e) => ({ o, e })));
  const contacts = outcomes.filter((o) => o.contactStatus);
  const setList = sql.join([...columns.map((c) => sql.ref(c)), sql.ref("updated_at")]);
  const fromPatch = sql.join([...columns.map((c) => sql.ref(`r.${c}`)), sql`now()`]);
  await sql`
    with upd_send as (
      update sends s set (${setList}) = (select ${fromPatch} from jsonb_populate_record(s, u.patch) r)
      from unnest(${outcomes.map((o) => o.send.id)}::uuid[], ${
    outcomes.map((o) => JSON.stringify(o.set))
  }::jsonb[]) as u(id, patch)
      where s.id = u.id),
    upd_contact as (
      update contacts c set status = u.status, updated_at = now()
      from unnest(${contacts.map((o) => o.send.contact_id)}::uuid[], ${
    contacts.map((o) => o.contactStatus!)
  }::text[]) as u(id, status)
      where c.id = u.id),
    ins as (
      insert into email_events (send_id, account_id, type, data)
      select u.send_id, u.account_id, u.type, u.data::jsonb
      from unnest(${evs.map(({ o }) => o.send.id)}::uuid[], ${evs.map(({ o }) => o.send.account_id)}::uuid[],
        ${evs.map(({ e }) => e.type)}::text[], ${evs.map(({ e }) => JSON.stringify(e.data ?? {}))}::text[])
        as u(send_id, account_id, type, data)
      returning id, send_id, account_id, type)
    ${notifySelect}`.execute(db);
}

/**
 * Ends a send that is still waiting or being delivered as `failed` with `code`, and records
 * its `failed` event (announced like every event). A send already past `sending` is left as
 * it is. Returns whether the send was changed.
 */
export async function failUnfinished(db: Kysely<Database>, sendId: string, code: string, message: string) {
  const r = await sql`
    with upd as (
      update sends set status = 'failed', error_code = ${code}, error_message = ${message}, updated_at = now()
      where id = ${sendId} and status in ('scheduled', 'queued', 'sending')
      returning id, account_id),
    ins as (
      insert into email_events (send_id, account_id, type, data)
      select id, account_id, 'failed', ${JSON.stringify({ code, message })}::jsonb from upd
      returning id, send_id, account_id, type)
    ${notifySelect}`.execute(db);
  // One notify row per chunk of events: none when nothing was failed.
  return r.rows.length > 0;
}

/** Updates a send's delivery outcome. */
export function updateSend(db: Kysely<Database>, id: string, set: Partial<Insertable<SendsTable>>) {
  return db.updateTable("sends").set({ ...set, updated_at: sql`now()` }).where("id", "=", id).execute();
}
