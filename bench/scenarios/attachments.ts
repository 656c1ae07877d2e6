import { Buffer } from "node:buffer";
import { pct, round, type Scenario, sleep } from "../lib.ts";
import { type Bench, rawPool, settled } from "../stack.ts";

/** Batches posted per kind for the accept figures (alternating plain and with the file). */
const ROUNDS = 8;

/** Messages the raw ceiling sends. */
const RAW_N = 300;

/** A 1 MB file of random bytes (a PDF's streams do not compress either), base64. */
function file(): string {
  const bytes = new Uint8Array(1024 * 1024);
  for (let i = 0; i < bytes.length; i += 65536) crypto.getRandomValues(bytes.subarray(i, i + 65536));
  return Buffer.from(bytes).toString("base64");
}

/**
 * Attachment batch ("attachment batch accept" and "attachment batch drain"): a
 * 1,000-recipient batch with one shared 1 MB attachment beside the same batch without it.
 *
 * Accept: ROUNDS batches of each kind posted one at a time, alternating, scheduled an hour
 * ahead (each with a new file, so every one stores its blob); p50 per batch.
 * Drain: one batch of each kind due at once, first → last SMTP 250 (sent_at), delivered to
 * the sink in full (each message carries the file: ~1.4 MB).
 * Targets: the attachment batch accepts in ≤ 2× the plain batch's p50 and drains at ≥ 0.7×
 * its rate.
 * The drain's details add a raw ceiling for messages that size on this machine and sink: a
 * nodemailer pool (the service's connection count, TCP_NODELAY) sending RAW_N pre-built,
 * unsigned messages of the delivered size, as fast as they go.
 */
export async function attachmentBatch(b: Bench): Promise<Record<string, Scenario>> {
  b.log("attachment batch");
  const batch = (tag: string, scheduledAt: string, attachments?: unknown) => ({
    templateId: b.templateId,
    scheduledAt,
    tags: { bench: tag },
    ...(attachments ? { attachments } : {}),
    recipients: Array.from({ length: 1000 }, () => b.recipient(tag, "A")),
  });
  const timed = async (body: unknown) => {
    const t0 = performance.now();
    const r = await b.api("POST", "/api/v1/sends/batch", body);
    if (r.status !== 202) throw new Error(JSON.stringify(r.body).slice(0, 300));
    return performance.now() - t0;
  };
  const plainMs: number[] = [], fileMs: number[] = [];
  for (let i = 0; i < ROUNDS; i++) {
    plainMs.push(await timed(batch("att-accept-plain", b.later())));
    fileMs.push(await timed(batch("att-accept-file", b.later(), [{ filename: "terms.pdf", content: file() }])));
  }
  const plainP50 = pct(plainMs, 50), fileP50 = pct(fileMs, 50);

  const drain = async (tag: string, attachments?: unknown) => {
    const sinkBefore = await b.sink.count();
    const since = new Date();
    const at = new Date(Date.now() + 3000);
    await timed(batch(tag, at.toISOString(), attachments));
    await sleep(Math.max(0, at.getTime() - Date.now()));
    const [done, cpu] = await b.cpu.measure(() => settled(b, tag, 1000, 300, since, sinkBefore));
    const { rows: [r] } = await b.pool.query(
      `select extract(epoch from max(sent_at) - min(sent_at)) as span, count(*)::int as n
       from sends where tags->>'bench' = $1 and sent_at is not null`,
      [tag],
    );
    return { rate: (r.n - 1) / r.span, done, cpu, atSink: (await b.sink.count()) - sinkBefore };
  };
  const plain = await drain("att-drain-plain");
  const withFile = await drain("att-drain-file", [{ filename: "terms.pdf", content: file() }]);
  const ceiling = await rawCeiling(b);
  return {
    "attachment batch accept": {
      value: round(fileP50),
      unit: "ms p50 per 1,000-recipient batch with a 1 MB file",
      target: "≤ 2× the plain batch's p50",
      baseline: round(plainP50),
      ratio: round(fileP50 / plainP50, 2),
      pass: fileP50 <= 2 * plainP50,
      details: { batches: ROUNDS, plain_p50_ms: round(plainP50), file_max_ms: round(Math.max(...fileMs)) },
    },
    "attachment batch drain": {
      value: round(withFile.rate),
      unit: "emails/s with a 1 MB file each",
      target: "≥ 0.7× the plain batch's rate",
      baseline: round(plain.rate),
      ratio: round(withFile.rate / plain.rate, 2),
      pass: withFile.rate >= 0.7 * plain.rate && withFile.done.bad === 0 && withFile.atSink === 1000,
      details: {
        ...withFile.cpu,
        raw_ceiling_per_s: round(ceiling),
        of_raw_ceiling: round(withFile.rate / ceiling, 2),
        delivered: withFile.done.done,
        at_sink: withFile.atSink,
        plain_delivered: plain.done.done,
      },
    },
  };
}

/** Messages/s of a raw nodemailer pool sending RAW_N pre-built messages the size of one with the file (~1.4 MB). */
async function rawCeiling(b: Bench): Promise<number> {
  const head = "From: orders@example.com\r\nTo: raw@bench.example.com\r\nSubject: Your terms\r\n" +
    'MIME-Version: 1.0\r\nContent-Type: application/pdf; name="terms.pdf"\r\nContent-Transfer-Encoding: base64\r\n\r\n';
  const raw = Buffer.from(head + file().replace(/.{76}(?=.)/g, "$&\r\n") + "\r\n");
  const transport = rawPool(b);
  let next = 0;
  const t0 = performance.now();
  await Promise.all(Array.from({ length: b.config.smtpPoolSize }, async () => {
    while (next++ < RAW_N) {
      await transport.sendMail({ raw, envelope: { from: "orders@example.com", to: ["raw@bench.example.com"] } });
    }
  }));
  const rate = RAW_N / ((performance.now() - t0) / 1000);
  transport.close();
  return rate;
}
