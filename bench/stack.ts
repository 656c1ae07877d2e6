/**
 * The stack the bench measures, and what the scenarios do through it.
 *
 * startStack starts the service as `deno task start` runs it, in a child process on a fresh
 * database (DATABASE_URL's server when set, else an embedded Postgres), with an SMTP sink in
 * another process (bench/sink_process.ts); it makes a live API key and a tracked template
 * through the API and delivers two sample sends. The scenarios get it as a Bench.
 */
import nodemailer from "nodemailer";
import pg from "pg";
import { type Config, loadConfig } from "../src/config.ts";
import { noDelaySocket } from "../src/mail/transport.ts";
import { dropDatabase, freshDatabase, startTaskFlags } from "../tests/helpers.ts";
import { type CpuMeter, cpuMeter, freePort, sleep } from "./lib.ts";
import { type SinkProcess, startSinkProcess } from "./sink_process.ts";

/** How long the scenarios run: shorter under `--quick`. */
export interface Sizes {
  /** `--quick`: every phase shortened (≤ 90 s in all). */
  quick: boolean;
  /** Seconds of load per HTTP measurement. */
  loadS: number;
  /** Sends in the delivery drain and no-op jobs in the job-overhead scenario. */
  drainN: number;
  /** Seconds of the fixed-rate latency scenario. */
  latencyS: number;
}

/** What a scenario is given: the started stack, the run's sizes and the bench's log. */
export interface Bench extends Sizes {
  /** The service's URL (the first service process: HTTP and worker). */
  base: string;
  /** The service's PP_SECRET, to sign tracking URLs as it does. */
  secret: string;
  /** Headers of a request with the live API key (and a JSON body). */
  auth: Record<string, string>;
  /** The seeded account, owner of the key and the template. */
  accountId: string;
  /** A template with two links, an unsubscribe link and open and click tracking. */
  templateId: string;
  /** Two delivered sends: `pixel` is the one whose open pixel the tracking scenario hits, `read` the one the reads fetch. */
  samples: { pixel: string; read: string };
  /** The service's settings (its defaults, plus the tunables given to the bench). */
  config: Readonly<Config>;
  /** A pool on the service's database, as large as the service's. */
  pool: pg.Pool;
  sink: SinkProcess;
  /** CPU of the service processes (and their render sandboxes), Postgres, the sink and the bench. */
  cpu: CpuMeter;
  /** How the service runs (StackOptions.topology). */
  topology: "all" | "one-loop" | "split";
  /** The first service process's pid (its memory is measured). */
  servicePid: number;
  /** A new recipient address on every call, tagged `tag`. */
  uniq(tag: string): string;
  /** A batch recipient: a new address (uniq) and an order id `<prefix>-<its number>` for the template. */
  recipient(tag: string, prefix: string): { to: string; personalizations: { order_id: string } };
  /** The live key (X-API-Key), e.g. as the SMTP submission password. */
  key: string;
  /** The service's SMTP submission port (PP_SUBMISSION_PORT). */
  submissionPort: number;
  /** One API request with the live key; its status and JSON body. */
  // deno-lint-ignore no-explicit-any
  api(method: string, path: string, body?: unknown): Promise<{ status: number; body: any }>;
  /** An hour from now (ISO 8601): sends scheduled then are accepted but not delivered during the run. */
  later(): string;
  /** A line on stderr, stamped with the seconds since the bench started. */
  log(s: string): void;
}

/** How the runner wants the stack started. */
export interface StackOptions {
  /** performance.now() when the bench started (the log's clock). */
  started: number;
  /** `--profile <dir>`: the service writes a V8 CPU profile there when it stops (Deno's --cpu-prof). */
  profileDir?: string;
  /** `--workers N`: N more service processes with PP_ROLE=worker beside the first. */
  extraWorkers: number;
  /** Settings passed on to the service (the bench's own environment's PP_* tunables). */
  tunables: Record<string, string>;
  /**
   * How the service runs: `all` (the default role: HTTP on the main thread, the worker on a
   * thread of its own), `one-loop` (role all with PP_WORKER_THREAD=false: both on one event
   * loop, as before the worker thread) or `split` (an `api` process and a `worker` process).
   * Default `all`.
   */
  topology?: "all" | "one-loop" | "split";
}

