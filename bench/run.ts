/**
 * `deno task bench [--quick]`: the service measured against its own limits (issue: performance).
 *
 * It starts its own stack (bench/stack.ts) — the service as `deno task start` runs it, in a
 * child process on a fresh database (DATABASE_URL's server when set, else an embedded
 * Postgres), and an SMTP sink in another process (postfix's `smtp-sink` when installed, else
 * npm smtp-server under Deno) — runs each scenario (bench/scenarios/, one file each, with
 * what it measures and its target) next to a raw baseline measured in the same run (these
 * machines are shared, so a ratio says more than an absolute time), prints a table and
 * writes bench/results.json. Load comes from autocannon (npm) in this process, never from
 * the service's own event loop.
 *
 * Options:
 * - `--quick`: every phase shortened (≤ 90 s in all);
 * - `--only drain,tracking`: just these scenarios (accept, batch, lateness, drain, webhooks, jobs,
 *   latency, tracking, graphql, attachments, submission, mixed, stats), in the usual order (mixed also runs on two stacks of
 *   its own: `split`, an api and a worker process, and `one-loop`, PP_WORKER_THREAD=false); `growth` (0, 1M and 5M
 *   existing sends, on a stack of its own, ~20 min) runs only when named here;
 * - `--profile <dir>`: the service writes a V8 CPU profile there when it stops (Deno's --cpu-prof);
 * - `--workers N`: N more service processes with PP_ROLE=worker beside the first (horizontal scaling).
 * TUNABLES set in the bench's environment are passed on to the service.
 *
 * The README's Performance section is a copy of the table this prints.
 */
import { round, type Scenario } from "./lib.ts";
import { clearJobsAhead, type Sizes, startStack } from "./stack.ts";
import { singleSendAccept } from "./scenarios/accept.ts";
import { batchAccept } from "./scenarios/batch.ts";
import { scheduleLateness } from "./scenarios/lateness.ts";
import { deliveryDrain } from "./scenarios/drain.ts";
import { jobOverhead } from "./scenarios/jobs.ts";
import { webhooks } from "./scenarios/webhooks.ts";
import { latency } from "./scenarios/latency.ts";
import { tracking } from "./scenarios/tracking.ts";
import { graphqlVsRest } from "./scenarios/graphql.ts";
import { mixed } from "./scenarios/mixed.ts";
import { statsQuery } from "./scenarios/stats.ts";
import { attachmentBatch } from "./scenarios/attachments.ts";
import { submission } from "./scenarios/submission.ts";
import { growth } from "./scenarios/growth.ts";

/** The value following `--name` on the command line, if the flag is given. */
const option = (name: string) => Deno.args.includes(name) ? Deno.args[Deno.args.indexOf(name) + 1] : undefined;

const QUICK = Deno.args.includes("--quick");
const ONLY = option("--only")?.split(",") ?? null;
const want = (name: string) => ONLY === null || ONLY.includes(name);
const EXTRA_WORKERS = option("--workers") === undefined ? 0 : Number(option("--workers"));
/** Settings passed on to the service when set in the bench's environment. */
const TUNABLES = [
  "PP_WORKER_CONCURRENCY",
  "PP_WORKER_POLL_MS",
  "PP_SMTP_POOL_SIZE",
  "PP_DB_POOL_SIZE",
  "PP_WORKER_THREAD",
];
const SIZES: Sizes = {
  quick: QUICK,
  loadS: QUICK ? 4 : 10,
  drainN: QUICK ? 5_000 : 20_000,
  latencyS: QUICK ? 8 : 30,
};

const started = performance.now();
const scenarios: Record<string, Scenario> = {};
const stackOptions = {
  started,
  profileDir: option("--profile"),
  extraWorkers: EXTRA_WORKERS,
  tunables: Object.fromEntries(TUNABLES.flatMap((k) => Deno.env.get(k) ? [[k, Deno.env.get(k)!]] : [])),
};
const { bench: b, stop } = await startStack(SIZES, stackOptions);

// The accept scenarios first, on an idle worker (their sends are scheduled an hour ahead).
if (want("accept")) Object.assign(scenarios, await singleSendAccept(b));
if (want("batch")) Object.assign(scenarios, await batchAccept(b));
await clearJobsAhead(b);
// Then the delivery scenarios, each on the queue it fills.
if (want("lateness")) Object.assign(scenarios, await scheduleLateness(b));
let drainRate = NaN;
if (want("drain")) {
  const drain = await deliveryDrain(b);
  Object.assign(scenarios, drain.rows);
  drainRate = drain.rate;
}
if (want("webhooks")) Object.assign(scenarios, await webhooks(b, drainRate));
if (want("jobs")) Object.assign(scenarios, await jobOverhead(b, drainRate));
if (want("latency")) Object.assign(scenarios, await latency(b));
if (want("tracking")) Object.assign(scenarios, await tracking(b));
if (want("graphql")) Object.assign(scenarios, await graphqlVsRest(b));
if (want("attachments")) Object.assign(scenarios, await attachmentBatch(b));
if (want("submission")) Object.assign(scenarios, await submission(b));
if (want("mixed")) Object.assign(scenarios, await mixed(b));
// Last on this stack: its million synthetic sends would weigh on the scenarios after it.
if (want("stats")) Object.assign(scenarios, await statsQuery(b));

await stop();

// The mixed load again on stacks of their own: the two-process deployment and the one event loop.
if (want("mixed")) {
  for (const topology of ["split", "one-loop"] as const) {
    const other = await startStack(SIZES, { ...stackOptions, topology });
    try {
      Object.assign(scenarios, await mixed(other.bench));
    } finally {
      await other.stop();
    }
  }
}

// How the cost grows with the data: millions of sends on a stack of their own. Only when asked
// (`--only growth`): loading five million sends with their events takes ~20 minutes here.
if (ONLY?.includes("growth")) {
  const other = await startStack(SIZES, stackOptions);
  try {
    Object.assign(scenarios, await growth(other.bench));
  } finally {
    await other.stop();
  }
}

const results = {
  generatedAt: new Date().toISOString(),
  quick: QUICK,
  seconds: round((performance.now() - started) / 1000),
  machine: {
    cpus: navigator.hardwareConcurrency,
    deno: Deno.version.deno,
    postgres: Deno.env.get("DATABASE_URL") ? "DATABASE_URL's server" : "embedded",
    smtpSink: b.sink.kind,
    serviceProcesses: 1 + EXTRA_WORKERS,
  },
  scenarios,
};
await Deno.writeTextFile(new URL("./results.json", import.meta.url), JSON.stringify(results, null, 2) + "\n");
console.log(table(results));
Deno.exit(0);

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
