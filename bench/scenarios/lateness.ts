import { round, type Scenario, sleep } from "../lib.ts";
import { type Bench, delays, queueBatches, settled } from "../stack.ts";

/** Sends scheduled for the one instant. */
const SCHEDULED_N = 1_000;

/**
 * Schedule lateness ("schedule lateness"): SCHEDULED_N sends accepted as batches, all
 * scheduled for one instant 3 s ahead; p50 and p99 of SMTP 250 (sent_at) − scheduledAt.
 * The CPU is measured from that instant until every send has settled.
 *
 * Baseline: none (the worker's poll interval, reported beside it, bounds what is possible).
 * Target: p99 ≤ 1,000 ms.
 */
export async function scheduleLateness(b: Bench): Promise<Record<string, Scenario>> {
  b.log("schedule lateness");
  const instant = new Date(Date.now() + 3000);
  const lateSince = new Date();
  const lateSink = await b.sink.count();
  await queueBatches(b, SCHEDULED_N, "scheduled", instant.toISOString());
  await sleep(Math.max(0, instant.getTime() - Date.now()));
  const [, lateCpu] = await b.cpu.measure(() => settled(b, "scheduled", SCHEDULED_N, 60, lateSince, lateSink));
  const late = await delays(b, "scheduled", "scheduled_at");
  return {
    "schedule lateness": {
      value: round(late.p99),
      unit: "ms (p99 of SMTP 250 − scheduledAt)",
      target: "p99 ≤ 1,000 ms",
      pass: late.p99 <= 1000,
      details: { ...lateCpu, p50_ms: round(late.p50), sends: SCHEDULED_N, poll_ms: b.config.workerPollMs },
    },
  };
}
