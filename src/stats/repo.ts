/** SQL for stats: reads of the send_stats rollup (migration 0016 keeps it current). */
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
 * the account and tag ('' for all sends) in the range, by their primary key.
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
      from send_stats
      where account_id = ${accountId}::uuid and tag = ${q.tag} and day between ${q.from}::date and ${q.to}::date
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
