/**
 * `deno task bench [--quick]`: the service measured against its own limits (issue: performance).
 *
 * It starts its own stack — the service as `deno task start` runs it, in a child process on a fresh
 * database (DATABASE_URL's server when set, else an embedded Postgres), and an SMTP sink in
 * another process (postfix's `smtp-sink` when installed, else npm smtp-server under Deno) —
 * runs each scenario next to a raw baseline measured in the same run (these machines are
 * shared, so a ratio says more than an absolute time), prints a table and writes
 * bench/results.json. Load comes from autocannon (npm) in this process, never from the
 * service's own event loop. `--quick` shortens every phase (≤ 90 s in all).
 *
 * The scenarios and their targets are in SCENARIOS below; the README's Performance section
 * is a copy of the table this prints.
 */
import autocannon from "autocannon";
import nodemailer from "nodemailer";
import pg from "pg";
import { run as runWorker } from "graphile-worker";
import { loadConfig } from "../src/config.ts";
import { runnerSettings } from "../src/jobs/worker.ts";
import { trackingUrls } from "../src/mail/tracking.ts";
import { noDelaySocket } from "../src/mail/transport.ts";
import { GIF } from "../src/events/tracking_http.ts";
import { dropDatabase, freshDatabase, startTaskFlags } from "../tests/helpers.ts";
import { startSinkProcess } from "./sink_process.ts";

const QUICK = Deno.args.includes("--quick");
/** `--profile <dir>`: the service writes a V8 CPU profile there when it stops (Deno's --cpu-prof). */
/** `--only drain,tracking`: run just these scenarios (accept, batch, lateness, drain, jobs, latency, tracking, graphql). */
const ONLY = Deno.args.includes("--only") ? Deno.args[Deno.args.indexOf("--only") + 1].split(",") : null;
const want = (name: string) => ONLY === null || ONLY.includes(name);
const PROFILE_DIR = Deno.args.includes("--profile") ? Deno.args[Deno.args.indexOf("--profile") + 1] : undefined;
/** Seconds of load per HTTP measurement. */
const LOAD_S = QUICK ? 4 : 10;
/** Sends in the delivery drain and no-op jobs in the job-overhead scenario. */
const DRAIN_N = QUICK ? 5_000 : 20_000;
/** Seconds of the fixed-rate latency scenario. */
const LATENCY_S = QUICK ? 8 : 30;
const LATENCY_RATE = 200;
const SCHEDULED_N = 1_000;
const CONNECTIONS = 32;
/** `--workers N`: N more service processes with PP_ROLE=worker beside the first (horizontal scaling). */
const EXTRA_WORKERS = Deno.args.includes("--workers") ? Number(Deno.args[Deno.args.indexOf("--workers") + 1]) : 0;
/** Settings passed on to the service when set in the bench's environment. */
const TUNABLES = ["PP_WORKER_CONCURRENCY", "PP_WORKER_POLL_MS", "PP_SMTP_POOL_SIZE", "PP_DB_POOL_SIZE"];

/** One row of results.json. */
interface Scenario {
  value: number;
  unit: string;
  target: string;
  baseline?: number;
  ratio?: number;
  pass: boolean;
  /** What else was measured (percentiles, counts), for the table. */
  details: Record<string, number | string>;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const round = (n: number, d = 0) => Math.round(n * 10 ** d) / 10 ** d;
const freePort = () => 40_000 + Math.floor(Math.random() * 9_000);

function pct(xs: number[], p: number): number {
  if (xs.length === 0) return NaN;
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.ceil(p / 100 * s.length) - 1)];
}

/** autocannon's figures for one load: answers with `expect`/s over the run, latency percentiles in ms. */
interface Load {
  ok: number;
  other: number;
  rps: number;
  p50: number;
  p99: number;
}

async function load(opts: autocannon.Options, expect: number): Promise<Load> {
  const r = await autocannon(opts);
  const codes = r.statusCodeStats as unknown as Record<string, { count: number }>;
  const ok = codes?.[String(expect)]?.count ?? 0;
  const seconds = r.duration || Number(opts.duration);
  return {
    ok,
    other: r.requests.total - ok + r.errors + r.timeouts,
    rps: ok / seconds,
    p50: r.latency.p50,
    p99: r.latency.p99,
  };
}

/** Loads of equal length as one: answers summed, rates averaged, the median p50 and the worst p99. */
function combine(loads: Load[]): Load {
  return {
    ok: loads.reduce((n, l) => n + l.ok, 0),
    other: loads.reduce((n, l) => n + l.other, 0),
    rps: loads.reduce((n, l) => n + l.rps, 0) / loads.length,
    p50: pct(loads.map((l) => l.p50), 50),
    p99: Math.max(...loads.map((l) => l.p99)),
  };
}

