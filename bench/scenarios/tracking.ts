import { trackingUrls } from "../../src/mail/tracking.ts";
import { CONNECTIONS, freePort, load, round, type Scenario, warmUp } from "../lib.ts";
import type { Bench } from "../stack.ts";

/**
 * Tracking ("tracking"): GET of the `pixel` sample's open pixel at CONNECTIONS connections for
 * `loadS`, after a warm-up; hits/s answered 200, p50 and p99.
 *
 * Baseline: a bare Deno.serve in a process of its own (bench/bare_gif.ts) answering the same
 * GIF, under the same warm-up and load.
 * Target: ≥ 3,000/s, p99 ≤ 20 ms.
 */
export async function tracking(b: Bench): Promise<Record<string, Scenario>> {
  b.log("tracking");
  const pixel = trackingUrls(b.base, b.secret, b.samples.pixel).open;
  await warmUp({ url: pixel }, 200);
  const [track, trackCpu] = await b.cpu.measure(() =>
    load({ url: pixel, connections: CONNECTIONS, duration: b.loadS }, 200)
  );
  const barePort = freePort();
  const bare = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", new URL("../bare_gif.ts", import.meta.url).pathname, String(barePort)],
    stdout: "piped",
  }).spawn();
  await bare.stdout.pipeThrough(new TextDecoderStream()).getReader().read();
  await warmUp({ url: `http://127.0.0.1:${barePort}/t/o/x` }, 200);
  const bareLoad = await load(
    { url: `http://127.0.0.1:${barePort}/t/o/x`, connections: CONNECTIONS, duration: b.loadS },
    200,
  );
  bare.kill();
  await bare.status;
  return {
    "tracking": {
      value: round(track.rps),
      unit: "pixel hits/s",
      target: "≥ 3,000/s, p99 ≤ 20 ms",
      baseline: round(bareLoad.rps),
      ratio: round(track.rps / bareLoad.rps, 2),
      pass: track.rps >= 3000 && track.p99 <= 20,
      details: {
        ...trackCpu,
        p50_ms: track.p50,
        p99_ms: track.p99,
        other_answers: track.other,
        baseline_p99_ms: bareLoad.p99,
      },
    },
  };
}
