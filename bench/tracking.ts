/**
 * Tracking endpoint figures (issue: delivery tracking), on this machine:
 * - `GET /t/o/<token>` (open pixel) under 32 connections for 10 s: hits/s, p50, p99
 *   (target ≥ 3,000 hits/s, p99 ≤ 20 ms);
 * - then, how long until every `opened` event is recorded once the load stops (the
 *   endpoint answers at once and queues a `record_event` job; target ≤ 2 s);
 * - the same for `GET /t/c/<token>` (click redirect, 302) and its `clicked` events.
 *
 * The service runs in this process as `deno task start` runs it (role `all`: HTTP and worker),
 * on a fresh database on DATABASE_URL's server when it is set, else on the embedded Postgres;
 * mail goes to the outbox, where the pixel and click URLs are read from the delivered message.
 * The load comes from autocannon (npm, pinned in deno.json) in a child Deno process, so that
 * the load generator does not share the service's event loop.
 * Run: `deno task bench:tracking` (options: `--connections 32 --seconds 10`).
 */
import autocannon from "autocannon";

const arg = (name: string, dflt: number) => {
  const i = Deno.args.indexOf(`--${name}`);
  return i >= 0 ? Number(Deno.args[i + 1]) : dflt;
};
const CONNECTIONS = arg("connections", 32);
const SECONDS = arg("seconds", 10);
const UA =
  "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4 Safari/605.1.15";

/** What the load child reports. */
interface LoadResult {
  /** Answers with the expected status. */
  ok: number;
  /** Other answers, errors and timeouts. */
  bad: number;
  statusCodes: Record<string, number>;
  rps: number;
  p50: number;
  p90: number;
  p99: number;
  max: number;
  /** Date.now() when the load stopped. */
  endedAt: number;
}

if (Deno.args[0] === "load") {
  // Child mode: deno run -A bench/tracking.ts load <url> <connections> <seconds> <expected status>
  const [, url, connections, seconds, expected] = Deno.args;
  const r = await autocannon({
    url,
    connections: Number(connections),
    duration: Number(seconds),
    headers: { "user-agent": UA },
  });
  const endedAt = Date.now();
  const statusCodes = Object.fromEntries(
    Object.entries(r.statusCodeStats ?? {}).map(([k, v]) => [k, (v as { count: number }).count]),
  );
  const ok = statusCodes[expected] ?? 0;
  const out: LoadResult = {
    ok,
    bad: r.requests.total - ok + r.errors + r.timeouts,
    statusCodes,
    rps: r.requests.total / (r.duration || Number(seconds)),
    p50: r.latency.p50,
    p90: r.latency.p90,
    p99: r.latency.p99,
    max: r.latency.max,
    endedAt,
  };
  console.log(JSON.stringify(out));
  Deno.exit(0);
}

const { loadConfig } = await import("../src/config.ts");
const { startService } = await import("../src/server.ts");
const { issueKey } = await import("../src/accounts/service.ts");
const { freshDatabase } = await import("../tests/helpers.ts");

