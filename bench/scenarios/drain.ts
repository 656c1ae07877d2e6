import { trackingUrls } from "../../src/mail/tracking.ts";
import { cpuTimes, round, rssOf, type Scenario, sleep } from "../lib.ts";
import { type Bench, queueBatches, rawPool, settled } from "../stack.ts";

/**
 * Delivery drain ("delivery drain" and "memory", one measurement): `drainN` queued sends
 * rendered, tracked, signed and delivered to the sink. They are accepted for one instant a
 * little ahead, so that every one is queued when the worker starts on them; the rate is
 * first → last SMTP 250 (sent_at). Meanwhile the service's RSS is sampled every 100 ms.
 *
 * Baseline: a raw nodemailer pool (the service's SMTP pool size, TCP_NODELAY as ours) sending
 * `drainN` pre-built messages of the same size, as many in flight as the worker's concurrency.
 * Targets: ≥ 1,500/s and ≥ 0.6× baseline, every send delivered; peak RSS of the service ≤ 300 MB.
 *
 * `rate` is the unrounded emails/s, the job-overhead scenario's baseline.
 */
export async function deliveryDrain(b: Bench): Promise<{ rows: Record<string, Scenario>; rate: number }> {
  b.log(`delivery drain (${b.drainN})`);
  const sinkBefore = await b.sink.count();
  const drainSince = new Date();
  const drainAt = new Date(Date.now() + (b.quick ? 3000 : 6000));
  await queueBatches(b, b.drainN, "drain", drainAt.toISOString());
  let peakRss = 0;
  const sampler = setInterval(async () => {
    peakRss = Math.max(peakRss, (await rssOf(b.servicePid).catch(() => ({ rss: 0 }))).rss);
  }, 100);
  await sleep(Math.max(0, drainAt.getTime() - Date.now()));
  const [drainDone, drainCpu] = await b.cpu.measure(() => settled(b, "drain", b.drainN, 600, drainSince, sinkBefore));
  clearInterval(sampler);
  const { rows: [dr] } = await b.pool.query(
    `select extract(epoch from max(sent_at) - min(sent_at)) as span, count(*)::int as n
     from sends where tags->>'bench' = 'drain' and sent_at is not null`,
  );
  const drainRate = (dr.n - 1) / dr.span;
  const atSink = (await b.sink.count()) - sinkBefore;
  const mem = await rssOf(b.servicePid);
  peakRss = Math.max(peakRss, mem.rss);
  const sandboxes = [...(await cpuTimes())].filter(([, p]) => p.ppid === b.servicePid).map(([pid]) => pid);
  const sandboxRss = (await Promise.all(sandboxes.map((pid) => rssOf(pid).catch(() => ({ rss: 0 })))))
    .reduce((n, m) => n + m.rss, 0);

  const sample = await b.pool.query(`select s.id from sends s where tags->>'bench' = 'drain' limit 1`);
  const urls = trackingUrls(b.base, b.secret, sample.rows[0].id);
  const html = `<html><body><p>Hi there,</p><p>Order <b>D-1</b> is confirmed.</p><p><a href="${urls.click(0)}">` +
    `See your order</a> · <a href="${urls.click(1)}">Help</a></p><p><a href="${urls.unsubscribe}">Unsubscribe</a>` +
    `</p><img src="${urls.open}" width="1" height="1" alt=""></body></html>`;
  const transport = rawPool(b);
  let next = 0;
  const rawT0 = performance.now();
  await Promise.all(Array.from({ length: b.config.workerConcurrency }, async () => {
    while (next < b.drainN) {
      const i = next++;
      await transport.sendMail({
        from: { name: "Example Shop", address: "orders@example.com" },
        to: `raw-${i}@bench.example.com`,
        subject: `Order D-${i} confirmed`,
        html,
        text: `Hi there, order D-${i} is confirmed.`,
        messageId: `<raw-${i}@example.com>`,
        headers: {
          "List-Unsubscribe": `<${urls.unsubscribe}>`,
          "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
        },
      });
    }
  }));
  const rawRate = b.drainN / ((performance.now() - rawT0) / 1000);
  transport.close();
  return {
    rate: drainRate,
    rows: {
      "delivery drain": {
        value: round(drainRate),
        unit: "emails/s",
        target: "≥ 1,500/s and ≥ 0.6× baseline",
        baseline: round(rawRate),
        ratio: round(drainRate / rawRate, 2),
        pass: drainRate >= 1500 && drainRate >= 0.6 * rawRate && drainDone.bad === 0 && atSink === b.drainN,
        details: {
          ...drainCpu,
          sends: b.drainN,
          delivered: drainDone.done,
          not_delivered: drainDone.bad,
          at_sink: atSink,
        },
      },
      "memory": {
        value: round(peakRss),
        unit: "MB peak RSS of the service during the drain",
        target: "≤ 300 MB",
        pass: peakRss <= 300,
        // The render sandboxes are processes of their own, with their own heap caps.
        details: { peak_since_start_mb: round(mem.hwm), render_sandboxes_mb: round(sandboxRss) },
      },
    },
  };
}