/** Runs `fn` from `workers` loops for `seconds`; how many ran and each one's latency. */
async function closedLoop(workers: number, seconds: number, fn: () => Promise<void>) {
  const lat: number[] = [];
  const until = performance.now() + seconds * 1000;
  const t0 = performance.now();
  await Promise.all(Array.from({ length: workers }, async () => {
    while (performance.now() < until) {
      const t = performance.now();
      await fn();
      lat.push(performance.now() - t);
    }
  }));
  return { n: lat.length, seconds: (performance.now() - t0) / 1000, lat };
}

/** CPU seconds (user + system, all threads) used so far by each process, keyed by pid; and each one's command name and parent. */
async function cpuTimes(): Promise<Map<number, { comm: string; s: number; ppid: number }>> {
  const out = new Map<number, { comm: string; s: number; ppid: number }>();
  for await (const e of Deno.readDir("/proc")) {
    if (!/^\d+$/.test(e.name)) continue;
    try {
      const stat = await Deno.readTextFile(`/proc/${e.name}/stat`);
      const close = stat.lastIndexOf(")");
      const f = stat.slice(close + 2).split(" "); // from field 3 (state) on
      out.set(Number(e.name), {
        comm: stat.slice(stat.indexOf("(") + 1, close),
        s: (Number(f[11]) + Number(f[12])) / 100,
        ppid: Number(f[1]),
      });
    } catch { /* the process ended */ }
  }
  return out;
}

/**
 * Where the machine's CPU went during a scenario, as % of one core over its wall time: the
 * service, Postgres (every `postgres` process), the SMTP sink and this process (the load
 * generator and the baselines). On 2 cores, 200% in all is a saturated machine.
 */
function cpuMeter(pids: { service: number[]; sink: number }) {
  let t0 = performance.now();
  let before = new Map<number, { comm: string; s: number; ppid: number }>();
  return {
    async start() {
      before = await cpuTimes();
      t0 = performance.now();
    },
    async stop(): Promise<Record<string, number>> {
      const after = await cpuTimes();
      const wall = (performance.now() - t0) / 1000;
      const used = (pick: (pid: number, comm: string, ppid: number) => boolean) => {
        let s = 0;
        for (const [pid, a] of after) if (pick(pid, a.comm, a.ppid)) s += a.s - (before.get(pid)?.s ?? 0);
        return Math.round(s / wall * 100);
      };
      return {
        cpu_service_pct: used((pid) => pids.service.includes(pid)),
        // The service's children: its render sandboxes (mail/render.ts).
        cpu_render_pct: used((_, __, ppid) => pids.service.includes(ppid)),
        cpu_postgres_pct: used((_, comm) => comm === "postgres"),
        cpu_sink_pct: used((pid) => pid === pids.sink),
        cpu_bench_pct: used((pid) => pid === Deno.pid),
      };
    },
  };
}

/** Resident memory of a process in MB: now (VmRSS) and its peak so far (VmHWM). */
async function rssOf(pid: number): Promise<{ rss: number; hwm: number }> {
  const s = await Deno.readTextFile(`/proc/${pid}/status`);
  const kb = (k: string) => Number(s.match(new RegExp(`${k}:\\s+(\\d+)`))?.[1] ?? 0);
  return { rss: kb("VmRSS") / 1024, hwm: kb("VmHWM") / 1024 };
}