const dataDir = await Deno.makeTempDir({ prefix: "pp-bench-tracking-" });
const serverUrl = Deno.env.get("DATABASE_URL");
const databaseUrl = serverUrl ? await freshDatabase() : undefined;
const service = await startService(loadConfig({
  ...Deno.env.toObject(),
  DATABASE_URL: databaseUrl,
  PORT: "0",
  PP_DATA_DIR: dataDir,
  PP_LOG_LEVEL: "warn",
  PP_SEED: "true",
  SMTP_URL: undefined, // the outbox
  PP_PUBLIC_URL: undefined, // links point at this process
}));
const { seed, deps } = service;
const { key } = await issueKey(deps, seed!.accountId, "live");
const api = async (method: string, path: string, body?: unknown) => {
  const r = await fetch(service.url + path, {
    method,
    headers: { "x-api-key": key, "content-type": "application/json" },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  return { status: r.status, body: await r.json() };
};

// A template with two links and tracking on, one send delivered to the outbox.
const tpl = await deps.pool.query(
  `update templates set html = $2, track_opens = true, track_clicks = true where id = $1 returning id`,
  [
    seed!.templateId,
    `<html><body><p>Hi {{ first_name }}</p><a href="https://shop.example.com/orders/1?a=1&amp;b=2">Order</a>` +
    `<a href="https://shop.example.com/help">Help</a><a href="{{ unsubscribe_url }}">Unsubscribe</a></body></html>`,
  ],
);
if (tpl.rowCount !== 1) throw new Error("seed template not found");
const created = await api("POST", "/api/v1/sends", { templateId: seed!.templateId, to: "bench@example.com" });
if (created.status !== 202) throw new Error(JSON.stringify(created.body));
const sendId: string = created.body.id;
let status = "";
for (let i = 0; i < 500 && status !== "delivered"; i++) {
  await new Promise((r) => setTimeout(r, 20));
  status = (await api("GET", `/api/v1/sends/${sendId}`)).body.status;
}
if (status !== "delivered") throw new Error(`send not delivered: ${status}`);
const eml = await Deno.readTextFile(`${dataDir}/outbox/${sendId}.eml`);
// The HTML part may be quoted-printable: undo soft breaks and =3D before looking for URLs.
const decoded = eml.replace(/=\r?\n/g, "").replace(/=3D/gi, "=");
const pixelUrl = decoded.match(/https?:\/\/[^"'\s<>]+\/t\/o\/[A-Za-z0-9_-]{42}/)?.[0];
const clickUrl = decoded.match(/https?:\/\/[^"'\s<>]+\/t\/c\/[A-Za-z0-9_-]{42}/)?.[0];
if (!pixelUrl || !clickUrl) throw new Error("no pixel or click URL in the delivered message");
for (const [u, want] of [[pixelUrl, 200], [clickUrl, 302]] as const) {
  const r = await fetch(u, { redirect: "manual" });
  await r.body?.cancel();
  if (r.status !== want) throw new Error(`${u} answered ${r.status}, not ${want}`);
}

const countEvents = async (type: string) =>
  Number(
    (await deps.pool.query("select count(*) from email_events where send_id = $1 and type = $2", [sendId, type]))
      .rows[0].count,
  );
const pendingJobs = async () =>
  Number(
    (await deps.pool.query(
      `select count(*) from graphile_worker.jobs
        where task_identifier = 'record_event' and attempts < max_attempts`,
    )).rows[0].count,
  );

/** Runs the load in a child process and returns its figures. */
async function load(url: string, connections: number, seconds: number, expected: number): Promise<LoadResult> {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", import.meta.filename!, "load", url, String(connections), String(seconds), String(expected)],
    stdout: "piped",
    stderr: "inherit",
  }).output();
  const text = new TextDecoder().decode(out.stdout).trim().split("\n").at(-1) ?? "";
  if (!out.success) throw new Error(`load generator failed: ${text}`);
  return JSON.parse(text);
}

/** Waits until `type` events reach `target`; ms after `since`, or null after `timeoutMs`. */
async function recorded(type: string, target: number, since: number, timeoutMs = 120_000): Promise<number | null> {
  while (Date.now() - since < timeoutMs) {
    if ((await countEvents(type)) >= target) return Date.now() - since;
    await new Promise((r) => setTimeout(r, 10));
  }
  return null;
}

interface Row {
  name: string;
  r: LoadResult;
  /** null: no events to wait for (the reference row); -1: not all within the timeout. */
  recordedMs: number | null;
  events: number;
  backlog: number;
}
const rows: Row[] = [];

for (
  const [name, url, expected, type] of [
    ["GET /healthz (reference: no database)", `${service.url}/healthz`, 200, null],
    ["GET /t/o/<token> (pixel, 200)", pixelUrl, 200, "opened"],
    ["GET /t/c/<token> (click, 302)", clickUrl, 302, "clicked"],
  ] as const
) {
  // Warm-up (JIT, pool connections), then a clean start: every queued event recorded.
  const warm = await load(url, 8, 2, expected);
  if (warm.ok === 0) throw new Error(`${name}: the warm-up got no ${expected}`);
  while ((await pendingJobs()) > 0) await new Promise((r) => setTimeout(r, 50));

  const before = type ? await countEvents(type) : 0;
  const r = await load(url, CONNECTIONS, SECONDS, expected);
  if (!type) {
    rows.push({ name, r, recordedMs: null, events: 0, backlog: 0 });
    continue;
  }
  const backlog = await pendingJobs();
  const recordedMs = (await recorded(type, before + r.ok, r.endedAt)) ?? -1;
  // Requests in flight when autocannon stopped were served but not counted: let them land too.
  await new Promise((res) => setTimeout(res, 500));
  while ((await pendingJobs()) > 0) await new Promise((res) => setTimeout(res, 50));
  rows.push({ name, r, recordedMs, events: (await countEvents(type)) - before, backlog });
}

await service.stop();
await Deno.remove(dataDir, { recursive: true });
if (serverUrl && databaseUrl) {
  // The bench's database does not pile up on a shared server.
  const { default: pg } = await import("pg");
  const client = new pg.Client({ connectionString: serverUrl });
  await client.connect();
  await client.query(`drop database if exists ${new URL(databaseUrl).pathname.slice(1)} with (force)`);
  await client.end();
}

const fmt = (n: number) => n.toLocaleString("en-US", { maximumFractionDigits: 0 });
const cols = [38, 8, 7, 7, 7, 16, 0];
const line = (cells: string[]) => console.log(cells.map((c, i) => c.padEnd(cols[i])).join(" ").trimEnd());
console.log(
  `\n${CONNECTIONS} connections, ${SECONDS} s per endpoint; autocannon 9 in a child process; ` +
    `service in this process (role all, PP_DB_POOL_SIZE ${deps.config.dbPoolSize}, ` +
    `PP_WORKER_CONCURRENCY ${deps.config.workerConcurrency}); ${navigator.hardwareConcurrency} CPUs`,
);
line([
  "endpoint",
  "hits/s",
  "p50 ms",
  "p99 ms",
  "max ms",
  "expected/other",
  "every event recorded after the load stopped",
]);
for (const { name, r, recordedMs, events, backlog } of rows) {
  const rec = recordedMs === null
    ? "-"
    : `${recordedMs < 0 ? "not within 120 s" : `${fmt(recordedMs)} ms`} (${fmt(backlog)} jobs queued at stop; ` +
      `${fmt(events)} events for ${fmt(r.ok)} answers)`;
  line([name, fmt(r.rps), String(r.p50), String(r.p99), String(r.max), `${fmt(r.ok)}/${fmt(r.bad)}`, rec]);
}
console.log("targets: ≥ 3,000 hits/s, p99 ≤ 20 ms, every event recorded ≤ 2,000 ms after the load stops");
Deno.exit(0);
