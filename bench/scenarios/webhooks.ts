import { freePort, pct, round, type Scenario, sleep } from "../lib.ts";
import { type Bench, queueBatches, settled } from "../stack.ts";

/**
 * Webhooks: the delivery drain again (`drainN` sends, accepted for one instant ahead), with
 * one endpoint subscribed to every event — a receiver in its own process (webhook_receiver.ts)
 * that answers 204 at once. Each send makes three deliveries (queued, sent, delivered).
 * Measured: the drain rate (first → last SMTP 250) beside the drain without webhooks (the
 * drain scenario's rate, the baseline), webhook deliveries/s at the receiver, the lag p99
 * from an event's recording to the receiver getting it, and what was still pending when the
 * drain ended. Targets: lag p99 ≤ 2 s, drain ≥ 0.8× the drain without webhooks.
 */
export async function webhooks(b: Bench, drainRate: number): Promise<Record<string, Scenario>> {
  b.log(`webhooks (${b.drainN})`);
  const port = freePort();
  const receiver = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", new URL("../webhook_receiver.ts", import.meta.url).pathname, String(port)],
    stdout: "piped",
  }).spawn();
  await receiver.stdout.pipeThrough(new TextDecoderStream()).getReader().read();
  const stats = async () =>
    await (await fetch(`http://127.0.0.1:${port}/stats`)).json() as {
      count: number;
      first: number;
      last: number;
      lags: number[];
      types: string[];
    };
  const created = performance.now();
  const endpoint = await b.api("POST", "/api/v1/webhooks", { url: `http://127.0.0.1:${port}/hooks` });
  if (endpoint.status !== 201) throw new Error(JSON.stringify(endpoint.body));
  try {
    // A test webhook first, as a user sends one after adding an endpoint: the first delivery
    // waits for the webhook thread, which role `all` starts when an endpoint is added
    // (server.ts). That wait is reported apart (first_webhook_ms), not in the lags.
    const test = await fetch(`${b.base}/graphql`, {
      method: "POST",
      headers: b.auth,
      body: JSON.stringify({
        query: `mutation($id: ID!) { sendTestWebhook(id: $id) { id } }`,
        variables: { id: endpoint.body.id },
      }),
    });
    await test.body?.cancel();
    for (const until = Date.now() + 30_000; (await stats()).count < 1;) {
      if (Date.now() > until) throw new Error("the test webhook did not arrive within 30 s");
      await sleep(20);
    }
    const firstMs = performance.now() - created;
    const skip = (await stats()).count;
    const mainFrom = Date.now();
    const expected = b.drainN * 3 + skip;
    const sinkBefore = await b.sink.count();
    const since = new Date();
    const at = new Date(Date.now() + (b.quick ? 3000 : 6000));
    await queueBatches(b, b.drainN, "webhooks", at.toISOString());
    await sleep(Math.max(0, at.getTime() - Date.now()));
    const [done, cpu] = await b.cpu.measure(() => settled(b, "webhooks", b.drainN, 600, since, sinkBefore));
    const { rows: [dr] } = await b.pool.query(
      `select extract(epoch from max(sent_at) - min(sent_at)) as span, count(*)::int as n
       from sends where tags->>'bench' = 'webhooks' and sent_at is not null`,
    );
    const rate = (dr.n - 1) / dr.span;
    const { rows: [pending] } = await b.pool.query(
      `select count(*)::int as n from webhook_deliveries where status = 'pending'`,
    );
    // Then every delivery to arrive (bounded: the scenario reports what did).
    const until = Date.now() + 300_000;
    let s = await stats();
    while (s.count < expected && Date.now() < until) {
      await sleep(200);
      s = await stats();
    }
    const lags = s.lags.slice(skip);
    const types = s.types.slice(skip);
    // From the first batch's queueing (the test webhook's arrival is the receiver's `first`).
    const perS = s.count > skip ? (s.count - skip) / ((s.last - mainFrom) / 1000) : 0;
    const lagP99 = pct(lags, 99);
    // The lag p99 of each event type: queued events arrive in one burst at acceptance.
    const byType: Record<string, number> = {};
    for (const type of new Set(types)) {
      byType[`lag_p99_${type}_ms`] = round(pct(lags.filter((_, i) => types[i] === type), 99));
    }
    return {
      "webhooks": {
        value: round(lagP99),
        unit: "ms p99 event recorded → receiver got it",
        target: "lag p99 ≤ 2,000 ms, drain ≥ 0.8× the drain without webhooks",
        baseline: round(drainRate),
        ratio: round(rate / drainRate, 2),
        pass: lagP99 <= 2000 && rate >= 0.8 * drainRate && s.count === expected && done.bad === 0,
        details: {
          ...cpu,
          drain_emails_per_s: round(rate),
          webhooks_per_s: round(perS),
          webhooks: s.count - skip,
          expected: expected - skip,
          lag_p50_ms: round(pct(lags, 50)),
          ...byType,
          pending_at_drain_end: pending.n,
          first_webhook_ms: round(firstMs),
        },
      },
    };
  } finally {
    // Later scenarios run without it (the answer has no body).
    await b.api("DELETE", `/api/v1/webhooks/${endpoint.body.id}`).catch(() => {});
    receiver.kill();
    await receiver.status;
  }
}