async function main() {
  const started = performance.now();
  const scenarios: Record<string, Scenario> = {};
  const sink = await startSinkProcess();
  const serverUrl = Deno.env.get("DATABASE_URL");
  const databaseUrl = await freshDatabase(); // DATABASE_URL's server, else an embedded Postgres
  const dataDir = await Deno.makeTempDir({ prefix: "pp-bench-" });
  const port = freePort();
  const secret = crypto.randomUUID() + crypto.randomUUID();
  const adminToken = crypto.randomUUID();
  const env: Record<string, string> = {
    DATABASE_URL: databaseUrl,
    PORT: String(port),
    HOST: "127.0.0.1",
    PP_DATA_DIR: dataDir,
    PP_SEED: "true",
    PP_SECRET: secret,
    PP_ADMIN_TOKEN: adminToken,
    SMTP_URL: `smtp://127.0.0.1:${sink.port}`,
    PP_LOG_LEVEL: "warn",
    // The load is one API key at full speed: the per-key limit would measure itself.
    PP_RATE_LIMIT: "1000000:1000000",
    // Tuning under test may be given to the bench (PP_WORKER_CONCURRENCY=… deno task bench).
    ...Object.fromEntries(TUNABLES.flatMap((k) => Deno.env.get(k) ? [[k, Deno.env.get(k)!]] : [])),
  };
  // Everything else is the service's defaults, as `deno task start` runs it.
  const config = loadConfig(env);
  const startFlags = await startTaskFlags();
  const child = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      ...startFlags,
      ...(PROFILE_DIR ? ["--cpu-prof", `--cpu-prof-dir=${PROFILE_DIR}`] : []),
      new URL("../main.ts", import.meta.url).pathname,
    ],
    env,
    stdout: "null",
    stderr: "inherit",
  }).spawn();
  const base = `http://127.0.0.1:${port}`;
  const workers = Array.from({ length: EXTRA_WORKERS }, (_, i) =>
    new Deno.Command(Deno.execPath(), {
      args: ["run", ...startFlags, new URL("../main.ts", import.meta.url).pathname],
      env: { ...env, PP_ROLE: "worker", PORT: String(port + 1 + i), PP_SEED: "false" },
      stdout: "null",
      stderr: "inherit",
    }).spawn());
  for (let i = 0;; i++) {
    const ok = await fetch(`${base}/healthz`).then((r) => (r.body?.cancel(), r.ok), () => false);
    if (ok) break;
    if (i > 600) throw new Error("the service did not become healthy within 60 s");
    await sleep(100);
  }
  const pool = new pg.Pool({ connectionString: databaseUrl, max: config.dbPoolSize });
  pool.on("error", (err) => console.error("bench pool:", err.message));
  const cpu = cpuMeter({ service: [child.pid, ...workers.map((w) => w.pid)], sink: sink.pid });

  // --- Setup through the API: a live key (ops) and a tracked template with two links. ---
  const { rows: [account] } = await pool.query<{ id: string }>("select id from accounts limit 1");
  const gql = async (query: string, variables: unknown, auth: Record<string, string>) => {
    const r = await fetch(`${base}/graphql`, {
      method: "POST",
      headers: { "content-type": "application/json", ...auth },
      body: JSON.stringify({ query, variables }),
    });
    const body = await r.json();
    if (body.errors) throw new Error(JSON.stringify(body.errors));
    return body.data;
  };
  const { createApiKey: { key } } = await gql(
    `mutation($a: ID!) { createApiKey(input: { accountId: $a, mode: LIVE }) { key } }`,
    { a: account.id },
    { authorization: `Bearer ${adminToken}` },
  );
  const auth = { "x-api-key": key, "content-type": "application/json" };
  const { createTemplate: { id: templateId } } = await gql(
    `mutation($i: CreateTemplateInput!) { createTemplate(input: $i) { id } }`,
    {
      i: {
        name: "Bench order confirmation",
        subject: "Order {{ order_id }} confirmed",
        fromEmail: "orders@example.com",
        fromName: "Example Shop",
        html: `<html><body><p>Hi {{ first_name or "there" }},</p><p>Order <b>{{ order_id }}</b> is confirmed.</p>` +
          `<p><a href="https://shop.example.com/orders/{{ order_id }}">See your order</a> · ` +
          `<a href="https://shop.example.com/help">Help</a></p>` +
          `<p><a href="{{ unsubscribe_url }}">Unsubscribe</a></p></body></html>`,
        text: "Hi {{ first_name or 'there' }}, order {{ order_id }} is confirmed.",
        trackOpens: true,
        trackClicks: true,
      },
    },
    auth,
  );
  const api = async (method: string, path: string, body?: unknown) => {
    const r = await fetch(base + path, { method, headers: auth, body: body ? JSON.stringify(body) : undefined });
    return { status: r.status, body: await r.json() };
  };
  const later = () => new Date(Date.now() + 3600_000).toISOString();
  let seq = 0;
  const uniq = (tag: string) => `${tag}-${++seq}-${Math.random().toString(36).slice(2, 8)}@bench.example.com`;
  const log = (s: string) => console.error(`[${((performance.now() - started) / 1000).toFixed(0)} s] ${s}`);

  // Two delivered sends: one whose pixel the tracking scenario hits, one the GraphQL and
  // REST reads fetch (with its usual three events, not the tracking scenario's thousands).
  const samples: string[] = [];
  for (const tag of ["pixel", "read"]) {
    const r = await api("POST", "/api/v1/sends", { templateId, to: uniq(tag), personalizations: { order_id: "S-1" } });
    if (r.status !== 202) throw new Error(JSON.stringify(r.body));
    samples.push(r.body.id);
  }
  for (let i = 0; (await api("GET", `/api/v1/sends/${samples[1]}`)).body.status !== "delivered"; i++) {
    if (i > 200) throw new Error("the sample send was not delivered");
    await sleep(50);
  }
  /** POST /api/v1/sends for autocannon, each to a new address. */
  const sendRequest = (tag: string, extra: Record<string, unknown> = {}) => ({
    method: "POST" as const,
    path: "/api/v1/sends",
    headers: auth,
    setupRequest: (req: Record<string, unknown>) => ({
      ...req,
      body: JSON.stringify({ templateId, to: uniq(tag), personalizations: { order_id: `O-${seq}` }, ...extra }),
    }),
  });
  let drainRate = NaN;

  // --- 1. Single-send accept: POST /api/v1/sends, each to a new address, scheduled an hour
  if (want("accept")) {
    // ahead so that delivery does not run during the measurement. ---
    log("single-send accept");
    await load(
      { url: base, connections: 8, duration: 2, requests: [sendRequest("warm", { scheduledAt: later() })] },
      202,
    );
    await cpu.start();
    const accept = await load(
      { url: base, connections: CONNECTIONS, duration: LOAD_S, requests: [sendRequest("a", { scheduledAt: later() })] },
      202,
    );
    const acceptCpu = await cpu.stop();
    // Baseline: the same writes in one transaction straight from a pg pool (no HTTP, no checks).
    const acceptBase = await closedLoop(CONNECTIONS, LOAD_S, async () => {
      const c = await pool.connect();
      try {
        await c.query("begin");
        const { rows: [ct] } = await c.query(
          `insert into contacts (account_id, email, updated_at) values ($1, $2, now())
         on conflict (account_id, lower(email)) do update set email = contacts.email returning id, email`,
          [account.id, uniq("b")],
        );
        await c.query(
          `insert into account_usage (account_id, month, used) values ($1, date_trunc('month', now())::date, 1)
         on conflict (account_id, month) do update set used = account_usage.used + 1`,
          [account.id],
        );
        const id = crypto.randomUUID();
        await c.query(
          `insert into sends (id, contact_id, to_email, personalizations, status, message_id, account_id, template_id,
           subject, from_email, from_name, tags, track_opens, track_clicks, sandbox, scheduled_at)
         values ($1::uuid, $2, $3, '{"order_id":"O-1"}', 'scheduled', '<' || $1::text || '@example.com>', $4, $5,
           'Order {{ order_id }} confirmed', 'orders@example.com', 'Example Shop', '{}', true, true, false, $6)`,
          [id, ct.id, ct.email, account.id, templateId, later()],
        );
        await c.query(`insert into email_events (send_id, account_id, type, data) values ($1, $2, 'queued', '{}')`, [
          id,
          account.id,
        ]);
        await c.query(
          `select graphile_worker.add_job('bench_noop', json_build_object('sendId', $1::text), run_at := $2,
           job_key := 'bench:' || $1::text)`,
          [id, later()],
        );
        await c.query("commit");
      } finally {
        c.release();
      }
    });
    const acceptBaseRps = acceptBase.n / acceptBase.seconds;
    scenarios["single-send accept"] = {
      value: round(accept.rps),
      unit: "sends/s",
      target: "≥ 1,500/s, ≥ 0.5× baseline, p99 ≤ 50 ms",
      baseline: round(acceptBaseRps),
      ratio: round(accept.rps / acceptBaseRps, 2),
      pass: accept.rps >= 1500 && accept.rps >= 0.5 * acceptBaseRps && accept.p99 <= 50,
      details: {
        ...acceptCpu,
        p50_ms: accept.p50,
        p99_ms: accept.p99,
        other_answers: accept.other,
        baseline_p50_ms: round(pct(acceptBase.lat, 50), 1),
        baseline_p99_ms: round(pct(acceptBase.lat, 99), 1),
      },
    };
  }

  // --- 2. Batch accept: 1,000-recipient batches, 4 in parallel (scheduled an hour ahead). ---
  if (want("batch")) {
    log("batch accept");
    const batchBody = (tag: string, scheduledAt?: string) =>
      JSON.stringify({
        templateId,
        scheduledAt,
        recipients: Array.from({ length: 1000 }, () => ({ to: uniq(tag), personalizations: { order_id: `B-${seq}` } })),
      });
    const batchReq = {
      method: "POST" as const,
      path: "/api/v1/sends/batch",
      headers: auth,
      setupRequest: (req: Record<string, unknown>) => ({ ...req, body: batchBody("batch", later()) }),
    };
    await cpu.start();
    const batch = await load({ url: base, connections: 4, duration: LOAD_S, requests: [batchReq] }, 202);
    const batchCpu = await cpu.stop();
    const batchBase = await closedLoop(4, LOAD_S, async () => {
      const emails = Array.from({ length: 1000 }, () => uniq("bb"));
      const c = await pool.connect();
      try {
        await c.query("begin");
        const { rows } = await c.query(
          `insert into contacts (account_id, email, updated_at) select $1, e, now() from unnest($2::text[]) e
         on conflict (account_id, lower(email)) do update set email = contacts.email returning id, email`,
          [account.id, emails],
        );
        const ids = rows.map(() => crypto.randomUUID());
        await c.query(
          `insert into sends (id, contact_id, to_email, personalizations, status, message_id, account_id, template_id,
           subject, from_email, tags, track_opens, track_clicks, sandbox, scheduled_at)
         select u.id, u.cid, u.email, '{"order_id":"B-1"}', 'scheduled', '<' || u.id || '@example.com>', $4, $5,
           'Order', 'orders@example.com', '{}', true, true, false, $6
         from unnest($1::uuid[], $2::uuid[], $3::text[]) as u(id, cid, email)`,
          [ids, rows.map((r) => r.id), rows.map((r) => r.email), account.id, templateId, later()],
        );
        await c.query(
          `select graphile_worker.add_jobs(array(select ('bench_noop', json_build_object('sendId', id), null, $2::timestamptz,
           null, 'bench:' || id, null, null)::graphile_worker.job_spec from unnest($1::uuid[]) id))`,
          [ids, later()],
        );
        await c.query("commit");
      } finally {
        c.release();
      }
    });
    const batchRecipientsPerS = batch.rps * 1000;
    const batchBaseRecipientsPerS = batchBase.n * 1000 / batchBase.seconds;
    scenarios["batch accept"] = {
      value: round(batchRecipientsPerS),
      unit: "recipients/s",
      target: "p50 ≤ 150 ms per batch, ≥ 8,000 recipients/s",
      baseline: round(batchBaseRecipientsPerS),
      ratio: round(batchRecipientsPerS / batchBaseRecipientsPerS, 2),
      pass: batch.p50 <= 150 && batchRecipientsPerS >= 8000,
      details: {
        ...batchCpu,
        p50_ms: batch.p50,
        p99_ms: batch.p99,
        batches: batch.ok,
        other_answers: batch.other,
        baseline_p50_ms: round(pct(batchBase.lat, 50), 1),
      },
    };
  }

  // The accept scenarios' scheduled jobs (an hour ahead) leave the queue: the worker's
  // fetches below see only the jobs of the scenario being measured.
  await pool.query(`select graphile_worker.complete_jobs(array(select id from graphile_worker.jobs
    where run_at > now() + interval '10 minutes'))`);
  await pool.query("vacuum analyze");

  /** Posts `n` sends as batches (4 at a time) at `scheduledAt`; their ids. */
  const queueBatches = async (n: number, tag: string, scheduledAt?: string) => {
    const ids: string[] = [];
    const sizes = Array.from({ length: Math.ceil(n / 1000) }, (_, i) => Math.min(1000, n - i * 1000));
    for (let i = 0; i < sizes.length; i += 4) {
      await Promise.all(
        sizes.slice(i, i + 4).map(async (size) => {
          const r = await api("POST", "/api/v1/sends/batch", {
            templateId,
            scheduledAt,
            tags: { bench: tag },
            recipients: Array.from(
              { length: size },
              () => ({ to: uniq(tag), personalizations: { order_id: `D-${seq}` } }),
            ),
          });
          if (r.status !== 202) throw new Error(JSON.stringify(r.body));
          ids.push(r.body.batchId);
        }),
      );
    }
    return ids;
  };
  /** Waits until every send tagged `tag` has left the pending statuses; their count by status. */
  /**
   * Waits until the `n` sends tagged `tag` (created since `since`) have left the pending
   * statuses; their count by outcome. It watches the sink's counter (a file read) and asks
   * the database only once the sink has them all, or once a second, through the account's
   * (account_id, created_at) index: polling sends by tag every few ms took a core of
   * Postgres away from the service being measured.
   */
  const settled = async (tag: string, n: number, timeoutS: number, since: Date, sinkBefore: number) => {
    const until = Date.now() + timeoutS * 1000;
    let asked = 0;
    while (Date.now() < until) {
      const atSink = (await sink.count()) - sinkBefore;
      if (atSink >= n || Date.now() - asked > 1000) {
        asked = Date.now();
        const { rows: [r] } = await pool.query(
          `select count(*) filter (where status in ('delivered', 'sent'))::int as done,
                  count(*) filter (where status not in ('scheduled', 'queued', 'sending', 'delivered', 'sent'))::int as bad
           from sends where account_id = $1 and created_at >= $2 and tags->>'bench' = $3`,
          [account.id, since, tag],
        );
        if (r.done + r.bad >= n) return r as { done: number; bad: number };
      }
      await sleep(atSink >= n ? 20 : 10);
    }
    throw new Error(`${tag}: not every send was delivered within ${timeoutS} s`);
  };

  /** p50 and p99, in ms, of SMTP 250 (sent_at) − `from` over the sends tagged `tag`. */
  const delays = async (tag: string, from: "scheduled_at" | "created_at") => {
    const { rows: [r] } = await pool.query<{ p50: number; p99: number }>(
      `select percentile_cont(0.5) within group (order by extract(epoch from sent_at - ${from})) * 1000 as p50,
              percentile_cont(0.99) within group (order by extract(epoch from sent_at - ${from})) * 1000 as p99
       from sends where tags->>'bench' = $1`,
      [tag],
    );
    return r;
  };

  // --- 3. Schedule lateness: 1,000 sends all scheduled for one instant. ---
  if (want("lateness")) {
    log("schedule lateness");
    const instant = new Date(Date.now() + 3000);
    const lateSince = new Date();
    const lateSink = await sink.count();
    await queueBatches(SCHEDULED_N, "scheduled", instant.toISOString());
    await sleep(Math.max(0, instant.getTime() - Date.now()));
    await cpu.start();
    await settled("scheduled", SCHEDULED_N, 60, lateSince, lateSink);
    const lateCpu = await cpu.stop();
    const late = await delays("scheduled", "scheduled_at");
    scenarios["schedule lateness"] = {
      value: round(late.p99),
      unit: "ms (p99 of SMTP 250 − scheduledAt)",
      target: "p99 ≤ 1,000 ms",
      pass: late.p99 <= 1000,
      details: { ...lateCpu, p50_ms: round(late.p50), sends: SCHEDULED_N, poll_ms: config.workerPollMs },
    };
  }

  // --- 4. Delivery drain: DRAIN_N queued sends rendered, tracked, signed and delivered. ---
  if (want("drain")) {
    // They are accepted for one instant a little ahead, so that every one is queued when the
    // worker starts on them; the rate is first → last SMTP 250.
    log(`delivery drain (${DRAIN_N})`);
    const sinkBefore = await sink.count();
    const drainSince = new Date();
    const drainAt = new Date(Date.now() + (QUICK ? 3000 : 6000));
    await queueBatches(DRAIN_N, "drain", drainAt.toISOString());
    const servicePid = child.pid;
    let peakRss = 0;
    const sampler = setInterval(async () => {
      peakRss = Math.max(peakRss, (await rssOf(servicePid).catch(() => ({ rss: 0 }))).rss);
    }, 100);
    await sleep(Math.max(0, drainAt.getTime() - Date.now()));
    await cpu.start();
    const drainDone = await settled("drain", DRAIN_N, 600, drainSince, sinkBefore);
    const drainCpu = await cpu.stop();
    clearInterval(sampler);
    const { rows: [dr] } = await pool.query(
      `select extract(epoch from max(sent_at) - min(sent_at)) as span, count(*)::int as n
     from sends where tags->>'bench' = 'drain' and sent_at is not null`,
    );
    drainRate = (dr.n - 1) / dr.span;
    const atSink = (await sink.count()) - sinkBefore;
    const mem = await rssOf(servicePid);
    peakRss = Math.max(peakRss, mem.rss);
    const sandboxes = [...(await cpuTimes())].filter(([, p]) => p.ppid === servicePid).map(([pid]) => pid);
    const sandboxRss = (await Promise.all(sandboxes.map((pid) => rssOf(pid).catch(() => ({ rss: 0 })))))
      .reduce((n, m) => n + m.rss, 0);

    // Baseline: a raw nodemailer pool (same connections, TCP_NODELAY as ours) sending the same
    // number of pre-built messages of the same size, as many in flight as our worker runs.
    const sample = await pool.query(`select s.id from sends s where tags->>'bench' = 'drain' limit 1`);
    const urls = trackingUrls(base, secret, sample.rows[0].id);
    const html = `<html><body><p>Hi there,</p><p>Order <b>D-1</b> is confirmed.</p><p><a href="${urls.click(0)}">` +
      `See your order</a> · <a href="${urls.click(1)}">Help</a></p><p><a href="${urls.unsubscribe}">Unsubscribe</a>` +
      `</p><img src="${urls.open}" width="1" height="1" alt=""></body></html>`;
    const transport = nodemailer.createTransport(
      {
        pool: true,
        host: "127.0.0.1",
        port: sink.port,
        maxConnections: config.smtpPoolSize,
        maxMessages: Infinity,
        getSocket: noDelaySocket,
      } as Parameters<typeof nodemailer.createTransport>[0],
    );
    let next = 0;
    const rawT0 = performance.now();
    await Promise.all(Array.from({ length: config.workerConcurrency }, async () => {
      while (next < DRAIN_N) {
        const i = next++;
        await transport.sendMail({
          from: { name: "Example Shop", address: "orders@example.com" },
          to: `raw-${i}@bench.example.com`,
          subject: `Order D-${i} confirmed`,
          html,
          text: `Hi there, order D-${i} is confirmed.`,
          messageId: `<raw-${i}@example.com>`,
          headers: {
            "List-Unsubscribe": `<${urls.unsubscribe}>`,
            "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
          },
        });
      }
    }));
    const rawRate = DRAIN_N / ((performance.now() - rawT0) / 1000);
    transport.close();
    scenarios["delivery drain"] = {
      value: round(drainRate),
      unit: "emails/s",
      target: "≥ 1,500/s and ≥ 0.6× baseline",
      baseline: round(rawRate),
      ratio: round(drainRate / rawRate, 2),
      pass: drainRate >= 1500 && drainRate >= 0.6 * rawRate && drainDone.bad === 0 && atSink === DRAIN_N,
      details: {
        ...drainCpu,
        sends: DRAIN_N,
        delivered: drainDone.done,
        not_delivered: drainDone.bad,
        at_sink: atSink,
      },
    };
    scenarios["memory"] = {
      value: round(peakRss),
      unit: "MB peak RSS of the service during the drain",
      target: "≤ 300 MB",
      pass: peakRss <= 300,
      // The render sandboxes are processes of their own, with their own heap caps.
      details: { peak_since_start_mb: round(mem.hwm), render_sandboxes_mb: round(sandboxRss) },
    };
  }

  // --- 5. Job overhead: DRAIN_N no-op jobs through graphile-worker with our settings. ---
  if (want("jobs")) {
    log("job overhead");
    await pool.query(
      `select graphile_worker.add_jobs(array(select ('bench_noop', json_build_object('i', g), null, null, null, null,
       null, null)::graphile_worker.job_spec from generate_series(1, $1) g))`,
      [DRAIN_N],
    );
    let done = 0;
    let finished: () => void = () => {};
    const allDone = new Promise<void>((r) => finished = r);
    const noopT0 = performance.now();
    const runner = await runWorker({
      pgPool: pool,
      noHandleSignals: true,
      logger: new (await import("graphile-worker")).Logger(() => () => {}),
      ...runnerSettings(config),
      taskList: {
        bench_noop: () => {
          if (++done === DRAIN_N) finished();
          return Promise.resolve();
        },
      },
    });
    await allDone;
    const noopRate = DRAIN_N / ((performance.now() - noopT0) / 1000);
    await runner.stop();
    scenarios["job overhead"] = {
      value: round(noopRate),
      unit: "no-op jobs/s",
      target: "report: delivery drain ÷ no-op jobs (the runner's share of a delivery)",
      baseline: round(drainRate),
      ratio: round(drainRate / noopRate, 2),
      pass: true,
      details: { jobs: DRAIN_N, concurrency: config.workerConcurrency },
    };
  }

  // --- 6. Latency: 200 sends/s for LATENCY_S, accept → the sink's 250. ---
  if (want("latency")) {
    log("latency");
    const latencySince = new Date();
    const latencySink = await sink.count();
    await cpu.start();
    await load({
      url: base,
      connections: 16,
      overallRate: LATENCY_RATE,
      duration: LATENCY_S,
      requests: [sendRequest("latency", { tags: { bench: "latency" } })],
    }, 202);
    const latencyCpu = await cpu.stop();
    const { rows: [{ n: latencyN }] } = await pool.query(
      `select count(*)::int as n from sends where tags->>'bench' = 'latency'`,
    );
    await settled("latency", latencyN, 120, latencySince, latencySink);
    const lat = await delays("latency", "created_at");
    scenarios["latency"] = {
      value: round(lat.p99),
      unit: "ms (p99 accept → SMTP 250)",
      target: "p99 ≤ 1,000 ms at 200 sends/s",
      pass: lat.p99 <= 1000,
      details: { ...latencyCpu, p50_ms: round(lat.p50, 1), sends: latencyN, rate_per_s: round(latencyN / LATENCY_S) },
    };
  }

  // --- 7. Tracking: the open pixel, against a bare Deno.serve answering the same GIF. ---
  if (want("tracking")) {
    log("tracking");
    const pixel = trackingUrls(base, secret, samples[0]).open;
    await load({ url: pixel, connections: 8, duration: 2 }, 200);
    await cpu.start();
    const track = await load({ url: pixel, connections: CONNECTIONS, duration: LOAD_S }, 200);
    const trackCpu = await cpu.stop();
    const barePort = freePort();
    const bare = new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", import.meta.filename!, "bare-gif", String(barePort)],
      stdout: "piped",
    }).spawn();
    await bare.stdout.pipeThrough(new TextDecoderStream()).getReader().read();
    await load({ url: `http://127.0.0.1:${barePort}/t/o/x`, connections: 8, duration: 2 }, 200);
    const bareLoad = await load(
      { url: `http://127.0.0.1:${barePort}/t/o/x`, connections: CONNECTIONS, duration: LOAD_S },
      200,
    );
    bare.kill();
    await bare.status;
    scenarios["tracking"] = {
      value: round(track.rps),
      unit: "pixel hits/s",
      target: "≥ 3,000/s, p99 ≤ 20 ms",
      baseline: round(bareLoad.rps),
      ratio: round(track.rps / bareLoad.rps, 2),
      pass: track.rps >= 3000 && track.p99 <= 20,
      details: {
        ...trackCpu,
        p50_ms: track.p50,
        p99_ms: track.p99,
        other_answers: track.other,
        baseline_p99_ms: bareLoad.p99,
      },
    };
  }

  // --- 8. GraphQL `send(id)` against REST GET /api/v1/sends/:id, the same fields. ---
  if (want("graphql")) {
    log("GraphQL vs REST");
    const sendId = samples[1];
    const restUrl = `${base}/api/v1/sends/${sendId}`;
    const gqlBody = JSON.stringify({
      query: `query($id: ID!) { send(id: $id) { id status to from subject templateId contactId batchId messageId
      personalizations tags trackOpens trackClicks sandbox scheduledAt sentAt deliveredAt openedAt clickedAt bouncedAt
      missingVariables createdAt updatedAt error { code message } events { type occurredAt data } } }`,
      variables: { id: sendId },
    });
    await load({ url: restUrl, connections: 8, duration: 2, headers: auth }, 200);
    await load(
      { url: `${base}/graphql`, method: "POST", body: gqlBody, connections: 8, duration: 2, headers: auth },
      200,
    );
    // Alternating halves (REST, GraphQL, REST, GraphQL): drift of the shared machine falls
    // on both sides alike.
    const restRounds: Load[] = [];
    const graphRounds: Load[] = [];
    await cpu.start();
    for (let round = 0; round < 2; round++) {
      restRounds.push(await load({ url: restUrl, connections: CONNECTIONS, duration: LOAD_S / 2, headers: auth }, 200));
      graphRounds.push(
        await load({
          url: `${base}/graphql`,
          method: "POST",
          body: gqlBody,
          connections: CONNECTIONS,
          duration: LOAD_S / 2,
          headers: auth,
        }, 200),
      );
    }
    const graphCpu = await cpu.stop();
    const rest = combine(restRounds);
    const graph = combine(graphRounds);
    scenarios["graphql"] = {
      value: round(graph.rps),
      unit: "send(id) queries/s",
      target: "≥ 0.7× REST GET /api/v1/sends/:id",
      baseline: round(rest.rps),
      ratio: round(graph.rps / rest.rps, 2),
      pass: graph.rps >= 0.7 * rest.rps,
      details: { ...graphCpu, p50_ms: graph.p50, p99_ms: graph.p99, rest_p50_ms: rest.p50, rest_p99_ms: rest.p99 },
    };
  }

  // --- Stop everything; the bench's database does not pile up. ---
  for (const c of [child, ...workers]) c.kill("SIGTERM");
  await Promise.all([child, ...workers].map((c) => c.status));
  await pool.end();
  sink.stop();
  await dropDatabase(databaseUrl);
  await Deno.remove(dataDir, { recursive: true });

  const results = {
    generatedAt: new Date().toISOString(),
    quick: QUICK,
    seconds: round((performance.now() - started) / 1000),
    machine: {
      cpus: navigator.hardwareConcurrency,
      deno: Deno.version.deno,
      postgres: serverUrl ? "DATABASE_URL's server" : "embedded",
      smtpSink: sink.kind,
      serviceProcesses: 1 + EXTRA_WORKERS,
    },
    scenarios,
  };
  await Deno.writeTextFile(new URL("./results.json", import.meta.url), JSON.stringify(results, null, 2) + "\n");
  console.log(table(results));
  Deno.exit(0);
}

