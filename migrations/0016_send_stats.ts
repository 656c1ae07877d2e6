// Stats by day and tag (API.md "Message features"), kept current by the event pipeline: a
// statement trigger on email_events adds each statement's events, aggregated set-wise, to
// send_stats_delta in the transaction that records them. A stats query reads the rollup
// (send_stats) and the deltas not yet folded into it, a few rows per day, never email_events
// (and the rollup outlives the events that retention deletes).
//
// Rows are per (account, UTC day, tag): `tag` is '' for all of the account's sends, or
// `key:value` for each tag of the send. The trigger only inserts: an upsert into one row per
// account and day would hold that row's lock from the events' insert to the commit, so every
// transaction recording an account's events would wait for the one before. The `fold_stats` task
// (src/stats/jobs.ts) moves the deltas into send_stats every few seconds, in one statement.
//
// What counts: `accepted` every accepted send (its `queued` or `suppressed` event), `opened`
// and `clicked` a send's first open and click only (unique), the rest every event of its type.
// The accepted ones are added by acceptSends itself (stats/repo.ts addAccepted), which knows
// the sends' tags: looking them up per event in the trigger cost batch accept 14 % here.
import { type Kysely, sql } from "kysely";

/** The counted columns, in order. */
const COUNTS = "accepted, delivered, bounced, complained, opened, clicked, failed, suppressed, unsubscribed";

/** Every counted event type; `queued` and `suppressed` are what `accepted` counts. */
const ALL_TYPES = [
  "queued",
  "suppressed",
  "delivered",
  "bounced",
  "complained",
  "opened",
  "clicked",
  "failed",
  "unsubscribed",
];

/**
 * The aggregate of `source`'s events (the new rows, or the table) of `types`, per account,
 * day and tag, for insert into `target`.
 */
function aggregate(source: string, target: string, types: string[]): string {
  return `
    insert into ${target} (account_id, day, tag, ${COUNTS})
    select ev.account_id, (ev.occurred_at at time zone 'UTC')::date, t.tag,
      count(*) filter (where ev.type in ('queued', 'suppressed')),
      count(*) filter (where ev.type = 'delivered'),
      count(*) filter (where ev.type = 'bounced'),
      count(*) filter (where ev.type = 'complained'),
      count(*) filter (where ev.type = 'opened' and ev.first),
      count(*) filter (where ev.type = 'clicked' and ev.first),
      count(*) filter (where ev.type = 'failed'),
      count(*) filter (where ev.type = 'suppressed'),
      count(*) filter (where ev.type = 'unsubscribed')
    from (
      select e.account_id, e.occurred_at, e.type, e.send_id,
        -- Unique opens and clicks: no earlier event of the type for the send.
        case when e.type in ('opened', 'clicked') then not exists (
          select 1 from email_events p where p.send_id = e.send_id and p.type = e.type and p.id < e.id)
        else true end as first
      from ${source} e
      where e.send_id is not null and e.type in (${types.map((t) => `'${t}'`).join(", ")})
    ) ev
    -- By the primary key, row by row (the limit keeps the planner from pulling the subquery
    -- up into a join): a transition table has no statistics, and the planner hash-joined it
    -- against all of sends (batch accept after the accept scenario: 14,885 → 9,064 recipients/s).
    cross join lateral (select tags from sends where id = ev.send_id limit 1) s
    cross join lateral (
      select '' as tag union all select k || ':' || v from jsonb_each_text(s.tags) as x(k, v)) t
    group by 1, 2, 3`;
}

// deno-lint-ignore no-explicit-any
export async function up(db: Kysely<any>): Promise<void> {
  const columns = COUNTS.split(", ").map((c) => `${c} bigint not null default 0`).join(", ");
  await sql.raw(`create table send_stats (
    account_id uuid not null references accounts(id) on delete cascade,
    day date not null, tag text not null, ${columns},
    primary key (account_id, tag, day))`).execute(db);
  // No key: inserts never wait on each other. Folded away every few seconds.
  await sql.raw(`create table send_stats_delta (
    account_id uuid not null references accounts(id) on delete cascade,
    day date not null, tag text not null, ${columns})`).execute(db);
  await sql`create index send_stats_delta_account on send_stats_delta (account_id, tag, day)`.execute(db);
  const counted = ALL_TYPES.filter((t) => t !== "queued" && t !== "suppressed");
  await sql.raw(`create function pp_send_stats() returns trigger language plpgsql as $$
    begin
      -- An accept's events (queued, suppressed) are counted by acceptSends: nothing to do here.
      if not exists (select 1 from new_events where type in (${counted.map((t) => `'${t}'`).join(", ")})) then
        return null;
      end if;
      ${aggregate("new_events", "send_stats_delta", counted)};
      return null;
    end $$`).execute(db);
  await sql`create trigger email_events_stats after insert on email_events
    referencing new table as new_events for each statement execute function pp_send_stats()`.execute(db);
  // What was recorded before: once, from the events still kept.
  await sql.raw(aggregate("email_events", "send_stats", ALL_TYPES)).execute(db);
}

// deno-lint-ignore no-explicit-any
export async function down(db: Kysely<any>): Promise<void> {
  await sql`drop trigger if exists email_events_stats on email_events`.execute(db);
  await sql`drop function if exists pp_send_stats()`.execute(db);
  await sql`drop table if exists send_stats_delta`.execute(db);
  await sql`drop table if exists send_stats`.execute(db);
}
