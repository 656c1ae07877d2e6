/**
 * A scrape: the database-wide gauges collected (the queue here, the collectors other
 * domains registered in metrics.ts), then the registry in Prometheus' text format.
 */
import type { Kysely } from "kysely";
import { AggregatorRegistry } from "prom-client";
import type { Database } from "../db/tables.ts";
import type { Logger } from "../log.ts";
import {
  collectErrors,
  collectors,
  jobsFailed,
  jobsOldestDueSeconds,
  jobsQueued,
  jobsRunning,
  type MetricsJson,
  registerCollector,
  registry,
} from "./metrics.ts";
import { queueByTask } from "./repo.ts";

/** Tasks seen by this process: one that has no job any more shows 0, not a vanished series. */
const seenTasks = new Set<string>();

/** The `pp_jobs_*` gauges from one read of graphile-worker's queue. */
async function collectQueue(db: Kysely<Database>): Promise<void> {
  const rows = await queueByTask(db);
  for (const r of rows) seenTasks.add(r.task);
  const byTask = new Map(rows.map((r) => [r.task, r]));
  for (const task of seenTasks) {
    const r = byTask.get(task);
    jobsQueued.set({ task, state: "due" }, r?.due ?? 0);
    jobsQueued.set({ task, state: "scheduled" }, r?.scheduled ?? 0);
    jobsRunning.set({ task }, r?.running ?? 0);
    jobsFailed.set({ task }, r?.failed ?? 0);
    jobsOldestDueSeconds.set({ task }, r?.oldestDueS ?? 0);
  }
}

registerCollector("jobs", collectQueue);

/**
 * Runs every collector at once (one that fails is logged and counted in
 * `pp_metrics_collect_errors_total`, and its gauges keep their last values), then answers
 * the registry's text and its content type. `more` (the worker thread's counts, in role
 * `all`) is added to this loop's, series by series.
 */
export async function scrape(
  db: Kysely<Database>,
  log: Logger,
  more?: () => Promise<MetricsJson>,
): Promise<{ body: string; contentType: string }> {
  const others = more?.();
  await Promise.all(
    [...collectors].map(async ([name, collect]) => {
      try {
        await collect(db);
      } catch (err) {
        collectErrors.inc({ collector: name });
        log.warn("metrics collector failed", { collector: name, err: String(err) });
      }
    }),
  );
  const extra = (await others) ?? [];
  if (extra.length === 0) return { body: await registry.metrics(), contentType: registry.contentType };
  const sum = AggregatorRegistry.aggregate([await registry.getMetricsAsJSON(), extra]);
  return { body: await sum.metrics(), contentType: registry.contentType };
}
