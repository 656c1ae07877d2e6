/**
 * A Postgres outage under load, with a Postgres this test starts, stops and starts again:
 * while it is away every request answers `503 unavailable` (Retry-After) within 5 s, never a
 * 500 and never a hang, and /healthz says 503; when it is back both the API and the worker
 * recover by themselves and every accepted send is delivered. The same outage while webhooks
 * are being posted: every event still reaches the endpoint, and no delivery stays pending.
 */
import { assert, assertEquals } from "./assert.ts";
import { freePort, opts, startStack, waitFor } from "./helpers.ts";
import { startReceiver, verified } from "./webhook_receiver.ts";
import { startEmbeddedPostgres } from "../src/db/embedded.ts";
import { isRunnerOutage } from "../src/jobs/worker.ts";

interface Answer {
  at: number;
  ms: number;
  status: number;
  code?: string;
  retryAfter: string | null;
  to: string;
}

Deno.test("outage: Postgres stops under load, the service answers 503, then recovers alone", opts, async (t) => {
  const dir = await Deno.makeTempDir({ prefix: "pp-test-outage-" });
  await Deno.chmod(dir, 0o755); // initdb runs as user postgres when we are root
  const port = freePort();
  let pg = await startEmbeddedPostgres(`${dir}/postgres`, port);
  const stack = await startStack({ databaseUrl: pg.url, env: { PP_RATE_LIMIT: "0" } });
  const tenant = await stack.tenant();
  const answers: Answer[] = [];
  let loading = true;
  let n = 0;

  /** One client posting sends back to back, as a backend would, recording every answer. */
  async function client() {
    while (loading) {
      const to = `o${n++}@example.test`;
      const t0 = performance.now();
      try {
        const res = await fetch(`${stack.url}/api/v1/sends`, {
          method: "POST",
          headers: { "x-api-key": tenant.key, "content-type": "application/json" },
          body: JSON.stringify({ templateId: tenant.templateId, to, personalizations: { order_id: to } }),
          signal: AbortSignal.timeout(10_000),
        });
        const body = await res.json().catch(() => ({}));
        answers.push({
          at: t0,
          ms: performance.now() - t0,
          status: res.status,
          code: body.code,
          retryAfter: res.headers.get("retry-after"),
          to,
        });
        if (res.status !== 202) await new Promise((r) => setTimeout(r, 100));
      } catch (err) {
        answers.push({ at: t0, ms: performance.now() - t0, status: 0, code: String(err), retryAfter: null, to });
      }
    }
  }

  try {
    const clients = [client(), client(), client(), client()];
    await new Promise((r) => setTimeout(r, 1_000));
    const stoppedAt = performance.now();
    await pg.stop();

    await t.step("while Postgres is away: 503 unavailable with Retry-After, fast, and /healthz says 503", async () => {
      await new Promise((r) => setTimeout(r, 2_000));
      const h0 = performance.now();
      const health = await fetch(`${stack.url}/healthz`, { signal: AbortSignal.timeout(10_000) });
      await health.body?.cancel();
      assertEquals(health.status, 503);
      assert(performance.now() - h0 < 5_000);
      const g = await fetch(`${stack.url}/api/v1/sends?limit=1`, { headers: { "x-api-key": tenant.key } });
      const gb = await g.json();
      assertEquals([g.status, gb.code], [503, "unavailable"]);
      // A key this process has not seen yet: its lookup needs the database.
      const q = await stack.gql(`{ sends(first: 1) { edges { node { id } } } }`, {}, "pp_live_" + "x".repeat(40));
      assertEquals([q.status, q.body.errors?.[0]?.extensions?.code], [503, "unavailable"]);
      assertEquals(q.headers.get("retry-after"), "5");
      const cached = await stack.gql(`{ sends(first: 1) { edges { node { id } } } }`, {}, tenant.key);
      assertEquals([cached.status, cached.body.errors?.[0]?.extensions?.code], [503, "unavailable"]);
      await new Promise((r) => setTimeout(r, 2_000));
    });

    const restartedAt = performance.now();
    pg = await startEmbeddedPostgres(`${dir}/postgres`, port);

    await t.step("after Postgres returns, the API answers 202 again by itself", async () => {
      await waitFor(() => answers.some((a) => a.at > restartedAt && a.status === 202), 30_000, "a 202 after restart");
      await new Promise((r) => setTimeout(r, 1_000));
      loading = false;
      await Promise.all(clients);
      const during = answers.filter((a) => a.at > stoppedAt + 500 && a.at < restartedAt);
      assert(during.length > 0, "requests were made during the outage");
      const odd = answers.filter((a) => a.status !== 202 && !(a.status === 503 && a.code === "unavailable"));
      assertEquals(odd, [], "only 202 or 503 unavailable, never a 500 or a dropped request");
      assert(during.some((a) => a.status === 503), "the outage was seen as 503s");
      for (const a of answers.filter((a) => a.status === 503)) assertEquals(a.retryAfter, "5");
      const slowest = Math.max(...answers.map((a) => a.ms));
      assert(slowest < 5_000, `an answer took ${Math.round(slowest)} ms`);
      const recovery = answers.find((a) => a.at > restartedAt && a.status === 202)!.at - restartedAt;
      console.log(
        `outage: ${during.length} requests during the outage, slowest answer ${Math.round(slowest)} ms, ` +
          `first 202 ${Math.round(recovery)} ms after Postgres was back`,
      );
      const health = await fetch(`${stack.url}/healthz`);
      assertEquals(await health.json(), { status: "ok" });
    });

    await t.step("every accepted send is delivered", async () => {
      const accepted = new Set(answers.filter((a) => a.status === 202).map((a) => a.to));
      await waitFor(
        () => accepted.size > 0 && [...accepted].every((to) => stack.sink.messages.some((m) => m.to.includes(to))),
        60_000,
        `all ${accepted.size} accepted sends to reach the relay`,
      );
    });
  } finally {
    loading = false;
    await stack.stop();
    await pg.stop();
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  }
});