/** Starts the stack and prepares it (key, template, sample sends); `stop` ends it and drops its database. */
export async function startStack(sizes: Sizes, opts: StackOptions): Promise<{ bench: Bench; stop(): Promise<void> }> {
  const sink = await startSinkProcess();
  const databaseUrl = await freshDatabase(); // DATABASE_URL's server, else an embedded Postgres
  const dataDir = await Deno.makeTempDir({ prefix: "pp-bench-" });
  const port = freePort();
  const submissionPort = freePort();
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
    // The webhooks scenario's receiver listens on loopback.
    PP_WEBHOOK_ALLOW_PRIVATE: "true",
    // The submission scenario's clients connect here.
    PP_SUBMISSION_PORT: String(submissionPort),
    // Tuning under test may be given to the bench (PP_WORKER_CONCURRENCY=… deno task bench).
    ...opts.tunables,
    ...(opts.topology === "one-loop" ? { PP_WORKER_THREAD: "false" } : {}),
  };
  const split = opts.topology === "split";
  // Everything else is the service's defaults, as `deno task start` runs it.
  const config = loadConfig(env);
  const startFlags = await startTaskFlags();
  const child = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      ...startFlags,
      ...(opts.profileDir ? ["--cpu-prof", `--cpu-prof-dir=${opts.profileDir}`] : []),
      new URL("../main.ts", import.meta.url).pathname,
    ],
    env: split ? { ...env, PP_ROLE: "api" } : env,
    stdout: "null",
    stderr: "inherit",
  }).spawn();
  const base = `http://127.0.0.1:${port}`;
  const workers = Array.from(
    { length: opts.extraWorkers + (split ? 1 : 0) },
    (_, i) =>
      new Deno.Command(Deno.execPath(), {
        args: ["run", ...startFlags, new URL("../main.ts", import.meta.url).pathname],
        env: { ...env, PP_ROLE: "worker", PORT: String(port + 1 + i), PP_SEED: "false" },
        stdout: "null",
        stderr: "inherit",
      }).spawn(),
  );
  for (let i = 0;; i++) {
    const ok = await fetch(`${base}/healthz`).then((r) => (r.body?.cancel(), r.ok), () => false);
    if (ok) break;
    if (i > 600) throw new Error("the service did not become healthy within 60 s");
    await sleep(100);
  }
  const pool = new pg.Pool({ connectionString: databaseUrl, max: config.dbPoolSize });
  pool.on("error", (err) => console.error("bench pool:", err.message));
  const analyzer = await standInForAutovacuum(pool);
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
  // One counter for every address of the run, so that no two sends share a contact.
  let seq = 0;
  const uniq = (tag: string) => `${tag}-${++seq}-${Math.random().toString(36).slice(2, 8)}@bench.example.com`;

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

  const bench: Bench = {
    ...sizes,
    base,
    secret,
    auth,
    key,
    submissionPort,
    accountId: account.id,
    templateId,
    samples: { pixel: samples[0], read: samples[1] },
    config,
    pool,
    sink,
    cpu,
    servicePid: child.pid,
    topology: opts.topology ?? "all",
    uniq,
    recipient: (tag, prefix) => {
      const to = uniq(tag);
      return { to, personalizations: { order_id: `${prefix}-${seq}` } };
    },
    api,
    later: () => new Date(Date.now() + 3600_000).toISOString(),
    log: (s) => console.error(`[${((performance.now() - opts.started) / 1000).toFixed(0)} s] ${s}`),
  };
  return {
    bench,
    // The bench's database does not pile up.
    async stop() {
      for (const c of [child, ...workers]) c.kill("SIGTERM");
      await Promise.all([child, ...workers].map((c) => c.status));
      await analyzer.stop();
      await pool.end();
      sink.stop();
      await dropDatabase(databaseUrl);
      await Deno.remove(dataDir, { recursive: true });
    },
  };
}

/** How often the bench analyzes its database when the server's autovacuum is off. */
const ANALYZE_EVERY_MS = 10_000;

/**
 * Runs `analyze` every ANALYZE_EVERY_MS while the stack runs, when the server's autovacuum is
 * off (as on this machine's Postgres, set up for CI): every scenario starts on a new,
 * nearly empty database, and plans cached by the service's connections while its tables
 * were empty stay in use as they grow (the foreign-key checks on `sends` and `contacts` ran
 * as sequential scans: 85 million rows read in the mixed scenario's 30 s). Autovacuum, on by
 * default, would analyze the tables as they grow, which invalidates those plans; a
 * production database has its statistics already.
 */
async function standInForAutovacuum(pool: pg.Pool): Promise<{ stop(): Promise<void> }> {
  const { rows: [r] } = await pool.query<{ autovacuum: string }>("show autovacuum");
  if (r.autovacuum === "on") return { stop: async () => {} };
  let running: Promise<unknown> = Promise.resolve();
  const timer = setInterval(() => {
    running = running.then(() => pool.query("analyze")).catch((err) => console.error("bench analyze:", err.message));
  }, ANALYZE_EVERY_MS);
  return {
    async stop() {
      clearInterval(timer);
      await running;
    },
  };
}

