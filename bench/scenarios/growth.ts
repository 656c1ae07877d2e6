import type { Kysely } from "kysely";
import { foldReputation, reputationCounts } from "../../src/accounts/repo.ts";
import type { Deps } from "../../src/context.ts";
import { openDb } from "../../src/db/database.ts";
import type { Database } from "../../src/db/tables.ts";
import { encodeCursor } from "../../src/pagination.ts";
import { runRetention } from "../../src/retention/service.ts";
import { CONNECTIONS, load, pct, round, type Scenario, warmUp } from "../lib.ts";
import { type Bench, sendRequest } from "../stack.ts";

/** Accounts the data is spread over; the bench's own is one of them. */
const ACCOUNTS = 100;
/** Days the data is spread over (inside the 30-day retention). */
const DAYS = 29;
/** Sends of the day past retention that each level adds for the retention figure: the same at every level. */
const EXPIRED_DAY = 20_000;
/** Calls per figure measured one at a time (reputation, retention is once). */
const CALLS = 30;

/** A level's figures. */
interface Figures {
  accept_rps: number;
  accept_p99_ms: number;
  list_first_p99_ms: number;
  list_deep_p99_ms: number;
  get_p99_ms: number;
  reputation_ms: number;
  retention_ms: number;
}

const FIGURES: { key: keyof Figures; unit: string; higherIsBetter?: true }[] = [
  { key: "accept_rps", unit: "sends/s", higherIsBetter: true },
  { key: "accept_p99_ms", unit: "ms p99" },
  { key: "list_first_p99_ms", unit: "ms p99" },
  { key: "list_deep_p99_ms", unit: "ms p99" },
  { key: "get_p99_ms", unit: "ms p99" },
  { key: "reputation_ms", unit: "ms p50" },
  { key: "retention_ms", unit: "ms" },
];

/**
 * How the cost grows with the data ("growth", issue 17): with 0, 1,000,000 and 5,000,000
 * existing sends (100,000 and 500,000 with --quick), each with its queued, sent and delivered
 * (or bounced) events, spread over DAYS days and ACCOUNTS accounts (the bench's own among
 * them, holding 1%), loaded set-wise with one statement per table per level, it measures at
 * each level: single-send accept (CONNECTIONS connections, half the load time) sends/s and
 * p99; `GET /api/v1/sends` first page and a cursor page half-way down the account's sends,
 * and `GET /api/v1/sends/:id` of random sends, p99 of each (autocannon, 8 connections, 5 s);
 * each load after a 2 s warm-up;
 * the reputation check's counts of the bench account (p50 of CALLS); and the retention run
 * for one day of data past the window (EXPIRED_DAY sends and their events, the same at every
 * level, over all the accounts). Target: no figure at the last level worse than 1.5× its
 * figure at 0. Runs on a stack of its own: the data would weigh on every other scenario.
 */
export async function growth(b: Bench): Promise<Record<string, Scenario>> {
  const levels = b.quick ? [0, 100_000, 500_000] : [0, 1_000_000, 5_000_000];
  const { db, pool } = openDb(b.config.databaseUrl!, 4);
  try {
    const accounts = await createAccounts(b);
    const figures: Figures[] = [];
    const loads: number[] = [];
    let have = 0;
    for (const level of levels) {
      const t0 = performance.now();
      if (level > have) await loadSends(b, db, accounts, have, level - have);
      loads.push(round((performance.now() - t0) / 1000, 1));
      have = level;
      b.log(`growth: ${level.toLocaleString("en-US")} sends (loaded in ${loads.at(-1)} s)`);
      figures.push(await measureLevel(b, db, accounts, level));
    }
    b.log(`growth: the reputation check's plan at ${have.toLocaleString("en-US")} sends:\n${await reputationPlan(b)}`);
    const [first, last] = [figures[0], figures.at(-1)!];
    const rows: Record<string, Scenario> = {};
    for (const f of FIGURES) {
      const ratio = f.higherIsBetter ? first[f.key] / last[f.key] : last[f.key] / first[f.key];
      rows[`growth ${f.key}`] = {
        value: last[f.key],
        unit: `${f.unit} at ${levels.at(-1)!.toLocaleString("en-US")} sends`,
        target: "≤ 1.5× worse than at 0 sends",
        baseline: first[f.key],
        ratio: round(ratio, 2),
        pass: ratio <= 1.5,
        details: Object.fromEntries(
          levels.map((l, i) => [`at_${l >= 1e6 ? `${l / 1e6}M` : `${l / 1e3}k`}`, figures[i][f.key]]),
        ),
      };
    }
    rows["growth ratio"] = {
      value: round(Math.max(...Object.values(rows).map((r) => r.ratio ?? 0)), 2),
      unit: "the worst figure's ratio, 5M over 0",
      target: "≤ 1.5",
      pass: Object.values(rows).every((r) => r.pass),
      details: { load_s: loads.join(" / ") },
    };
    return rows;
  } finally {
    await db.destroy().catch(() => {});
    await pool.end().catch(() => {});
  }
}

