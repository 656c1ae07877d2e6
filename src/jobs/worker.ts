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
import { dispatchWebhookTask } from "../webhooks/jobs.ts";
import { retentionTask } from "../retention/jobs.ts";
import { recordEventTask } from "../events/jobs.ts";
import { deliverSendTask, promoteScheduledTask, schedulePromotion } from "../sends/jobs.ts";
import { foldStatsTask, scheduleFold } from "../stats/jobs.ts";
import { freePools, startHeartbeat } from "./heartbeat.ts";

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
 * Starts the runner, on the service's pool, with every task and its heartbeat
 * (heartbeat.ts); resolves once it is listening for jobs. It also (re)starts the
 * promote_scheduled and fold_stats cycles at once, so deferred sends and stats deltas are
 * looked at on start.
 */
export async function startWorker(deps: Deps, mailer: Mailer): Promise<Worker> {
  const { config, log } = deps;
  await schedulePromotion(deps.db, 0);
  await scheduleFold(deps.db, 0);
  const logger = new Logger(() => (level, message) => {
    // graphile-worker warns when the pool is smaller than its concurrency. Measured with
    // deno task bench --only drain: sharing the service's pool (PP_DB_POOL_SIZE 50) drains
    // 1,150 emails/s; a pool of its own with 100 connections 670–743/s (more, smaller
    // completion commits). Our tasks hold no connection while they run, so the warning's
    // premise does not hold here, and it is not repeated on every start.
    if (level === "warning" && message.includes("smaller than concurrency")) return;
    // A failed attempt is often a planned retry (SMTP 4xx), already logged by the task;
    // keep its first line as a warning instead of a stack trace at error level.
    if (level === "error" && message.startsWith("Failed task")) {
      log.warn(message.split("\n")[0], { scope: "graphile-worker" });
    } else if (level === "error") log.error(message, { scope: "graphile-worker" });
    else if (level === "warning") log.warn(message, { scope: "graphile-worker" });
    else log.debug(message, { scope: "graphile-worker" });
  });
  // The pools of the runner that is running: the ids its job locks carry (locked_by).
  let pools: string[] = [];
  const events: WorkerEvents = new EventEmitter();
  events.on("pool:create", ({ workerPool }) => pools.push(workerPool.id));
  // Built once: the tasks hold this process's group commits and caches across restarts.
  const taskList = {
    deliver_send: deliverSendTask(deps, mailer),
    promote_scheduled: promoteScheduledTask(deps),
    expand_segment: expandSegmentTask(deps),
    record_event: recordEventTask(deps),
    reputation_check: reputationCheckTask(deps),
    reputation_sweep: reputationSweepTask(deps),
    // Also deletes expired idempotency keys (the former idempotency_cleanup task).
    retention: retentionTask(deps),
    dispatch_webhook: dispatchWebhookTask(deps),
    fold_stats: foldStatsTask(deps),
  };
  const start = () =>
    run({
      pgPool: deps.pool,
      logger,
      events,
      noHandleSignals: true,
      // Running jobs get most of the stop's time to finish; then they are failed back for a
      // retry, leaving the rest for closing the database before main.ts's deadline.
      gracefulShutdownAbortTimeout: Math.max(100, config.shutdownTimeoutMs - 2_000),
      ...runnerSettings(config),
      crontab: CRONTAB,
      taskList,
    });

  let stopping = false;
  let runner = await start();
  let startedAt = performance.now();
  let restarting: Promise<void> | null = null;

  /**
   * A fresh runner, after graphile-worker's own ended itself (its pool lost the database) or
   * after an outage (its listener, local queue and batched completions may be wedged: jobs
   * whose completion failed stay locked by a pool that still runs). The old runner is
   * killed and its pools' jobs are freed at once; a job it was still running may go out
   * twice (what was in flight bounds the duplicates). Retried with backoff while Postgres
   * is away.
   */
  const restart = (why: string, outageSince?: number) => {
    // A runner started since the outage began is fresh already.
    if (outageSince !== undefined && startedAt > outageSince) return;
    restarting ??= (async () => {
      log.warn("restarting the job runner", { why, pools });
      const old = runner;
      const dead = pools;
      pools = [];
      await old.kill("restart").catch(() => {});
      for (let delay = 1_000; !stopping; delay = Math.min(delay * 2, 30_000)) {
        try {
          await freePools(deps, dead);
          runner = await start();
          startedAt = performance.now();
          supervise(runner);
          log.info("job runner restarted");
          return;
        } catch (err) {
          dead.push(...pools);
          pools = [];
          log.warn("job runner restart failed; retrying", { err: String(err), retryInMs: delay });
          await new Promise((res) => setTimeout(res, delay));
        }
      }
    })().finally(() => restarting = null);
  };
  const supervise = (r: typeof runner) => {
    r.promise.catch(() => {}).finally(() => {
      if (!stopping && r === runner) restart("the runner stopped");
    });
  };
  supervise(runner);
  const heartbeat = startHeartbeat(deps, () => pools, (since) => restart("the database is back", since));

  return {
    async stop() {
      stopping = true;
      await restarting;
      await runner.stop().catch(() => {});
      await heartbeat.stop();
    },
  };
}
