/**
 * Starting and stopping the whole service: config → database (embedded when no
 * DATABASE_URL) → migrations → secrets → seed → HTTP and/or worker. main.ts and the
 * tests both start it this way.
 */
import { join, resolve } from "node:path";
import { createApp } from "./app.ts";
import type { Config } from "./config.ts";
import type { Deps } from "./context.ts";
import { openDb } from "./db/database.ts";
import { type EmbeddedDb, startEmbeddedPostgres } from "./db/embedded.ts";
import { migrate } from "./db/migrate.ts";
import { stopLiveEvents } from "./events/live.ts";
import { noticeListener } from "./db/listen.ts";
import { CACHE_CHANNEL, dropAnnounced } from "./cache.ts";
import { startWorker, type Worker } from "./jobs/worker.ts";
import { type InboundSmtp, startInboundSmtp } from "./inbound/smtp.ts";
import { createLogger } from "./log.ts";
import { RenderPool } from "./mail/render.ts";
import { createMailer } from "./mail/transport.ts";
import { resolveSecrets } from "./secrets.ts";
import { seedIfEmpty, type SeedResult } from "./seed.ts";

/**
 * Heap cap of each render sandbox, MB: room for three 2 MB parts being built, small enough
 * that a template allocating without end dies in well under a second.
 */
const RENDER_HEAP_MB = 192;

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
  const { db, pool, close } = openDb(databaseUrl, config.dbPoolSize);
  await migrate(db, pool);
  const { adminTokenGenerated, ...secrets } = await resolveSecrets(config);
  const notices = noticeListener(pool, log);
  // Every role caches keys, templates and account state: all of them follow the changes.
  notices.on(CACHE_CHANNEL, dropAnnounced);
  await notices.whenListening().catch((err) => {
    // It keeps trying; the caches serve nothing until it listens.
    log.warn("notice connection not up yet", { err: String(err) });
  });
  const deps: Deps = {
    db,
    pool,
    config,
    secrets,
    log,
    publicUrl: config.publicUrl ?? `http://${config.host}:${config.port}`,
    renderer: new RenderPool({
      size: config.renderWorkers,
      timeoutMs: config.renderTimeoutMs,
      heapMb: RENDER_HEAP_MB,
      log,
    }),
    notices,
  };
  const seed = config.seed ? await seedIfEmpty(deps) : null;

  // Listen first (PORT=0 learns its port here, and the default public URL with it), but
  // answer /healthz 503 until the worker runs too.
  let ready = false;
  const app = createApp(deps, { healthOnly: config.role === "worker", ready: () => ready });
  const server = Deno.serve({ port: config.port, hostname: config.host, onListen: () => {} }, app.fetch);
  const addr = server.addr as Deno.NetAddr;
  const url = `http://${addr.hostname}:${addr.port}`;
  if (!config.publicUrl) deps.publicUrl = url;

  const mailer = createMailer({
    smtpUrl: config.smtpUrl,
    outboxDir: join(config.dataDir, "outbox"),
    poolSize: config.smtpPoolSize,
    timeoutMs: config.smtpTimeoutMs,
    log,
  });
  let runner: Worker | null = null;
  if (config.role !== "api") runner = await startWorker(deps, mailer);
  // Bounce and complaint reports by mail: a worker-side input, like the job runner.
  let inbound: InboundSmtp | null = null;
  if (config.role !== "api" && config.inboundSmtpPort !== undefined) {
    inbound = await startInboundSmtp(deps, config.inboundSmtpPort);
  }
  ready = true;
  log.info("service started", { role: config.role, url, ms: Math.round(performance.now() - t0) });

  return {
    deps,
    url,
    seed,
    adminTokenGenerated,
    inboundSmtpPort: inbound?.port,
    async stop() {
      // Live subscriptions never end on their own: end them (their streams complete) while
      // the server drains, or the drain would wait for them forever.
      const drained = server.shutdown();
      await stopLiveEvents(deps);
      await drained;
      // Before the database closes: reports being read still queue their events.
      await inbound?.close();
      await runner?.stop();
      mailer.close();
      deps.renderer.close();
      await notices.stop();
      await close();
      await embedded?.stop();
      log.info("service stopped");
    },
  };
}