/** ACCOUNTS account ids, the bench's first: the others made here, each with a verified domain. */
async function createAccounts(b: Bench): Promise<string[]> {
  const { rows } = await b.pool.query<{ id: string }>(
    `insert into accounts (name, monthly_limit) select 'growth ' || i, null from generate_series(2, $1::int) as i
     returning id`,
    [ACCOUNTS],
  );
  return [b.accountId, ...rows.map((r) => r.id)];
}

/**
 * `n` sends numbered `from`… with their contacts (one per five sends) and events, in one
 * statement per table. Send i belongs to contact i % (n/5), and contact j to account j % ACCOUNTS.
 */
async function loadSends(b: Bench, db: Kysely<Database>, accounts: string[], from: number, n: number): Promise<void> {
  const contacts = Math.ceil(n / 5);
  const level = `${from}`;
  await b.pool.query(
    `insert into contacts (id, account_id, email, updated_at)
     select md5('growth-contact-' || $1 || '-' || j)::uuid, ($2::uuid[])[j % $3 + 1],
       'g' || $1 || '-' || j || '@growth.example.com', now()
     from generate_series(0, $4::int - 1) as j`,
    [level, accounts, ACCOUNTS, contacts],
  );
  // Statuses as a busy account has them: 90% delivered, 5% bounced, 5% sent, in every account
  // alike (by i / 100, while the account goes by i % 100: 5% bounces stays below the pause).
  await b.pool.query(
    `insert into sends (id, contact_id, to_email, personalizations, status, message_id, account_id, template_id,
       subject, from_email, tags, track_opens, track_clicks, created_at, updated_at, sent_at, delivered_at, bounced_at)
     select md5('growth-send-' || $1 || '-' || i)::uuid, md5('growth-contact-' || $1 || '-' || (i % $4))::uuid,
       'g' || $1 || '-' || (i % $4) || '@growth.example.com', '{"order_id":"G-1"}',
       st, '<g' || $1 || '-' || i || '@growth>', ($2::uuid[])[(i % $4) % $3 + 1], $5,
       'Order G-1 confirmed', 'orders@example.com', '{"bench":"growth"}', true, true,
       at, at, at, case when st = 'delivered' then at end, case when st = 'bounced' then at end
     from (select i, now() - interval '1 hour' - (i % ($6::int * 86400)) * interval '1 second' as at,
             case (i / 100) % 20 when 0 then 'bounced' when 1 then 'sent' else 'delivered' end as st
           from generate_series(0, $7::int - 1) as i) g`,
    [level, accounts, ACCOUNTS, contacts, b.templateId, DAYS, n],
  );
  await b.pool.query(
    `insert into email_events (send_id, account_id, type, data, occurred_at)
     select s.id, s.account_id, e.type, '{}', s.created_at + e.after
     from sends s
     cross join lateral (values ('queued', interval '0'), ('sent', interval '1 second'),
       (case s.status when 'bounced' then 'bounced' when 'delivered' then 'delivered' end, interval '2 seconds'))
       as e(type, after)
     where s.message_id like '<g' || $1 || '-%' and e.type is not null`,
    [level],
  );
  // The reputation deltas of the load folded, as the service's fold_stats task does within
  // seconds (a load of millions would otherwise be folded during the measurement); then what
  // autovacuum would do after such a load, done before measuring rather than during it; and
  // the dirty pages written, so that a checkpoint does not land in the measurement.
  await foldReputation(db);
  await b.pool.query("vacuum (analyze) contacts, sends, email_events, reputation_delta, reputation_hours");
  await b.pool.query("checkpoint");
}

