/**
 * The worker thread's entry (jobs/thread.ts starts it): opens its own pool and handles
 * with deps.ts openDeps, starts the worker half or the webhook dispatcher (ThreadInit.part),
 * and answers the parent's messages.
 * Its log lines are the process's (stderr), as in one event loop.
 */
import { openDb } from "../db/database.ts";
import { createLogger } from "../log.ts";
import { ownCounts } from "../metrics/metrics.ts";
import { openDeps, type OpenedDeps } from "../deps.ts";
import { startWorkerSide, type WorkerSide } from "./side.ts";
import type { FromThread, ToThread } from "./thread.ts";
import { startWebhookDispatcher, type WebhookDispatcher } from "../webhooks/jobs.ts";

/** The thread's side of the channel (typed here: src/ is checked with the window's globals). */
const port = globalThis as unknown as {
  onmessage: ((e: MessageEvent<ToThread>) => void) | null;
  postMessage(m: FromThread): void;
};

let own: OpenedDeps | null = null;
let side: WorkerSide | null = null;
let webhooks: WebhookDispatcher | null = null;

port.onmessage = async (e) => {
  const m = e.data;
  if (m.kind === "start") {
    const { part, config, databaseUrl, secrets, publicUrl } = m.init;
    const log = createLogger(config.logLevel);
    try {
      // The webhook thread renders nothing: no sandboxes of its own.
      const its = part === "webhooks" ? { ...config, renderWorkers: 0 } : config;
      own = await openDeps(its, openDb(databaseUrl, config.dbPoolSize), secrets, log, publicUrl);
      if (part === "webhooks") webhooks = startWebhookDispatcher(own.deps);
      else side = await startWorkerSide(own.deps, { webhooks: false });
      port.postMessage({ kind: "ready" });
    } catch (err) {
      await own?.close().catch(() => {});
      port.postMessage({ kind: "start_failed", error: String(err) });
    }
  } else if (m.kind === "metrics") {
    port.postMessage({ kind: "metrics", id: m.id, metrics: await ownCounts() });
  } else if (m.kind === "stop") {
    try {
      await webhooks?.stop(Math.max(100, own!.deps.config.shutdownTimeoutMs - 2_000));
      await side?.stop();
      await own?.close();
    } finally {
      port.postMessage({ kind: "stopped" });
    }
  }
};
