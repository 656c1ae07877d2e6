import { load, round, type Scenario } from "../lib.ts";
import { type Bench, delays, sendRequest, settled } from "../stack.ts";

/** Sends/s of the fixed-rate load (autocannon's overallRate, over 16 connections). */
const LATENCY_RATE = 200;

/**
 * Latency ("latency"): POST /api/v1/sends at a fixed LATENCY_RATE for `latencyS`, each sent at
 * once; p50 and p99 of accept (created_at) → SMTP 250 (sent_at), once every send has settled.
 * The CPU is measured over the load.
 *
 * Baseline: none.
 * Target: p99 ≤ 1,000 ms at 200 sends/s.
 */
export async function latency(b: Bench): Promise<Record<string, Scenario>> {
  b.log("latency");
  const latencySince = new Date();
  const latencySink = await b.sink.count();
  const [, latencyCpu] = await b.cpu.measure(() =>
    load({
      url: b.base,
      connections: 16,
      overallRate: LATENCY_RATE,
      duration: b.latencyS,
      requests: [sendRequest(b, "latency", { tags: { bench: "latency" } })],
    }, 202)
  );
  const { rows: [{ n: latencyN }] } = await b.pool.query(
    `select count(*)::int as n from sends where tags->>'bench' = 'latency'`,
  );
  await settled(b, "latency", latencyN, 120, latencySince, latencySink);
  const lat = await delays(b, "latency", "created_at");
  return {
    "latency": {
      value: round(lat.p99),
      unit: "ms (p99 accept → SMTP 250)",
      target: "p99 ≤ 1,000 ms at 200 sends/s",
      pass: lat.p99 <= 1000,
      details: { ...latencyCpu, p50_ms: round(lat.p50, 1), sends: latencyN, rate_per_s: round(latencyN / b.latencyS) },
    },
  };
}
