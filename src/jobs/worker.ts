/**
 * The job runner: graphile-worker in the same Postgres as the data.
 *
 * Glossary (graphile-worker's words, used the same way across src/):
 * - task: a named function `(payload, helpers)`; ours are snake_case (`deliver_send`).
 * - job: one queued call of a task, a row in `graphile_worker`'s tables with `run_at`
 *   (scheduling), `attempts`/`max_attempts` (retries with exponential backoff) and an
 *   optional `job_key` (a name to replace or remove it by; ours is `send:<id>`).
 * - runner: this process's pool of workers pulling jobs with SKIP LOCKED, so any number
 *   of worker processes can share one database.
 */
import { EventEmitter } from "node:events";
import { Logger, run, type WorkerEvents } from "graphile-worker";
import type { Config } from "../config.ts";
import type { Deps } from "../context.ts";
import type { Mailer } from "../mail/transport.ts";
import { CRONTAB, reputationCheckTask, reputationSweepTask } from "../accounts/jobs.ts";
import { expandSegmentTask } from "../batches/jobs.ts";
import { retentionTask } from "../retention/jobs.ts";
import { recordEventTask } from "../events/jobs.ts";
import { deliverSendTask, promoteScheduledTask, schedulePromotion } from "../sends/jobs.ts";
import { startHeartbeat } from "./heartbeat.ts";
import { openPool } from "../db/database.ts";

/**
 * How our runner pulls and completes jobs (the benchmark runs its no-op baseline with the
 * same settings): concurrency, polling for due scheduled jobs, and graphile-worker's local
 * queue with batched completion.
 */
export function runnerSettings(config: Config) {
  return {
    /** Jobs run at once; default PP_WORKER_CONCURRENCY=100. */
    concurrency: config.workerConcurrency,
    /** Due scheduled jobs are found by polling; default PP_WORKER_POLL_MS=100 (a scheduled send goes out within ~0.1 s of its time; idle, one indexed query per 0.1 s). */
    pollInterval: config.workerPollMs,
    preset: {
      worker: {
        // Fetch jobs in batches and complete them in batches: ~6× the jobs/s of the
        // defaults on this machine (DESIGN.md).
        localQueue: { size: Math.max(config.workerConcurrency * 5, 50) },
        completeJobBatchDelay: 0,
        failJobBatchDelay: 0,
      },
    },
  };
}

/** A running worker. */
export interface Worker {
  /**
   * Graceful stop: no new jobs; jobs fetched but not started go back at once (graphile-worker
   * releases its local queue first); running ones finish, or are failed back for a retry
   * after `PP_SHUTDOWN_TIMEOUT_MS`; then this process's heartbeat is removed.
   */
  stop(): Promise<void>;
}

/**
 * Starts the runner, on its own pool to `databaseUrl`, with every task and its heartbeat
 * (heartbeat.ts); resolves once it is listening for jobs. It also (re)starts the
 * promote_scheduled cycle at once, so deferred sends are looked at on start.
 */
export async function startWorker(deps: Deps, mailer: Mailer, databaseUrl: string): Promise<Worker> {
  const { config, log } = deps;
  await schedulePromotion(deps.db, 0);
  const logger = new Logger(() => (level, message) => {
    // A failed attempt is often a planned retry (SMTP 4xx), already logged by the task;
    // keep its first line as a warning instead of a stack trace at error level.
    if (level === "error" && message.startsWith("Failed task")) {
      log.warn(message.split("\n")[0], { scope: "graphile-worker" });
    } else if (level === "error") log.error(message, { scope: "graphile-worker" });
    else if (level === "warning") log.warn(message, { scope: "graphile-worker" });
    else log.debug(message, { scope: "graphile-worker" });
  });
  // graphile-worker's own connections: its job fetches, completions and LISTEN use a few, but
  // it asks for a pool of at least its concurrency (a warning on every start otherwise). Our
  // tasks use deps.db, so this pool never opens more than graphile-worker itself needs, and
  // the service's pool (PP_DB_POOL_SIZE) stays within a default Postgres's 100 connections.
  const jobsPool = openPool(databaseUrl, config.workerConcurrency);
  // The pools this runner creates: the ids their job locks carry (locked_by).
  const pools: string[] = [];
  const events: WorkerEvents = new EventEmitter();
  events.on("pool:create", ({ workerPool }) => pools.push(workerPool.id));
  const runner = await run({
    pgPool: jobsPool,
    logger,
    events,
    noHandleSignals: true,
    // Running jobs get most of the stop's time to finish; then they are failed back for a
    // retry, leaving the rest for closing the database before main.ts's deadline.
    gracefulShutdownAbortTimeout: Math.max(100, config.shutdownTimeoutMs - 2_000),
    ...runnerSettings(config),
    crontab: CRONTAB,
    taskList: {
      deliver_send: deliverSendTask(deps, mailer),
      promote_scheduled: promoteScheduledTask(deps),
      expand_segment: expandSegmentTask(deps),
      record_event: recordEventTask(deps),
      reputation_check: reputationCheckTask(deps),
      reputation_sweep: reputationSweepTask(deps),
      // Also deletes expired idempotency keys (the former idempotency_cleanup task).
      retention: retentionTask(deps),
    },
  });
  const heartbeat = startHeartbeat(deps, () => pools);
  return {
    async stop() {
      await runner.stop();
      await heartbeat.stop();
      await jobsPool.end();
    },
  };
}
