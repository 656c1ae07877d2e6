// Stats by day and tag (API.md "Message features"), kept current by the event pipeline: a
// statement trigger on email_events adds each statement's events to a rollup, set-wise, in
// the transaction that records them. A stats query then reads at most a few rows per day,
// never email_events (and the rollup outlives the events that retention deletes).
//
// Rows are per (account, UTC day, tag, shard): `tag` is '' for all of the account's sends, or
// `key:value` for each tag of the send. `shard` is the recording connection's backend pid
// modulo 8: two transactions recording events of one account at once (the API accepting, the
// worker delivering, the tracking batcher) then mostly update different rows, instead of
// queueing on one row until each other's commit. A query sums the shards.
//
// What counts: `accepted` every accepted send (its `queued` or `suppressed` event), `opened`
// and `clicked` a send's first open and click only (unique), the rest every event of its type.
import { type Kysely, sql } from "kysely";

/** The trigger function, and the backfill: the same aggregate over `source` (the new rows, or the table). */
function aggregate(source: string): string {
  return `
    insert into send_stats as st (account_id, day, tag, shard, accepted, delivered, bounced, complained, opened,
      clicked, failed, suppressed, unsubscribed)
    select ev.account_id, (ev.occurred_at at time zone 'UTC')::date, t.tag, pg_backend_pid() % 8,
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
        e.type not in ('opened', 'clicked') or not exists (
          select 1 from email_events p where p.send_id = e.send_id and p.type = e.type and p.id < e.id) as first
      from ${source} e
      where e.send_id is not null and e.type in ('queued', 'suppressed', 'delivered', 'bounced', 'complained',
        'opened', 'clicked', 'failed', 'unsubscribed')
    ) ev
    join sends s on s.id = ev.send_id
    cross join lateral (
      select '' as tag union all select k || ':' || v from jsonb_each_text(s.tags) as x(k, v)) t
    group by 1, 2, 3
    on conflict (account_id, day, tag, shard) do update set
      accepted = st.accepted + excluded.accepted, delivered = st.delivered + excluded.delivered,
      bounced = st.bounced + excluded.bounced, complained = st.complained + excluded.complained,
      opened = st.opened + excluded.opened, clicked = st.clicked + excluded.clicked,
      failed = st.failed + excluded.failed, suppressed = st.suppressed + excluded.suppressed,
      unsubscribed = st.unsubscribed + excluded.unsubscribed`;
}

// deno-lint-ignore no-explicit-any
export async function up(db: Kysely<any>): Promise<void> {
  await sql`create table send_stats (
    account_id uuid not null references accounts(id) on delete cascade,
    day date not null,
    tag text not null,
    shard smallint not null,
    accepted bigint not null default 0, delivered bigint not null default 0, bounced bigint not null default 0,
    complained bigint not null default 0, opened bigint not null default 0, clicked bigint not null default 0,
    failed bigint not null default 0, suppressed bigint not null default 0, unsubscribed bigint not null default 0,
    primary key (account_id, tag, day, shard))`.execute(db);
  await sql.raw(`create function pp_send_stats() returns trigger language plpgsql as $$
    begin
      ${aggregate("new_events")};
      return null;
    end $$`).execute(db);
  await sql`create trigger email_events_stats after insert on email_events
    referencing new table as new_events for each statement execute function pp_send_stats()`.execute(db);
  // What was recorded before: once, from the events still kept.
  await sql.raw(aggregate("email_events")).execute(db);
}

// deno-lint-ignore no-explicit-any
export async function down(db: Kysely<any>): Promise<void> {
  await sql`drop trigger if exists email_events_stats on email_events`.execute(db);
  await sql`drop function if exists pp_send_stats()`.execute(db);
  await sql`drop table if exists send_stats`.execute(db);
}
