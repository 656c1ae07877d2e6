/**
 * The worker half of the service: the job runner and the mailer it delivers with. Role
 * `worker` runs it on the process's event loop; role `all` on the worker thread (thread.ts),
 * or on the one loop with PP_WORKER_THREAD=false. The inbound SMTP listener stays on the
 * process's main loop (server.ts): its parser is a Web Worker, and a Worker started from
 * the worker thread answers ~500 ms late under Deno 2.9 (measured), past the parse limit.
 */
import { join } from "node:path";
import type { Deps } from "../context.ts";
import { createMailer } from "../mail/transport.ts";
import { startWorker } from "./worker.ts";

/** The worker half as it runs. */
export interface WorkerSide {
  /** Graceful stop of the runner (running jobs finish), then the mailer. */
  stop(): Promise<void>;
}

/**
 * Starts the worker half on `deps`' event loop (this one, or the worker thread's); with
 * `webhooks: false`, without the webhook dispatcher (it has a thread of its own).
 */
export async function startWorkerSide(deps: Deps, opts = { webhooks: true }): Promise<WorkerSide> {
  const { config, log } = deps;
  const mailer = createMailer({
    smtpUrl: config.smtpUrl,
    outboxDir: join(config.dataDir, "outbox"),
    poolSize: config.smtpPoolSize,
    timeoutMs: config.smtpTimeoutMs,
    log,
  });
  const runner = await startWorker(deps, mailer, opts);
  return {
    async stop() {
      await runner.stop();
      mailer.close();
    },
  };
}
