/** SQL for stats: reads of the rollup and its unfolded deltas, and the fold (migration 0016). */
import { type Kysely, sql } from "kysely";
import type { Database } from "../db/tables.ts";
import type { StatsInterval } from "./inputs.ts";

/** One period's counts, summed over the rollup's shards. */
export interface StatsCounts {
  period: string;
  accepted: number;
  delivered: number;
  bounced: number;
  complained: number;
  opened: number;
  clicked: number;
  failed: number;
  suppressed: number;
  unsubscribed: number;
}

/**
 * Every period from `from`'s to `to`'s (empty ones as zeros), oldest first: the rollup rows of
 * the account and tag ('' for all sends) in the range, by their primary key, and the deltas
 * not folded yet (a few seconds' worth), by their index.
 */
export async function statsByPeriod(
  db: Kysely<Database>,
  accountId: string,
  q: { from: string; to: string; interval: StatsInterval; tag: string },
): Promise<StatsCounts[]> {
  const step = `1 ${q.interval}`;
  const r = await sql<StatsCounts>`
    with rolled as (
      select date_trunc(${q.interval}, day)::date as period, sum(accepted) as accepted, sum(delivered) as delivered,
        sum(bounced) as bounced, sum(complained) as complained, sum(opened) as opened, sum(clicked) as clicked,
        sum(failed) as failed, sum(suppressed) as suppressed, sum(unsubscribed) as unsubscribed
      from (
        select * from send_stats
        where account_id = ${accountId}::uuid and tag = ${q.tag} and day between ${q.from}::date and ${q.to}::date
        union all
        select * from send_stats_delta
        where account_id = ${accountId}::uuid and tag = ${q.tag} and day between ${q.from}::date and ${q.to}::date
      ) rows
      group by 1)
    select to_char(p.period, 'YYYY-MM-DD') as period,
      coalesce(r.accepted, 0)::int as accepted, coalesce(r.delivered, 0)::int as delivered,
      coalesce(r.bounced, 0)::int as bounced, coalesce(r.complained, 0)::int as complained,
      coalesce(r.opened, 0)::int as opened, coalesce(r.clicked, 0)::int as clicked,
      coalesce(r.failed, 0)::int as failed, coalesce(r.suppressed, 0)::int as suppressed,
      coalesce(r.unsubscribed, 0)::int as unsubscribed
    from generate_series(date_trunc(${q.interval}, ${q.from}::date), ${q.to}::date, ${step}::interval) as p(period)
    left join rolled r on r.period = p.period::date
    order by p.period`.execute(db);
  return r.rows;
}

/** The counted columns of send_stats and send_stats_delta. */
const COUNTS = [
  "accepted",
  "delivered",
  "bounced",
  "complained",
  "opened",
  "clicked",
  "failed",
  "suppressed",
  "unsubscribed",
];

/**
 * Moves every delta into the rollup in one statement (taken and summed per account, day and
 * tag); the rows it took are gone, those inserted meanwhile wait for the next fold. Returns
 * how many delta rows were folded.
 */
export async function foldDeltas(db: Kysely<Database>): Promise<number> {
  const sums = sql.raw(COUNTS.map((c) => `sum(${c})`).join(", "));
  const cols = sql.raw(COUNTS.join(", "));
  const adds = sql.raw(COUNTS.map((c) => `${c} = st.${c} + excluded.${c}`).join(", "));
  const r = await sql<{ n: number }>`
    with taken as (delete from send_stats_delta returning *),
    folded as (
      insert into send_stats as st (account_id, day, tag, ${cols})
      select account_id, day, tag, ${sums} from taken group by 1, 2, 3
      on conflict (account_id, tag, day) do update set ${adds})
    select count(*)::int as n from taken`.execute(db);
  return r.rows[0].n;
}

/** Queues the `fold_stats` task in `delayS` seconds under its one job key (adding it again replaces the waiting run). */
export async function queueFold(db: Kysely<Database>, delayS: number): Promise<void> {
  await sql`select graphile_worker.add_job('fold_stats', '{}'::json,
    run_at := now() + make_interval(secs => ${delayS}), job_key := 'fold_stats')`.execute(db);
}

/** Sends accepted in this transaction, per account and tag (every send counts under '' too). */
export interface AcceptedCount {
  accountId: string;
  tags: Record<string, string>;
  accepted: number;
  suppressed: number;
}

/**
 * Adds accepted sends to the stats deltas (today, UTC, by the transaction's clock), in the
 * accepting transaction: one insert for all of `counts`, summed per account and tag.
 */
export async function addAccepted(db: Kysely<Database>, counts: AcceptedCount[]): Promise<void> {
  const rows = new Map<string, { accountId: string; tag: string; accepted: number; suppressed: number }>();
  for (const c of counts) {
    for (const tag of ["", ...Object.entries(c.tags).map(([k, v]) => `${k}:${v}`)]) {
      const key = `${c.accountId}|${tag}`;
      const r = rows.get(key) ?? { accountId: c.accountId, tag, accepted: 0, suppressed: 0 };
      r.accepted += c.accepted;
      r.suppressed += c.suppressed;
      rows.set(key, r);
    }
  }
  if (rows.size === 0) return;
  const list = [...rows.values()];
  await sql`insert into send_stats_delta (account_id, day, tag, accepted, suppressed)
    select a, (now() at time zone 'UTC')::date, t, n, sup
    from unnest(${list.map((r) => r.accountId)}::uuid[], ${list.map((r) => r.tag)}::text[],
      ${list.map((r) => r.accepted)}::int[], ${list.map((r) => r.suppressed)}::int[]) as u(a, t, n, sup)`.execute(db);
}