/** The figures of one level (see growth). */
async function measureLevel(b: Bench, db: Kysely<Database>, accounts: string[], level: number): Promise<Figures> {
  const probe = await b.api("POST", "/api/v1/sends", { templateId: b.templateId, to: b.uniq("growth-probe") });
  if (probe.status !== 202) throw new Error(`growth: a send answered ${probe.status} ${JSON.stringify(probe.body)}`);
  const acceptOpts = {
    url: b.base,
    connections: CONNECTIONS,
    duration: Math.max(3, b.loadS / 2),
    requests: [sendRequest(b, `growth-${level}`, { scheduledAt: b.later() })],
  };
  // Each load after a warm-up: the first requests after a load of millions of rows read cold pages.
  await warmUp(acceptOpts, 202);
  const accept = await load(acceptOpts, 202);
  const { rows: [{ n }] } = await b.pool.query<{ n: number }>(
    `select count(*)::int as n from sends where account_id = $1`,
    [b.accountId],
  );
  const { rows: [mid] } = await b.pool.query<{ created_at: Date; id: string }>(
    `select created_at, id from sends where account_id = $1 order by created_at desc, id desc offset $2 limit 1`,
    [b.accountId, Math.floor(n / 2)],
  );
  const { rows: sample } = await b.pool.query<{ id: string }>(
    `select id from sends where account_id = $1 order by random() limit 1000`,
    [b.accountId],
  );
  const read = async (path: () => string) => {
    const opts = {
      url: b.base,
      connections: 8,
      duration: 5,
      requests: [{
        method: "GET",
        headers: b.auth,
        setupRequest: (r: Record<string, unknown>) => ({ ...r, path: path() }),
      }],
    };
    await warmUp(opts, 200);
    return await load(opts, 200);
  };
  const first = await read(() => "/api/v1/sends?limit=50");
  const deep = await read(() => `/api/v1/sends?limit=50&cursor=${encodeCursor(mid)}`);
  const get = await read(() => `/api/v1/sends/${sample[Math.floor(Math.random() * sample.length)].id}`);
  const rep: number[] = [];
  for (let i = 0; i < CALLS; i++) {
    const t = performance.now();
    await reputationCounts(db, b.accountId, 7);
    rep.push(performance.now() - t);
  }
  const retention = await expiredDayRetention(b, db, accounts, level);
  return {
    accept_rps: round(accept.rps),
    accept_p99_ms: accept.p99,
    list_first_p99_ms: first.p99,
    list_deep_p99_ms: deep.p99,
    get_p99_ms: get.p99,
    reputation_ms: round(pct(rep, 50), 2),
    retention_ms: retention,
  };
}

/** Adds EXPIRED_DAY delivered sends (with events) 31 days old over the accounts, and times the retention run that removes them. */
async function expiredDayRetention(b: Bench, db: Kysely<Database>, accounts: string[], level: number) {
  const tag = `x${level}`;
  await b.pool.query(
    `insert into contacts (id, account_id, email, updated_at)
     select md5('growth-xcontact-' || $1 || '-' || j)::uuid, ($2::uuid[])[j % $3 + 1],
       'gx' || $1 || '-' || j || '@growth.example.com', now()
     from generate_series(0, $3::int - 1) as j`,
    [tag, accounts, ACCOUNTS],
  );
  await b.pool.query(
    `with s as (
       insert into sends (id, contact_id, to_email, personalizations, status, message_id, account_id, template_id,
         subject, from_email, tags, track_opens, track_clicks, created_at, updated_at, sent_at, delivered_at)
       select md5('growth-xsend-' || $1 || '-' || i)::uuid, md5('growth-xcontact-' || $1 || '-' || (i % $3))::uuid,
         'gx' || $1 || '-' || (i % $3) || '@growth.example.com', '{}', 'delivered', '<gx' || $1 || '-' || i || '@growth>',
         ($2::uuid[])[i % $3 + 1], $4, 'Old', 'orders@example.com', '{}', true, true, at, at, at, at
       from (select i, now() - interval '31 days' - (i % 86400) * interval '1 second' as at
             from generate_series(0, $5::int - 1) as i) g
       returning id, account_id, created_at)
     insert into email_events (send_id, account_id, type, data, occurred_at)
     select s.id, s.account_id, e.type, '{}', s.created_at from s
     cross join (values ('queued'), ('sent'), ('delivered')) as e(type)`,
    [tag, accounts, ACCOUNTS, b.templateId, EXPIRED_DAY],
  );
  await b.pool.query("analyze sends");
  const quiet = { debug() {}, info() {}, warn() {}, error() {} };
  const report = await runRetention({ db, config: b.config, log: quiet } as unknown as Deps);
  if (report.sends < EXPIRED_DAY) throw new Error(`retention removed ${report.sends} sends, not ${EXPIRED_DAY}`);
  return round(report.ms);
}

/**
 * The reputation check's plan with its timings, as Postgres ran it (auto_explain, whose LOG
 * line comes back to this client as a notice): the query is the service's own, not a copy.
 */
async function reputationPlan(b: Bench): Promise<string> {
  const settings = "-c session_preload_libraries=auto_explain -c auto_explain.log_min_duration=0 " +
    "-c auto_explain.log_analyze=on -c auto_explain.log_buffers=on -c client_min_messages=log";
  const url = new URL(b.config.databaseUrl!);
  url.searchParams.set("options", settings);
  const { db, pool } = openDb(url.toString(), 1);
  const plans: string[] = [];
  pool.on("connect", (c) => c.on("notice", (n) => plans.push(n.message ?? "")));
  try {
    await reputationCounts(db, b.accountId, 7);
    return plans.filter((p) => p.includes("live")).join("\n") || "(no plan came back)";
  } finally {
    await db.destroy().catch(() => {});
  }
}
