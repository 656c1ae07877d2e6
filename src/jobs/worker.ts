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
import { startWebhookDispatcher } from "../webhooks/jobs.ts";
import { retentionTask } from "../retention/jobs.ts";
import { recordEventTask } from "../events/jobs.ts";
import { deliverSendTask, promoteScheduledTask, schedulePromotion } from "../sends/jobs.ts";
import { foldStatsTask, scheduleFold } from "../stats/jobs.ts";
import { freePools, startHeartbeat } from "./heartbeat.ts";
import { isDatabaseUnavailable } from "../errors.ts";

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

/** Whether the guard is on this event loop already (a thread or process starts one worker, tests several). */
let guarded = false;

/**
 * Keeps a Postgres outage from ending the process. graphile-worker 0.18 shuts its runner down
 * itself when it cannot record jobs as failed or completed (main.js, the batch error
 * handler), and does not catch that shutdown's own rejection: with Postgres gone, its
 * attempt to hand the running jobs back fails too, and the rejection is unhandled, which ends
 * the thread and the process (tests/outage_test.ts, while webhooks were being posted). An
 * unhandled rejection that says the database is unavailable (errors.ts) is logged and
 * dropped: the runner has stopped, and startWorker's supervision starts fresh runners when
 * Postgres is back. Any other stays fatal.
 */
/** How graphile-worker's local queue rethrows a failed return of its jobs: a new Error with the cause's message only. */
const RETURN_FAILED = "Error occurred whilst returning jobs from local queue to database queue: ";

/**
 * Whether an unhandled rejection is the database being away, also when graphile-worker's
 * local queue rethrew it as a bare message (`…: connect ECONNREFUSED 127.0.0.1:5432`, no code
 * and no cause: it ended the worker thread, and the process, in an outage test).
 */
export function isRunnerOutage(reason: unknown): boolean {
  if (isDatabaseUnavailable(reason)) return true;
  const message = reason instanceof Error ? reason.message : "";
  if (!message.startsWith(RETURN_FAILED)) return false;
  const rest = message.slice(RETURN_FAILED.length);
  return isDatabaseUnavailable({ message: rest, code: /\b(E[A-Z]+)\b/.exec(rest)?.[1] });
}

function surviveRunnerShutdowns(log: Deps["log"]): void {
  if (guarded) return;
  guarded = true;
  globalThis.addEventListener("unhandledrejection", (e) => {
    const reasons = e.reason instanceof AggregateError ? e.reason.errors : [e.reason];
    if (!reasons.length || !reasons.every(isRunnerOutage)) return;
    e.preventDefault();
    log.warn("job runner: an unhandled database error while Postgres is away, dropped", { err: String(e.reason) });
  });
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
 * Starts the runner, on the service's pool, with its heartbeat (heartbeat.ts), and the webhook
 * dispatcher unless `opts.webhooks` is false (role `all` runs it on a thread of its own);
 * resolves once the runner is listening for jobs. It also (re)starts the
 * promote_scheduled and fold_stats cycles at once, so deferred sends and stats deltas are
 * looked at on start.
 */
export async function startWorker(deps: Deps, mailer: Mailer, opts: { webhooks: boolean }): Promise<Worker> {
  const { config, log } = deps;
  surviveRunnerShutdowns(log);
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
  // The pools of the runners that are running: the ids their job locks carry (locked_by).
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
    fold_stats: foldStatsTask(deps),
  };
  const common = {
    pgPool: deps.pool,
    logger,
    events,
    noHandleSignals: true,
    // Running jobs get most of the stop's time to finish; then they are failed back for a
    // retry, leaving the rest for closing the database before main.ts's deadline.
    gracefulShutdownAbortTimeout: Math.max(100, config.shutdownTimeoutMs - 2_000),
  };
  const specs = [{ ...common, ...runnerSettings(config), crontab: CRONTAB, taskList }];
  type Runner = Awaited<ReturnType<typeof run>>;
  /** Starts every runner; when one fails to start, those already started are killed. */
  const start = async (): Promise<Runner[]> => {
    const started: Runner[] = [];
    try {
      for (const spec of specs) started.push(await run(spec));
      return started;
    } catch (err) {
      await Promise.all(started.map((r) => r.kill("start failed").catch(() => {})));
      throw err;
    }
  };

  let stopping = false;
  let runners = await start();
  let startedAt = performance.now();
  let restarting: Promise<void> | null = null;

  /**
   * Fresh runners, after graphile-worker's own ended itself (its pool lost the database) or
   * after an outage (its listener, local queue and batched completions may be wedged: jobs
   * whose completion failed stay locked by a pool that still runs). The old runners are
   * killed and their pools' jobs are freed at once; a job one was still running may go out
   * twice (what was in flight bounds the duplicates). Retried with backoff while Postgres
   * is away.
   */
  const restart = (why: string, outageSince?: number) => {
    // Runners started since the outage began are fresh already.
    if (outageSince !== undefined && startedAt > outageSince) return;
    restarting ??= (async () => {
      log.warn("restarting the job runner", { why, pools });
      const old = runners;
      const dead = pools;
      pools = [];
      await Promise.all(old.map((r) => r.kill("restart").catch(() => {})));
      for (let delay = 1_000; !stopping; delay = Math.min(delay * 2, 30_000)) {
        try {
          await freePools(deps, dead);
          runners = await start();
          startedAt = performance.now();
          supervise(runners);
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
  /** Any runner that ends by itself restarts them all. */
  const supervise = (rs: Runner[]) => {
    for (const r of rs) {
      r.promise.catch(() => {}).finally(() => {
        if (!stopping && rs === runners) restart("the runner stopped");
      });
    }
  };
  supervise(runners);
  // graphile-worker gives a pool up when it cannot record jobs as failed or completed (the
  // database gone): it shuts it down, and its runner's promise may never settle while the
  // jobs it could not hand back stay locked by a pool this process still beats for. A
  // restart frees them, once Postgres answers again. Only a current pool's counts: one that a
  // restart is killing may give up too, and must not restart the fresh runners.
  events.on("pool:fatalError", ({ workerPool, action }) => {
    if (!stopping && pools.includes(workerPool.id)) restart(`graphile-worker gave its pool up (${action})`);
  });
  const heartbeat = startHeartbeat(deps, () => pools, (since) => restart("the database is back", since));
  // Webhooks are not graphile-worker jobs (webhooks/jobs.ts): their dispatcher rides out an
  // outage by itself.
  const webhooks = opts.webhooks ? startWebhookDispatcher(deps) : null;

  return {
    async stop() {
      stopping = true;
      await restarting;
      await Promise.all([
        ...runners.map((r) => r.stop().catch(() => {})),
        webhooks?.stop(Math.max(100, config.shutdownTimeoutMs - 2_000)),
      ]);
      await heartbeat.stop();
    },
  };
}
