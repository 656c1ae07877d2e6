/**
 * Starting and stopping the whole service: config → database (embedded when no
 * DATABASE_URL) → migrations → secrets → seed → HTTP and/or worker. main.ts and the
 * tests both start it this way.
 *
 * Role `all` runs the worker on a thread of its own (jobs/thread.ts) unless
 * PP_WORKER_THREAD=false: the API and the worker each get an event loop, so a delivery burst
 * or a slow render never delays an HTTP answer. The webhook dispatcher gets a third: on the
 * worker's loop each webhook took 110–150 µs of it, so 2,000/s took a quarter of the loop
 * that delivers the emails (the drain with webhooks ran at 0.66–0.74 of the drain without);
 * on the API's loop it slowed, and was slowed by, the acceptance of batches. That thread runs
 * only while there is webhook work (an enabled endpoint, or a delivery queued): see
 * jobs/on_demand.ts. Each loop builds its handles with deps.ts
 * openDeps, and the worker half is jobs/side.ts wherever it runs.
 */
import { resolve } from "node:path";
import { createApp } from "./app.ts";
import type { Config } from "./config.ts";
import type { Deps } from "./context.ts";
import { openDb } from "./db/database.ts";
import { openDeps } from "./deps.ts";
import { type EmbeddedDb, startEmbeddedPostgres } from "./db/embedded.ts";
import { migrate } from "./db/migrate.ts";
import { stopLiveEvents } from "./events/live.ts";
import { startWorkerSide, type WorkerSide } from "./jobs/side.ts";
import { startWorkerThread, type WorkerThread } from "./jobs/thread.ts";
import { onDemandThread } from "./jobs/on_demand.ts";
import { hasWebhookWork, WEBHOOK_WORK_CHANNEL } from "./webhooks/repo.ts";
import { type InboundSmtp, startInboundSmtp } from "./inbound/smtp.ts";
import { startSubmission, type Submission } from "./submission/smtp.ts";
import { createLogger } from "./log.ts";
import { resolveSecrets } from "./secrets.ts";
import { seedIfEmpty, type SeedResult } from "./seed.ts";

/** How often role `all` looks for webhook work to start its webhook thread for, and how long it idles before it stops. */
const WEBHOOK_THREAD_CHECK_MS = 1_000;
const WEBHOOK_THREAD_IDLE_MS = 60_000;

/** A running service. */
export interface Service {
  deps: Deps;
  /** Where HTTP listens, e.g. http://127.0.0.1:8080. */
  url: string;
  /** What the dev seed created on this start, if it ran. */
  seed: SeedResult | null;
  /** True when this start generated the admin token (it is printed once). */
  adminTokenGenerated: boolean;
  /** The inbound SMTP listener's port (DSN/ARF reports), when PP_INBOUND_SMTP_PORT started one. */
  inboundSmtpPort?: number;
  /** The SMTP submission listener's port, when PP_SUBMISSION_PORT started one. */
  submissionPort?: number;
  /** Graceful stop: no new requests or jobs, in-flight work finishes, then the database closes. */
  stop(): Promise<void>;
}

/** Starts everything `config.role` asks for; resolves once /healthz would answer 200. */
export async function startService(config: Readonly<Config>): Promise<Service> {
  const log = createLogger(config.logLevel);
  const t0 = performance.now();
  let embedded: EmbeddedDb | null = null;
  let databaseUrl = config.databaseUrl;
  if (!databaseUrl) {
    embedded = await startEmbeddedPostgres(resolve(config.dataDir, "postgres"));
    databaseUrl = embedded.url;
    log.info("embedded postgres started", { ms: Math.round(performance.now() - t0) });
  }
  const opened = openDb(databaseUrl, config.dbPoolSize);
  await migrate(opened.db, opened.pool);
  const { adminTokenGenerated, ...secrets } = await resolveSecrets(config);
  const own = await openDeps(config, opened, secrets, log, config.publicUrl ?? `http://${config.host}:${config.port}`);
  const { deps } = own;
  const seed = config.seed ? await seedIfEmpty(deps) : null;

  // Listen first (PORT=0 learns its port here, and the default public URL with it), but
  // answer /healthz 503 until the worker runs too.
  let ready = false;
  const threads: Pick<WorkerThread, "metrics" | "stop">[] = [];
  const app = createApp(deps, {
    healthOnly: config.role === "worker",
    ready: () => ready,
    // The threads' counters belong to this process's /metrics (added up series by series).
    moreMetrics: async () => (await Promise.all(threads.map((t) => t.metrics()))).flat(),
  });
  const server = Deno.serve({ port: config.port, hostname: config.host, onListen: () => {} }, app.fetch);
  const addr = server.addr as Deno.NetAddr;
  const url = `http://${addr.hostname}:${addr.port}`;
  if (!config.publicUrl) deps.publicUrl = url;

  let worker: WorkerSide | null = null;
  if (config.role === "all" && config.workerThread) {
    const init = { config, databaseUrl, secrets, publicUrl: deps.publicUrl };
    threads.push(await startWorkerThread({ ...init, part: "worker" }, log));
    const webhooks = onDemandThread({
      name: "webhooks",
      start: () => startWorkerThread({ ...init, part: "webhooks" }, log),
      wanted: () => hasWebhookWork(deps.db),
      everyMs: WEBHOOK_THREAD_CHECK_MS,
      idleMs: WEBHOOK_THREAD_IDLE_MS,
      log,
    });
    // An endpoint added or enabled (by any process) starts it at once.
    deps.notices.on(WEBHOOK_WORK_CHANNEL, () => webhooks.wake());
    threads.push(webhooks);
  } else if (config.role !== "api") {
    worker = await startWorkerSide(deps);
  }
  // Bounce and complaint reports by mail: a worker-side input, on this loop in either case
  // (jobs/side.ts says why).
  let inbound: InboundSmtp | null = null;
  if (config.role !== "api" && config.inboundSmtpPort !== undefined) {
    inbound = await startInboundSmtp(deps, config.inboundSmtpPort);
  }
  // SMTP submission: an API input, beside HTTP on this loop.
  let submission: Submission | null = null;
  if (config.role !== "worker" && config.submissionPort !== undefined) {
    submission = await startSubmission(deps, config.submissionPort);
  }
  ready = true;
  log.info("service started", {
    role: config.role,
    workerThread: threads.length > 0,
    url,
    ms: Math.round(performance.now() - t0),
  });

  return {
    deps,
    url,
    seed,
    adminTokenGenerated,
    inboundSmtpPort: inbound?.port,
    submissionPort: submission?.port,
    async stop() {
      // Live subscriptions never end on their own: end them (their streams complete) while
      // the server drains, or the drain would wait for them forever.
      const drained = server.shutdown();
      await stopLiveEvents(deps);
      // Messages being accepted finish (their clients get their 250) before the database closes.
      await submission?.close();
      await drained;
      // Before the database closes: reports being read still queue their events.
      await inbound?.close();
      for (const t of threads) await t.stop();
      await worker?.stop();
      await own.close();
      await embedded?.stop();
      log.info("service stopped");
    },
  };
}
