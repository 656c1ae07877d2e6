import { Logger, run as runWorker } from "graphile-worker";
import { runnerSettings } from "../../src/jobs/worker.ts";
import { round, type Scenario } from "../lib.ts";
import type { Bench } from "../stack.ts";

/**
 * Job overhead ("job overhead"): `drainN` no-op jobs added at once, then run to the last by a
 * graphile-worker runner in this process with the service's settings (concurrency, poll
 * interval) on the bench's pool; no-op jobs/s.
 *
 * Baseline: the delivery drain's emails/s (`drainRate`, NaN when the drain did not run); the
 * ratio drain ÷ no-op is the runner's share of a delivery.
 * Target: none, a report (it always passes).
 */
export async function jobOverhead(b: Bench, drainRate: number): Promise<Record<string, Scenario>> {
  b.log("job overhead");
  await b.pool.query(
    `select graphile_worker.add_jobs(array(select ('bench_noop', json_build_object('i', g), null, null, null, null,
     null, null)::graphile_worker.job_spec from generate_series(1, $1) g))`,
    [b.drainN],
  );
  let done = 0;
  let finished: () => void = () => {};
  const allDone = new Promise<void>((r) => finished = r);
  const noopT0 = performance.now();
  const runner = await runWorker({
    pgPool: b.pool,
    noHandleSignals: true,
    logger: new Logger(() => () => {}),
    ...runnerSettings(b.config),
    taskList: {
      bench_noop: () => {
        if (++done === b.drainN) finished();
        return Promise.resolve();
      },
    },
  });
  await allDone;
  const noopRate = b.drainN / ((performance.now() - noopT0) / 1000);
  await runner.stop();
  return {
    "job overhead": {
      value: round(noopRate),
      unit: "no-op jobs/s",
      target: "report: delivery drain ÷ no-op jobs (the runner's share of a delivery)",
      baseline: round(drainRate),
      ratio: round(drainRate / noopRate, 2),
      pass: true,
      details: { jobs: b.drainN, concurrency: b.config.workerConcurrency },
    },
  };
}
