// The reputation check's counts (accounts/repo.ts reputationCounts) from an hourly rollup,
// not from a scan of the window's sends: at 5,000,000 sends the scan of a busy account's 7
// days took 200 ms (3.75 ms with none), growing with the account's volume.
//
// Rows are per (account, hour of the send's creation, UTC): live sends that went out (status
// sent, delivered or bounced; never sandbox), how many of them bounced hard (status bounced),
// and how many drew a complaint (their first `complained` event, recorded once the send went
// out). Row triggers add a delta row at each change of those: a send's status entering or
// leaving the set, or bounced, and a send's first complaint. They fire only on such a change
// (WHEN), about once per email. Like send_stats (0016) the triggers only insert, into
// reputation_delta without a key: an upsert into the account's hour row would hold its lock
// to the commit, so every transaction recording that account's outcomes would wait for the
// one before. The fold_stats task moves the deltas into reputation_hours every few seconds;
// the check reads both.
//
// The window starts inside an hour (now minus 7 days, or ops' resume): that first hour is
// counted from the sends themselves, the later ones from the rollup.
import { type Kysely, sql } from "kysely";

/** The statuses of a send that went out: what the check counts. */
const OUT = "('sent', 'delivered', 'bounced')";

/** The hour (UTC) a row is counted in, of a `created_at` timestamptz. */
export const HOUR = (ts: string) => `date_bin('1 hour', ${ts}, timestamptz '2000-01-01 00:00:00+00')`;

// deno-lint-ignore no-explicit-any
export async function up(db: Kysely<any>): Promise<void> {
  await sql.raw(`create table reputation_hours (
    account_id uuid not null references accounts(id) on delete cascade,
    hour timestamptz not null,
    sends integer not null default 0, bounces integer not null default 0, complaints integer not null default 0,
    primary key (account_id, hour))`).execute(db);
  await sql.raw(`create table reputation_delta (
    account_id uuid not null references accounts(id) on delete cascade,
    hour timestamptz not null,
    sends integer not null default 0, bounces integer not null default 0, complaints integer not null default 0)`)
    .execute(db);
  await sql`create index reputation_delta_account on reputation_delta (account_id, hour)`.execute(db);

  // A send's contribution changed: its status into, out of or within the counted set (old is
  // null on insert), or the send moved (its creation time, account or sandbox flag; the app
  // never does that, the tests move rows back in time). Each delta is new minus old; a send
  // that moved takes its complaint along.
  await sql.raw(`create function pp_reputation_send() returns trigger language plpgsql as $$
    declare
      old_out int := 0;
      old_bounced int := 0;
      new_out int := (not new.sandbox and new.status in ${OUT})::int;
      new_bounced int := (not new.sandbox and new.status = 'bounced')::int;
      complained int;
    begin
      if tg_op = 'UPDATE' then
        old_out := (not old.sandbox and old.status in ${OUT})::int;
        old_bounced := (not old.sandbox and old.status = 'bounced')::int;
        if (old.created_at, old.account_id) is distinct from (new.created_at, new.account_id) then
          complained := (exists (select 1 from email_events e where e.send_id = new.id and e.type = 'complained'))::int;
          insert into reputation_delta (account_id, hour, sends, bounces, complaints) values
            (old.account_id, ${HOUR("old.created_at")}, -old_out, -old_bounced, -old_out * complained),
            (new.account_id, ${HOUR("new.created_at")}, new_out, new_bounced, new_out * complained);
          return null;
        end if;
      end if;
      if new_out <> old_out or new_bounced <> old_bounced then
        insert into reputation_delta (account_id, hour, sends, bounces)
        values (new.account_id, ${HOUR("new.created_at")}, new_out - old_out, new_bounced - old_bounced);
      end if;
      return null;
    end $$`).execute(db);
  await sql.raw(`create trigger sends_reputation_update after update of status, created_at, account_id, sandbox on sends
    for each row when ((old.status in ${OUT} or new.status in ${OUT})
      and (old.status, old.created_at, old.account_id, old.sandbox)
        is distinct from (new.status, new.created_at, new.account_id, new.sandbox))
    execute function pp_reputation_send()`).execute(db);
  await sql.raw(`create trigger sends_reputation_insert after insert on sends for each row
    when (new.status in ${OUT} and not new.sandbox)
    execute function pp_reputation_send()`).execute(db);

  // A send's first complaint, when the send counts.
  await sql.raw(`create function pp_reputation_complaint() returns trigger language plpgsql as $$
    begin
      insert into reputation_delta (account_id, hour, complaints)
      select s.account_id, ${HOUR("s.created_at")}, 1 from sends s
      where s.id = new.send_id and not s.sandbox and s.status in ${OUT}
        and not exists (select 1 from email_events e
          where e.send_id = new.send_id and e.type = 'complained' and e.id < new.id);
      return null;
    end $$`).execute(db);
  await sql.raw(`create trigger email_events_reputation after insert on email_events for each row
    when (new.type = 'complained' and new.send_id is not null)
    execute function pp_reputation_complaint()`).execute(db);

  // The last 8 days as they stand (older sends are outside every window). The triggers are in
  // place in this transaction already, and writers of sends wait for its commit.
  await sql.raw(`insert into reputation_hours (account_id, hour, sends, bounces, complaints)
    select s.account_id, ${HOUR("s.created_at")}, count(*), count(*) filter (where s.status = 'bounced'),
      count(*) filter (where exists (select 1 from email_events e where e.send_id = s.id and e.type = 'complained'))
    from sends s
    where s.created_at >= now() - interval '8 days' and not s.sandbox and s.status in ${OUT}
    group by 1, 2`).execute(db);
}

// deno-lint-ignore no-explicit-any
export async function down(db: Kysely<any>): Promise<void> {
  await sql`drop trigger if exists email_events_reputation on email_events`.execute(db);
  await sql`drop trigger if exists sends_reputation_insert on sends`.execute(db);
  await sql`drop trigger if exists sends_reputation_update on sends`.execute(db);
  await sql`drop function if exists pp_reputation_complaint()`.execute(db);
  await sql`drop function if exists pp_reputation_send()`.execute(db);
  await sql`drop table if exists reputation_delta`.execute(db);
  await sql`drop table if exists reputation_hours`.execute(db);
}
