import { pct, round, type Scenario } from "../lib.ts";
import type { Bench } from "../stack.ts";

/**
 * Stats ("stats query"): a year of a busy account — `statsN` synthetic sends (1,000,000; 100,000
 * with --quick) spread over 365 days with five tags, each with its queued, sent and delivered
 * events and an open for every fourth, loaded set-wise (one statement per table; the events'
 * statement adds to the stats through its trigger, and one more statement adds the accepted
 * sends, as acceptSends does). Then
 * `GET /api/v1/stats` for the whole year by day (365 rows), by month, and by day for one tag,
 * 20 times each, one at a time: p50 and p99 of all of them.
 * Target: p99 ≤ 100 ms.
 */
export async function statsQuery(b: Bench): Promise<Record<string, Scenario>> {
  const n = b.quick ? 100_000 : 1_000_000;
  b.log(`stats (${n.toLocaleString("en-US")} synthetic sends)`);
  const t0 = performance.now();
  const { rows: [contact] } = await b.pool.query(
    `insert into contacts (account_id, email, updated_at) values ($1, 'stats@bench.example.com', now())
     on conflict (account_id, lower(email)) do update set email = contacts.email returning id`,
    [b.accountId],
  );
  await b.pool.query(
    `insert into sends (id, contact_id, to_email, personalizations, status, message_id, account_id, template_id,
       subject, from_email, tags, track_opens, track_clicks, created_at, updated_at, sent_at, delivered_at)
     select gen_random_uuid(), $2, 'stats@bench.example.com', '{}', 'delivered', '<stats-' || i || '@bench>', $1, $3,
       'Stats', 'orders@example.com', jsonb_build_object('bench', 'stats', 'kind', 'k' || (i % 5)), true, true,
       at, at, at, at
     from (select i, now() - (i % 365) * interval '1 day' - (i % 86400) * interval '1 second' as at
           from generate_series(1, $4::int) as i) g`,
    [b.accountId, contact.id, b.templateId, n],
  );
  await b.pool.query(
    `insert into email_events (send_id, account_id, type, data, occurred_at)
     select s.id, s.account_id, e.type, '{}', s.created_at + e.after
     from sends s
     cross join lateral (values ('queued', interval '0'), ('sent', interval '1 second'),
       ('delivered', interval '2 seconds'), ('opened', interval '1 hour')) as e(type, after)
     where s.account_id = $1 and s.tags->>'bench' = 'stats'
       and (e.type <> 'opened' or hashtext(s.id::text) % 4 = 0)`,
    [b.accountId],
  );
  // What acceptSends adds for them (stats/repo.ts addAccepted): the trigger counts the rest.
  await b.pool.query(
    `insert into send_stats_delta (account_id, day, tag, accepted)
     select s.account_id, (s.created_at at time zone 'UTC')::date, t.tag, count(*)
     from sends s
     cross join lateral (select '' as tag union all select k || ':' || v from jsonb_each_text(s.tags) as x(k, v)) t
     where s.account_id = $1 and s.tags->>'bench' = 'stats'
     group by 1, 2, 3`,
    [b.accountId],
  );
  await b.pool.query("analyze");
  const loadS = (performance.now() - t0) / 1000;
  const today = new Date().toISOString().slice(0, 10);
  const yearAgo = new Date(Date.now() - 365 * 86_400_000).toISOString().slice(0, 10);
  const queries = [
    `from=${yearAgo}&to=${today}&interval=day`,
    `from=${yearAgo}&to=${today}&interval=month`,
    `from=${yearAgo}&to=${today}&interval=day&tag=kind:k3`,
  ];
  const lat: number[] = [];
  let accepted = 0;
  for (let round = 0; round < 21; round++) {
    for (const q of queries) {
      const t = performance.now();
      const r = await b.api("GET", `/api/v1/stats?${q}`);
      if (r.status !== 200) throw new Error(`stats: ${r.status} ${JSON.stringify(r.body)}`);
      // The first round warms the caches and the JIT; it is not counted.
      if (round > 0) lat.push(performance.now() - t);
      if (round === 0 && q.endsWith("interval=day")) {
        accepted = r.body.data.reduce((s: number, x: { accepted: number }) => s + x.accepted, 0);
      }
    }
  }
  const p99 = pct(lat, 99);
  return {
    "stats query": {
      value: round(p99, 1),
      unit: "ms p99, a year by day, by month and for one tag",
      target: "≤ 100 ms",
      pass: p99 <= 100 && accepted >= n,
      details: {
        synthetic_sends: n,
        accepted_counted: accepted,
        p50_ms: round(pct(lat, 50), 1),
        load_s: round(loadS, 1),
        queries: lat.length,
      },
    },
  };
}