/** The printed table (Markdown, so the README can hold it as it is). */
function table(r: { scenarios: Record<string, Scenario>; machine: Record<string, unknown>; seconds: number }) {
  const n = (v: number | undefined) => v === undefined ? "" : v.toLocaleString("en-US");
  const lines = [
    `${r.machine.cpus} CPUs, Deno ${r.machine.deno}, Postgres: ${r.machine.postgres}, sink: ${r.machine.smtpSink}, ` +
    `service processes: ${r.machine.serviceProcesses}, ${r.seconds} s`,
    "",
    "| scenario | measured | unit | baseline | ratio | details | target | pass |",
    "|---|---|---|---|---|---|---|---|",
  ];
  for (const [name, s] of Object.entries(r.scenarios)) {
    const details = Object.entries(s.details).map(([k, v]) => `${k} ${typeof v === "number" ? n(v) : v}`).join(", ");
    lines.push(
      `| ${name} | ${n(s.value)} | ${s.unit} | ${n(s.baseline)} | ${s.ratio ?? ""} | ${details} | ${s.target} | ${
        s.pass ? "yes" : "**no**"
      } |`,
    );
  }
  return lines.join("\n");
}

if (Deno.args[0] === "bare-gif") {
  // Child mode: the tracking baseline, a bare Deno.serve answering the same GIF.
  Deno.serve(
    { port: Number(Deno.args[1]), hostname: "127.0.0.1", onListen: () => console.log("ready") },
    () =>
      new Response(GIF, {
        headers: { "content-type": "image/gif", "cache-control": "no-store, no-cache, must-revalidate, max-age=0" },
      }),
  );
} else {
  await main();
}
