/**
 * Foundation figures: start-up time on the embedded Postgres (first start with initdb,
 * then a restart), and one send's accept latency and accept → delivered time to a local
 * SMTP server (sequential sends, median and p95). Run: `deno task bench:foundation`.
 * Uses DATABASE_URL for the send figures when set (a fresh database), else the embedded one.
 */
import { loadConfig } from "../src/config.ts";
import { startService } from "../src/server.ts";
import { dropDatabase, freshDatabase, startSmtpSink } from "../tests/helpers.ts";

const N = Number(Deno.args[0] ?? 200);

function pct(xs: number[], p: number): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))];
}

// 1. Start-up on the embedded database: first start (initdb + migrations + seed), then a restart.
const dataDir = await Deno.makeTempDir({ prefix: "pp-bench-" });
const embeddedEnv = { PORT: "0", PP_DATA_DIR: dataDir, PP_LOG_LEVEL: "warn", PP_SEED: "true" };
let t0 = performance.now();
const first = await startService(loadConfig(embeddedEnv));
const firstMs = performance.now() - t0;
await first.stop();
t0 = performance.now();
const second = await startService(loadConfig(embeddedEnv));
const secondMs = performance.now() - t0;
await second.stop();
await Deno.remove(dataDir, { recursive: true });

// 2. One send at a time: accept latency and accept → delivered (SMTP 250 recorded).
const sink = await startSmtpSink();
const sendDir = await Deno.makeTempDir({ prefix: "pp-bench-" });
const benchDb = Deno.env.get("DATABASE_URL") ? await freshDatabase() : undefined;
const service = await startService(loadConfig({
  DATABASE_URL: benchDb,
  PORT: "0",
  PP_DATA_DIR: sendDir,
  PP_LOG_LEVEL: "warn",
  PP_SEED: "true",
  SMTP_URL: sink.url,
}));
const seed = service.seed!;
// The seed key is a test key (outbox); make a live key for the SMTP path.
const { issueKey } = await import("../src/accounts/service.ts");
const { key } = await issueKey(service.deps, seed.accountId, "live");
const accept: number[] = [];
const delivered: number[] = [];
for (let i = 0; i < N; i++) {
  const start = performance.now();
  const res = await fetch(`${service.url}/api/v1/sends`, {
    method: "POST",
    headers: { "x-api-key": key, "content-type": "application/json" },
    body: JSON.stringify({
      templateId: seed.templateId,
      to: `bench${i}@example.com`,
      personalizations: { order_id: `ORD-${i}`, tracking_url: "https://track.example.com/x" },
    }),
  });
  await res.body?.cancel();
  accept.push(performance.now() - start);
  while (sink.messages.length <= i) await new Promise((r) => setTimeout(r, 1));
  delivered.push(performance.now() - start);
}
await service.stop();
if (benchDb) await dropDatabase(benchDb);
await sink.close();
await Deno.remove(sendDir, { recursive: true });

const row = (name: string, v: string) => console.log(`${name.padEnd(44)} ${v}`);
row("embedded start, first (initdb+migrate+seed)", `${firstMs.toFixed(0)} ms`);
row("embedded start, restart", `${secondMs.toFixed(0)} ms`);
row(`accept latency (n=${N}) p50 / p95`, `${pct(accept, 50).toFixed(1)} / ${pct(accept, 95).toFixed(1)} ms`);
row(
  `accept → at SMTP server (n=${N}) p50 / p95`,
  `${pct(delivered, 50).toFixed(1)} / ${pct(delivered, 95).toFixed(1)} ms`,
);
Deno.exit(0);
