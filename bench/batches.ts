/**
 * Batch and segment figures (issue: batch sends and segment sends), on this machine:
 * - a 1,000-recipient batch accepted: median and p90 of 20 (target ≤ 150 ms);
 * - 1,000 batch sends delivered to a local SMTP server (own process) after acceptance (≤ 2 s);
 * - a 50,000-contact segment expanded into sends (≤ 10 s).
 * Run: `deno task bench:batches` (DATABASE_URL's server when set, else the embedded Postgres).
 */
import { loadConfig } from "../src/config.ts";
import { startService } from "../src/server.ts";
import { issueKey } from "../src/accounts/service.ts";
import { startSinkProcess } from "./sink_process.ts";
import { dropDatabase, freshDatabase } from "../tests/helpers.ts";

const sink = await startSinkProcess();
const sinkCount = () => sink.count();

const dataDir = await Deno.makeTempDir({ prefix: "pp-bench-" });
const benchDb = Deno.env.get("DATABASE_URL") ? await freshDatabase() : undefined;
const service = await startService(loadConfig({
  ...Deno.env.toObject(),
  DATABASE_URL: benchDb,
  PORT: "0",
  PP_DATA_DIR: dataDir,
  PP_LOG_LEVEL: "warn",
  PP_SEED: "true",
  SMTP_URL: `smtp://127.0.0.1:${sink.port}`,
}));
const { seed, deps } = service;
const { key } = await issueKey(deps, seed!.accountId, "live");
const api = async (path: string, body: unknown) => {
  const r = await fetch(service.url + path, {
    method: "POST",
    headers: { "x-api-key": key, "content-type": "application/json" },
    body: JSON.stringify(body),
  });
  return { status: r.status, body: await r.json() };
};
const recipients = (tag: string) =>
  Array.from(
    { length: 1000 },
    (_, i) => ({ to: `${tag}-${i}@example.com`, personalizations: { order_id: `${tag}-${i}` } }),
  );
const pct = (xs: number[], p: number) =>
  [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor(p / 100 * xs.length))];

// 1. Accept: 20 batches of 1,000 new addresses, scheduled an hour ahead so that delivery does
// not run during the measurement.
const later = new Date(Date.now() + 3600_000).toISOString();
const accept: number[] = [];
for (let i = 0; i < 20; i++) {
  const t0 = performance.now();
  const r = await api("/api/v1/sends/batch", {
    templateId: seed!.templateId,
    scheduledAt: later,
    recipients: recipients(`a${i}`),
  });
  accept.push(performance.now() - t0);
  if (r.status !== 202) throw new Error(JSON.stringify(r.body));
  await api(`/api/v1/batches/${r.body.batchId}/cancel`, {});
}

// 2. Delivery: 1,000 sends from acceptance to the sink's 1,000th message.
const before = await sinkCount();
const t1 = performance.now();
const d = await api("/api/v1/sends/batch", { templateId: seed!.templateId, recipients: recipients("d") });
if (d.status !== 202) throw new Error(JSON.stringify(d.body));
const accepted = performance.now();
while ((await sinkCount()) < before + 1000) await new Promise((r) => setTimeout(r, 5));
const delivered = performance.now() - accepted;
const acceptD = accepted - t1;

// 3. Segment: 50,000 contacts by SQL, a segment over them, a segment send scheduled ahead.
await deps.pool.query(
  `insert into contacts (account_id, email, company, updated_at)
   select $1, 'seg' || g || '@example.com', 'Bench Co', now() from generate_series(1, 50000) g`,
  [seed!.accountId],
);
const { createSegment } = await import("../src/segments/service.ts");
const segment = await createSegment(deps, {
  kind: "tenant",
  accountId: seed!.accountId,
  apiKeyId: "",
  mode: "live",
  scope: "full",
  domains: null,
}, {
  name: "bench",
  rules: [{ field: "company", op: "EQ", value: "Bench Co" }],
});
const t2 = performance.now();
const s = await api("/api/v1/sends", { templateId: seed!.templateId, segmentId: segment.id, scheduledAt: later });
if (s.status !== 202) throw new Error(JSON.stringify(s.body));
let batch;
do {
  await new Promise((r) => setTimeout(r, 20));
  batch = (await deps.pool.query("select status, count from batches where id = $1", [s.body.batchId])).rows[0];
} while (batch.status === "expanding");
const expanded = performance.now() - t2;

await service.stop();
if (benchDb) await dropDatabase(benchDb);
sink.stop();
await Deno.remove(dataDir, { recursive: true });

const row = (name: string, v: string, target: string) => console.log(`${name.padEnd(48)} ${v.padEnd(26)} ${target}`);
console.log(`SMTP sink: ${sink.kind}`);
row("scenario", "measured", "target");
row(
  "1,000-recipient batch accepted (n=20)",
  `p50 ${pct(accept, 50).toFixed(0)} ms, p90 ${pct(accept, 90).toFixed(0)} ms`,
  "p50 ≤ 150 ms",
);
row(
  "1,000 batch sends → SMTP sink after 202",
  `${delivered.toFixed(0)} ms (accept ${acceptD.toFixed(0)} ms)`,
  "≤ 2,000 ms",
);
row(
  `50,000-contact segment expanded (${batch.status})`,
  `${expanded.toFixed(0)} ms, ${batch.count} sends`,
  "≤ 10,000 ms",
);
Deno.exit(0);