Deno.test(
  "outage: Postgres stops while webhooks are posted, every event still reaches the endpoint",
  opts,
  async (t) => {
    const dir = await Deno.makeTempDir({ prefix: "pp-test-outage-hooks-" });
    await Deno.chmod(dir, 0o755);
    const port = freePort();
    let pg = await startEmbeddedPostgres(`${dir}/postgres`, port);
    const stack = await startStack({
      databaseUrl: pg.url,
      env: { PP_WEBHOOK_ALLOW_PRIVATE: "true", PP_RATE_LIMIT: "0" },
    });
    const receiver = startReceiver();
    // A slow endpoint: many POSTs are in flight, and many outcomes not yet recorded, when Postgres goes.
    receiver.answer = async () => {
      await new Promise((r) => setTimeout(r, 150));
      return new Response(null, { status: 204 });
    };
    const SENDS = 100;
    try {
      const tenant = await stack.tenant();
      const created = await stack.gql(
        `mutation($i: CreateWebhookEndpointInput!) { createWebhookEndpoint(input: $i) { endpoint { id } secret } }`,
        { i: { url: receiver.url } },
        tenant.key,
      );
      const { endpoint, secret } = created.body.data.createWebhookEndpoint;
      const batch = await stack.api("POST", "/api/v1/sends/batch", {
        key: tenant.key,
        body: {
          templateId: tenant.templateId,
          recipients: Array.from({ length: SENDS }, (_, i) => ({ to: `h${i}@example.test` })),
        },
      });
      assertEquals(batch.status, 202);
      await waitFor(() => receiver.got.length >= 20, 30_000, "the first webhooks");
      await pg.stop();
      const during = receiver.got.length;
      await new Promise((r) => setTimeout(r, 3_000));
      pg = await startEmbeddedPostgres(`${dir}/postgres`, port);

      await t.step("every event of every send reaches the endpoint, verified, once Postgres is back", async () => {
        const ids = () => new Set(receiver.got.map((g) => g.headers["webhook-id"]));
        await waitFor(() => ids().size >= 3 * SENDS, 90_000, `${3 * SENDS} distinct webhook-ids`);
        const bodies = verified(receiver, secret);
        const events = new Set(bodies.map((b) => `${b.type} ${b.data.sendId}`));
        assertEquals(events.size, 3 * SENDS, "queued, sent and delivered of each send");
        assertEquals(
          [...new Set(bodies.map((b) => b.type))].sort(),
          ["email.delivered", "email.queued", "email.sent"],
        );
        console.log(
          `webhook outage: ${during} POSTs before Postgres stopped, ${receiver.got.length} in all ` +
            `for ${ids().size} deliveries`,
        );
        // The outcomes of the POSTs in flight were recorded once Postgres was back, within
        // their claims' leases: none went out twice.
        assertEquals(receiver.got.length, 3 * SENDS, "one POST per delivery");
      });

      await t.step("no delivery stays pending, and the service is up", async () => {
        await waitFor(
          async () =>
            await stack.count(
              `select count(*)::int from webhook_deliveries where endpoint_id = $1 and status <> 'succeeded'`,
              [
                endpoint.id,
              ],
            ) === 0,
          30_000,
          "every delivery succeeded",
        );
        assertEquals(
          await stack.count(`select count(*)::int from webhook_deliveries where endpoint_id = $1`, [endpoint.id]),
          3 * SENDS,
        );
        const health = await fetch(`${stack.url}/healthz`);
        assertEquals(await health.json(), { status: "ok" });
      });
    } finally {
      await receiver.close();
      await stack.stop();
      await pg.stop();
      await Deno.remove(dir, { recursive: true }).catch(() => {});
    }
  },
);

Deno.test("outage: graphile-worker's rethrown 'returning jobs' error counts as the database being away", () => {
  const rethrown = (cause: string) =>
    new Error(`Error occurred whilst returning jobs from local queue to database queue: ${cause}`);
  assert(isRunnerOutage(rethrown("connect ECONNREFUSED 127.0.0.1:41963")), "a refused connection");
  assert(isRunnerOutage(rethrown("Connection terminated unexpectedly")), "a dropped connection");
  assert(!isRunnerOutage(rethrown('relation "jobs" does not exist')), "another database error is not");
  assert(!isRunnerOutage(new Error("connect ECONNREFUSED 127.0.0.1:41963 in some other error")), "nor another error");
});