/** POST /api/v1/sends for autocannon, each to a new address (`extra` goes into every body). */
export function sendRequest(b: Bench, tag: string, extra: Record<string, unknown> = {}) {
  return {
    method: "POST" as const,
    path: "/api/v1/sends",
    headers: b.auth,
    setupRequest: (req: Record<string, unknown>) => ({
      ...req,
      body: JSON.stringify({ templateId: b.templateId, ...b.recipient(tag, "O"), ...extra }),
    }),
  };
}

/**
 * Completes the jobs scheduled more than 10 minutes ahead (the accept scenarios' sends, an
 * hour ahead) and vacuums: the worker's fetches in the delivery scenarios then see only the
 * jobs of the scenario being measured.
 */
export async function clearJobsAhead(b: Bench): Promise<void> {
  await b.pool.query(`select graphile_worker.complete_jobs(array(select id from graphile_worker.jobs
    where run_at > now() + interval '10 minutes'))`);
  await b.pool.query("vacuum analyze");
}

/** Posts `n` sends tagged `tag` as batches of 1,000 (4 at a time) at `scheduledAt`; the batches' ids. */
export async function queueBatches(b: Bench, n: number, tag: string, scheduledAt?: string): Promise<string[]> {
  const ids: string[] = [];
  const sizes = Array.from({ length: Math.ceil(n / 1000) }, (_, i) => Math.min(1000, n - i * 1000));
  for (let i = 0; i < sizes.length; i += 4) {
    await Promise.all(
      sizes.slice(i, i + 4).map(async (size) => {
        const r = await b.api("POST", "/api/v1/sends/batch", {
          templateId: b.templateId,
          scheduledAt,
          tags: { bench: tag },
          recipients: Array.from({ length: size }, () => b.recipient(tag, "D")),
        });
        if (r.status !== 202) throw new Error(JSON.stringify(r.body));
        ids.push(r.body.batchId);
      }),
    );
  }
  return ids;
}

/**
 * Waits until the `n` sends tagged `tag` (created since `since`) have left the pending
 * statuses; their count by outcome. It watches the sink's counter (a file read) and asks
 * the database only once the sink has them all, or once a second, through the account's
 * (account_id, created_at) index: polling sends by tag every few ms took a core of
 * Postgres away from the service being measured.
 */
export async function settled(
  b: Bench,
  tag: string,
  n: number,
  timeoutS: number,
  since: Date,
  sinkBefore: number,
): Promise<{ done: number; bad: number }> {
  const until = Date.now() + timeoutS * 1000;
  let asked = 0;
  while (Date.now() < until) {
    const atSink = (await b.sink.count()) - sinkBefore;
    if (atSink >= n || Date.now() - asked > 1000) {
      asked = Date.now();
      const { rows: [r] } = await b.pool.query(
        `select count(*) filter (where status in ('delivered', 'sent'))::int as done,
                count(*) filter (where status not in ('scheduled', 'queued', 'sending', 'delivered', 'sent'))::int as bad
         from sends where account_id = $1 and created_at >= $2 and tags->>'bench' = $3`,
        [b.accountId, since, tag],
      );
      if (r.done + r.bad >= n) return r as { done: number; bad: number };
    }
    await sleep(atSink >= n ? 20 : 10);
  }
  throw new Error(`${tag}: not every send was delivered within ${timeoutS} s`);
}

/** p50 and p99, in ms, of SMTP 250 (sent_at) − `from` over the sends tagged `tag`. */
export async function delays(b: Bench, tag: string, from: "scheduled_at" | "created_at") {
  const { rows: [r] } = await b.pool.query<{ p50: number; p99: number }>(
    `select percentile_cont(0.5) within group (order by extract(epoch from sent_at - ${from})) * 1000 as p50,
            percentile_cont(0.99) within group (order by extract(epoch from sent_at - ${from})) * 1000 as p99
     from sends where tags->>'bench' = $1`,
    [tag],
  );
  return r;
}

/** A raw nodemailer pool to the bench's sink, as the service's is (its connection count, TCP_NODELAY): the baselines' sender. */
export function rawPool(b: Bench): ReturnType<typeof nodemailer.createTransport> {
  return nodemailer.createTransport(
    {
      pool: true,
      host: "127.0.0.1",
      port: b.sink.port,
      maxConnections: b.config.smtpPoolSize,
      maxMessages: Infinity,
      getSocket: noDelaySocket,
    } as Parameters<typeof nodemailer.createTransport>[0],
  );
}
