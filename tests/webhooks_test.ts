/**
 * Outbound webhooks against a real receiver on loopback: every delivery is verified with the
 * npm `standardwebhooks` package's `verify()`, as a user's backend would.
 */
import { Webhook } from "standardwebhooks";
import { type Receiver, startReceiver, verified } from "./webhook_receiver.ts";
import { encryptSecret } from "../src/crypto.ts";
import { claimDue, recordAttempts, release } from "../src/webhooks/repo.ts";
import { sign, signingKey } from "../src/webhooks/sign.ts";
import { assert, assertEquals, assertMatch } from "./assert.ts";
import {
  ADMIN_TOKEN,
  gql,
  type Json,
  opts,
  send,
  spawnWorker,
  type Stack,
  startStack,
  type TestTenant,
  waitFor,
} from "./helpers.ts";

const CREATE = `mutation($i: CreateWebhookEndpointInput!) {
  createWebhookEndpoint(input: $i) { endpoint { id url eventTypes enabled } secret }
}`;
const DELIVERIES = `query($id: ID!) {
  webhookDeliveries(endpointId: $id, first: 50) {
    nodes { id eventType status attempts responseStatus lastAttemptAt nextAttemptAt
      attemptLog { responseStatus responseBody error durationMs } }
  }
}`;

/** A stack whose webhooks may reach loopback (the receiver), a tenant, and a receiver. */
async function webhookTest(
  fn: (s: { stack: Stack; tenant: TestTenant; receiver: Receiver }) => Promise<void>,
  env: Record<string, string> = {},
) {
  const stack = await startStack({ env: { PP_WEBHOOK_ALLOW_PRIVATE: "true", ...env } });
  const receiver = startReceiver();
  try {
    await fn({ stack, tenant: await stack.tenant(), receiver });
  } finally {
    await receiver.close();
    await stack.stop();
  }
}

async function createEndpoint(stack: Stack, key: string, input: Record<string, unknown>) {
  return (await gql(stack, key, CREATE, { i: input })).createWebhookEndpoint as {
    endpoint: { id: string; url: string; eventTypes: string[]; enabled: boolean };
    secret: string;
  };
}

/** Asks for a `webhook.test` delivery to an endpoint; the delivery's id. */
async function sendTest(stack: Stack, key: string, endpointId: string): Promise<{ id: string }> {
  return (await gql(stack, key, `mutation($id: ID!) { sendTestWebhook(id: $id) { id } }`, { id: endpointId }))
    .sendTestWebhook;
}

/** An endpoint's newest delivery once it has had an attempt. */
function firstAttempted(stack: Stack, key: string, endpointId: string): Promise<Json> {
  return waitFor(
    async () => {
      const [first] = await deliveries(stack, key, endpointId);
      return first?.attempts >= 1 ? first : null;
    },
    10_000,
    "the first attempt",
  );
}

/** The text of the stack's /metrics. */
async function metricsText(stack: Stack): Promise<string> {
  const res = await fetch(`${stack.url}/metrics`, { headers: { authorization: `Bearer ${ADMIN_TOKEN}` } });
  return await res.text();
}

/** This process's `pp_webhook_attempts_total` by outcome, from /metrics. */
async function attemptMetrics(stack: Stack): Promise<Record<string, number>> {
  const text = await metricsText(stack);
  return Object.fromEntries(
    [...text.matchAll(/^pp_webhook_attempts_total\{outcome="(\w+)"\} (\d+)$/gm)].map((m) => [m[1], Number(m[2])]),
  );
}

/** The backlog gauges: deliveries pending, and how long the oldest due one has waited (s). */
async function backlogGauges(stack: Stack): Promise<{ pending: number; oldestDueS: number }> {
  const text = await metricsText(stack);
  const gauge = (name: string) => Number(text.match(new RegExp(`^${name} (\\S+)$`, "m"))?.[1]);
  return { pending: gauge("pp_webhook_backlog"), oldestDueS: gauge("pp_webhook_oldest_due_seconds") };
}

async function deliveries(stack: Stack, key: string, endpointId: string): Promise<Json[]> {
  return (await gql(stack, key, DELIVERIES, { id: endpointId })).webhookDeliveries.nodes;
}

const order = (to: string) => ({ to, personalizations: { order_id: "W1" } });

Deno.test("webhooks: every event of a send reaches the endpoint, signed as Standard Webhooks", opts, async () => {
  await webhookTest(async ({ stack, tenant, receiver }) => {
    const { endpoint, secret } = await createEndpoint(stack, tenant.key, { url: receiver.url });
    assertMatch(secret, /^whsec_[A-Za-z0-9+/]+=*$/);
    assertEquals(endpoint.eventTypes, []);
    const s = await send(stack, tenant.key, { templateId: tenant.templateId, ...order("hook@example.test") });
    await waitFor(() => receiver.got.length >= 3, 10_000, "queued, sent and delivered");
    const bodies = verified(receiver, secret);
    assertEquals(bodies.map((b) => b.type).sort(), ["email.delivered", "email.queued", "email.sent"]);
    const delivered = bodies.find((b) => b.type === "email.delivered")!;
    assertEquals(delivered.data.sendId, s.id);
    assertEquals(delivered.data.to, "hook@example.test");
    assertEquals(delivered.data.batchId, null);
    assertEquals(delivered.data.event.type, "delivered");
    assertMatch(delivered.timestamp, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/);
    for (const g of receiver.got) {
      assertEquals(g.headers["content-type"], "application/json");
      assertMatch(g.headers["webhook-id"], /^msg_[0-9a-f-]{36}$/);
    }
    // Every attempt is listed.
    await waitFor(async () =>
      (await deliveries(stack, tenant.key, endpoint.id)).every((d) => d.status === "SUCCEEDED")
    );
    const listed = await deliveries(stack, tenant.key, endpoint.id);
    assertEquals(listed.length, 3);
    for (const d of listed) {
      assertEquals([d.attempts, d.responseStatus, d.nextAttemptAt], [1, 200, null]);
      assertEquals(d.attemptLog.length, 1);
      assertEquals(d.attemptLog[0].responseBody, "ok");
      assert(d.attemptLog[0].durationMs >= 0);
    }
    // The webhook-id of each is its delivery's id.
    assertEquals(
      new Set(receiver.got.map((g) => g.headers["webhook-id"])),
      new Set(listed.map((d) => `msg_${d.id}`)),
    );
  });
});

Deno.test("webhooks: REST endpoints and event-type filters", opts, async () => {
  await webhookTest(async ({ stack, tenant, receiver }) => {
    const created = await stack.api("POST", "/api/v1/webhooks", {
      key: tenant.key,
      body: { url: receiver.url, eventTypes: ["email.delivered"], description: "orders" },
    });
    assertEquals(created.status, 201);
    assertEquals(created.body.eventTypes, ["email.delivered"]);
    assertMatch(created.body.secret, /^whsec_/);
    const id = created.body.id;
    const list = await stack.api("GET", "/api/v1/webhooks", { key: tenant.key });
    assertEquals(list.body.data.map((e: Json) => [e.id, e.secret]), [[id, undefined]]);

    await send(stack, tenant.key, { templateId: tenant.templateId, ...order("filter@example.test") });
    await waitFor(() => receiver.got.length >= 1, 10_000, "the delivered event");
    await new Promise((r) => setTimeout(r, 500)); // nothing else comes
    assertEquals(verified(receiver, created.body.secret).map((b) => b.type), ["email.delivered"]);

    const patched = await stack.api("PATCH", `/api/v1/webhooks/${id}`, {
      key: tenant.key,
      body: { eventTypes: ["email.queued"] },
    });
    assertEquals([patched.status, patched.body.eventTypes], [200, ["email.queued"]]);
    await send(stack, tenant.key, { templateId: tenant.templateId, ...order("filter2@example.test") });
    await waitFor(() => receiver.got.length >= 2, 10_000, "the queued event");
    assertEquals(verified(receiver, created.body.secret).map((b) => b.type), ["email.delivered", "email.queued"]);

    const bad = await stack.api("POST", "/api/v1/webhooks", {
      key: tenant.key,
      body: { url: "ftp://example.test/x", eventTypes: ["email.nope"] },
    });
    assertEquals(bad.status, 422);
    assertEquals(bad.body.errors.map((e: Json) => e.path).sort(), ["eventTypes.0", "url"]);

    // A delivery still queued, with attempts: the endpoint's delete takes them all.
    await stack.service.deps.pool.query(
      `insert into webhook_queue (delivery_id, run_at)
       select id, now() + interval '1 hour' from webhook_deliveries where endpoint_id = $1 limit 1`,
      [id],
    );
    const rows = `(select id from webhook_deliveries where endpoint_id = $1)`;
    assert(await stack.count(`select count(*)::int from webhook_attempts where delivery_id in ${rows}`, [id]) >= 2);
    assertEquals((await stack.api("DELETE", `/api/v1/webhooks/${id}`, { key: tenant.key })).status, 204);
    assertEquals((await stack.api("GET", `/api/v1/webhooks/${id}`, { key: tenant.key })).status, 404);
    assertEquals(
      await stack.count(`select (select count(*) from webhook_attempts) + (select count(*) from webhook_queue)
        + (select count(*) from webhook_deliveries)`),
      0,
      "no delivery, attempt or queue row is left",
    );
    const other = await stack.tenant({ domain: "other.test" });
    assertEquals((await stack.api("GET", "/api/v1/webhooks", { key: other.key })).body.data, []);
  });
});

Deno.test("webhooks: a 5xx and a timeout are retried after 5 s with the same webhook-id", opts, async () => {
  await webhookTest(async ({ stack, tenant, receiver }) => {
    // The first delivery is answered 503, then 200; the second hangs past the timeout, then 200.
    receiver.answer = async (n) => {
      if (n === 1) return new Response("busy", { status: 503 });
      if (n === 3) await new Promise((r) => setTimeout(r, 2_500));
      return new Response("ok");
    };
    const before = await attemptMetrics(stack);
    const { endpoint, secret } = await createEndpoint(stack, tenant.key, { url: receiver.url });
    const test = `mutation($id: ID!) { sendTestWebhook(id: $id) { id eventType status } }`;
    const attemptsOf = async (id: string) => {
      const d = (await deliveries(stack, tenant.key, endpoint.id)).find((x) => x.id === id);
      return d?.status === "SUCCEEDED" ? d : null;
    };
    for (const [first, failure] of [[0, "busy"], [2, null]] as const) {
      const { sendTestWebhook: d } = await gql(stack, tenant.key, test, { id: endpoint.id });
      assertEquals([d.eventType, d.status], ["webhook.test", "PENDING"]);
      if (!failure) {
        // While its first attempt hangs, the delivery is due and waiting.
        await waitFor(() => receiver.got.length === first + 1, 10_000, "the hanging attempt");
        const waiting = await backlogGauges(stack);
        assertEquals(waiting.pending, 1);
        assert(waiting.oldestDueS > 0, `oldest due ${waiting.oldestDueS}`);
      }
      // Between the attempts the delivery is in the backlog, and not due until its retry.
      await waitFor(
        async () => (await deliveries(stack, tenant.key, endpoint.id)).find((x) => x.id === d.id)?.attempts === 1,
        10_000,
        "the first attempt recorded",
      );
      // (The finished job is deleted just after the attempt's commit: until then its run_at is past.)
      await waitFor(
        async () => JSON.stringify(await backlogGauges(stack)) === JSON.stringify({ pending: 1, oldestDueS: 0 }),
        3_000,
        "1 pending, none due",
      );
      const done = await waitFor(() => attemptsOf(d.id), 15_000, "a retried delivery to succeed");
      const [a, b] = receiver.got.slice(first, first + 2);
      assertEquals([a.headers["webhook-id"], b.headers["webhook-id"]], [`msg_${d.id}`, `msg_${d.id}`]);
      assertEquals(a.body, b.body);
      assert(b.at - a.at >= 4_500, `waited 5 s before the retry (${b.at - a.at} ms)`);
      assertEquals(done.attempts, 2);
      assertEquals(done.attemptLog.map((x: Json) => x.responseStatus), [failure ? 503 : null, 200]);
      if (failure) assertEquals(done.attemptLog[0].responseBody, failure);
      else assertMatch(done.attemptLog[0].error, /no answer within 2000 ms/);
    }
    assertEquals(verified(receiver, secret).map((x) => x.type), Array(4).fill("webhook.test"));
    assertEquals((await backlogGauges(stack)).pending, 0);
    // Counted by outcome (the counters are the process's, shared by the tests run in it: deltas).
    const after = await attemptMetrics(stack);
    const delta = (k: string) => (after[k] ?? 0) - (before[k] ?? 0);
    assertEquals([delta("http_error"), delta("timeout"), delta("succeeded")], [1, 1, 2]);
  }, { PP_WEBHOOK_TIMEOUT_MS: "2000" });
});

Deno.test("webhooks: redelivery keeps the webhook-id; a rotated secret signs beside the old one", opts, async () => {
  await webhookTest(async ({ stack, tenant, receiver }) => {
    const { endpoint, secret } = await createEndpoint(stack, tenant.key, { url: receiver.url });
    const d = await sendTest(stack, tenant.key, endpoint.id);
    await waitFor(() => receiver.got.length === 1, 10_000, "the test delivery");
    const { rotateWebhookSecret: rotated } = await gql(
      stack,
      tenant.key,
      `mutation($id: ID!) { rotateWebhookSecret(id: $id) { endpoint { id } secret } }`,
      { id: endpoint.id },
    );
    assert(rotated.secret !== secret);
    await waitFor(async () => (await deliveries(stack, tenant.key, endpoint.id))[0].status === "SUCCEEDED");
    const { redeliverWebhook: again } = await gql(
      stack,
      tenant.key,
      `mutation($id: ID!) { redeliverWebhook(deliveryId: $id) { id status } }`,
      { id: d.id },
    );
    assertEquals([again.id, again.status], [d.id, "PENDING"]);
    await waitFor(() => receiver.got.length === 2, 10_000, "the redelivery");
    assertEquals(receiver.got[1].headers["webhook-id"], `msg_${d.id}`);
    assertEquals(receiver.got[1].body, receiver.got[0].body, "the same body");
    // Both the new and (for a day) the old secret verify it.
    assertEquals(
      (new Webhook(rotated.secret).verify(receiver.got[1].body, receiver.got[1].headers) as Json).type,
      "webhook.test",
    );
    assertEquals(
      (new Webhook(secret).verify(receiver.got[1].body, receiver.got[1].headers) as Json).type,
      "webhook.test",
    );
    // The first delivery verifies only with the old one.
    let refused = false;
    try {
      new Webhook(rotated.secret).verify(receiver.got[0].body, receiver.got[0].headers);
    } catch {
      refused = true;
    }
    assert(refused, "a signature from before the rotation does not verify with the new secret");
  });
});

Deno.test("webhooks: an endpoint failing for 5 days is disabled, says so, and gets nothing more", opts, async () => {
  await webhookTest(async ({ stack, tenant, receiver }) => {
    receiver.answer = () => new Response("down", { status: 500 });
    const { endpoint } = await createEndpoint(stack, tenant.key, { url: receiver.url });
    const d = await sendTest(stack, tenant.key, endpoint.id);
    await waitFor(() => receiver.got.length === 1, 10_000, "the first attempt");
    await waitFor(async () => (await deliveries(stack, tenant.key, endpoint.id))[0].attempts === 1);
    // Only the clock is faked: the run of failures began five days ago.
    await stack.pg.query(
      `update webhook_endpoints set failing_since = now() - interval '5 days 1 minute' where id = $1`,
      [endpoint.id],
    );
    await gql(stack, tenant.key, `mutation($id: ID!) { redeliverWebhook(deliveryId: $id) { id } }`, { id: d.id });
    const q = `{ webhookEndpoints { id enabled disabledReason } }`;
    const ep = await waitFor(
      async () => {
        const [e] = (await gql(stack, tenant.key, q, {})).webhookEndpoints;
        return e.enabled ? null : e;
      },
      10_000,
      "the endpoint disabled",
    );
    assertMatch(ep.disabledReason, /every attempt failed since .* \(5 days\)/);
    const [row] = await deliveries(stack, tenant.key, endpoint.id);
    assertEquals([row.status, row.attempts, row.nextAttemptAt], ["FAILED", 2, null]);
    // A disabled endpoint is queued nothing.
    const before = receiver.got.length;
    const s = await send(stack, tenant.key, { templateId: tenant.templateId, ...order("off@example.test") });
    await waitFor(
      async () => (await stack.api("GET", `/api/v1/sends/${s.id}`, { key: tenant.key })).body.status === "delivered",
      10_000,
    );
    assertEquals(await stack.count(`select count(*) from webhook_deliveries where endpoint_id = $1`, [endpoint.id]), 1);
    assertEquals(receiver.got.length, before);
    // Enabled again, it gets events again.
    const { updateWebhookEndpoint: back } = await gql(
      stack,
      tenant.key,
      `mutation($id: ID!) { updateWebhookEndpoint(id: $id, input: { enabled: true }) { enabled disabledReason } }`,
      { id: endpoint.id },
    );
    assertEquals([back.enabled, back.disabledReason], [true, null]);
  });
});

Deno.test("webhooks: loopback, private and link-local addresses are refused", opts, async () => {
  await webhookTest(async ({ stack, tenant, receiver }) => {
    const refused = [
      receiver.url,
      "http://10.1.2.3/x",
      "http://169.254.169.254/latest",
      "http://[::1]:9/x",
      "http://2130706433/x", // 127.0.0.1 as one number
      "http://[::ffff:127.0.0.1]/x", // IPv4-mapped
      "http://[::127.0.0.1]/x", // IPv4-compatible
      "http://[64:ff9b::7f00:1]/x", // NAT64 of 127.0.0.1
    ];
    for (const url of refused) {
      const r = await stack.api("POST", "/api/v1/webhooks", { key: tenant.key, body: { url } });
      assertEquals(r.status, 422, url);
      assertEquals(r.body.code, "validation_failed");
      assertEquals(r.body.errors, [{ path: "url", message: "resolves to a loopback, private or link-local address" }]);
    }
    // A name that resolves to loopback at delivery time (saved while it resolved elsewhere,
    // DNS rebinding) is refused where the connection is made.
    const { rows: [row] } = await stack.pg.query(
      `insert into webhook_endpoints (account_id, url, secret_enc) values ($1, $2, $3) returning id`,
      [
        tenant.accountId,
        receiver.url.replace("127.0.0.1", "localhost"),
        encryptSecret(stack.service.deps.secrets.secret, "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"),
      ],
    );
    const d = await sendTest(stack, tenant.key, row.id);
    const attempted = await firstAttempted(stack, tenant.key, row.id);
    assertEquals(attempted.id, d.id);
    assertMatch(attempted.attemptLog[0].error, /loopback, private or link-local/);
    assertEquals(receiver.got.length, 0);
    assert((await attemptMetrics(stack)).refused >= 1, "counted as refused");

    // A secret sealed with another PP_SECRET is a refused attempt, retried on the schedule
    // (not a delivery that keeps coming back).
    const { rows: [foreign] } = await stack.pg.query(
      `insert into webhook_endpoints (account_id, url, secret_enc) values ($1, $2, $3) returning id`,
      [tenant.accountId, "https://hooks.example.com/x", encryptSecret("another deployment's PP_SECRET", "whsec_x")],
    );
    await sendTest(stack, tenant.key, foreign.id);
    const unsealed = await firstAttempted(stack, tenant.key, foreign.id);
    assertEquals(unsealed.status, "PENDING");
    assert(unsealed.nextAttemptAt, "a retry is scheduled");
    assertMatch(unsealed.attemptLog[0].error, /^not sent: the endpoint's secret could not be unsealed/);
  }, { PP_WEBHOOK_ALLOW_PRIVATE: "false" });
});

Deno.test("webhooks: a worker killed mid-POST; its delivery goes out again when its claim runs out", opts, async () => {
  // The stack answers the API only; the delivery's worker is a process of its own, killed.
  await webhookTest(async ({ stack, tenant, receiver }) => {
    let release = () => {};
    const hung = new Promise<Response>((res) => release = () => res(new Response("late")));
    receiver.answer = (n) => n === 1 ? hung : new Response("ok");
    const env = { PP_WEBHOOK_ALLOW_PRIVATE: "true", PP_WEBHOOK_TIMEOUT_MS: "2000" };
    const first = await spawnWorker(stack, env);
    let second: Awaited<ReturnType<typeof spawnWorker>> | undefined;
    try {
      const { endpoint, secret } = await createEndpoint(stack, tenant.key, { url: receiver.url });
      const d = await sendTest(stack, tenant.key, endpoint.id);
      await waitFor(() => receiver.got.length === 1, 10_000, "the first POST");
      first.child.kill("SIGKILL");
      await first.child.status;
      // Its claim holds the delivery for twice the 2 s timeout (a claim may wait for a slot,
      // then POST) and a 10 s margin: not sooner.
      second = await spawnWorker(stack, env);
      await new Promise((r) => setTimeout(r, 3_000));
      assertEquals(receiver.got.length, 1, "no second POST while the dead worker's claim lasts");
      assertEquals(await stack.count("select count(*)::int from webhook_queue where lease_until > now()"), 1);
      const done = await waitFor(
        async () => {
          const [x] = await deliveries(stack, tenant.key, endpoint.id);
          return x?.status === "SUCCEEDED" ? x : null;
        },
        20_000,
        "the delivery to go out again and succeed",
      );
      const [a, b] = receiver.got;
      assert(b.at - a.at >= 13_000, `the second POST came ${b.at - a.at} ms after the first`);
      assertEquals([a.headers["webhook-id"], b.headers["webhook-id"]], [`msg_${d.id}`, `msg_${d.id}`]);
      assertEquals(verified(receiver, secret).map((x) => x.type), ["webhook.test", "webhook.test"]);
      // The killed worker's attempt was never recorded: one attempt, the one that succeeded.
      assertEquals([done.attempts, done.attemptLog.map((x: Json) => x.responseStatus)], [1, [200]]);
      assertEquals(await stack.count("select count(*)::int from webhook_queue"), 0);
    } finally {
      release();
      for (const w of [first, second]) {
        try {
          w?.child.kill("SIGKILL");
        } catch { /* exited */ }
      }
      await Promise.all([first, second].map((w) => w?.child.status));
    }
  }, { PP_ROLE: "api" });
});

Deno.test(
  "webhooks: a worker claims ahead of its free slots; stopped, it holds no claim it did not send, and the next sends those at once",
  opts,
  async () => {
    await webhookTest(async ({ stack, tenant, receiver }) => {
      let release = () => {};
      const gate = new Promise<void>((res) => release = res);
      receiver.answer = () => gate.then(() => new Response("late"));
      // A long timeout: no hung POST ends (and frees a slot) before the stop.
      const env = { PP_WEBHOOK_ALLOW_PRIVATE: "true", PP_WEBHOOK_TIMEOUT_MS: "15000", PP_SHUTDOWN_TIMEOUT_MS: "2500" };
      const { endpoint } = await createEndpoint(stack, tenant.key, { url: receiver.url });
      const ids: string[] = [];
      for (let i = 0; i < 500; i += 25) {
        ids.push(...(await Promise.all(Array.from({ length: 25 }, () => sendTest(stack, tenant.key, endpoint.id))))
          .map((d) => d.id));
      }
      const leased = () => stack.count("select count(*)::int from webhook_queue where lease_until > now()");
      const first = await spawnWorker(stack, env);
      let second: Awaited<ReturnType<typeof spawnWorker>> | undefined;
      try {
        // 200 POSTs in flight (all hung), and as many claimed ahead of them.
        await waitFor(() => receiver.got.length === 200, 15_000, "200 POSTs in flight");
        await waitFor(async () => (await leased()) === 400, 5_000, "200 more claimed ahead");
        first.child.kill("SIGTERM");
        assertEquals((await first.child.status).code, 0);
        const posted = new Set(receiver.got.map((g) => g.headers["webhook-id"].slice("msg_".length)));
        assertEquals(posted.size, 200);
        const unsent = ids.filter((id) => !posted.has(id));
        // Those it never sent are due at once; only those it sent may still be held.
        assertEquals(
          await stack.count(
            "select count(*)::int from webhook_queue where lease_until > now() and delivery_id = any($1::uuid[])",
            [unsent],
          ),
          0,
        );
        release();
        receiver.answer = () => new Response("ok");
        const t0 = Date.now();
        second = await spawnWorker(stack, env);
        // Well within the claims' lease (twice the 15 s timeout and 10 s): not waited for.
        // (Those cut at the stop may go out again too: they are not counted.)
        const later = () =>
          receiver.got.slice(200).map((g) => g.headers["webhook-id"].slice("msg_".length)).filter((id) =>
            !posted.has(id)
          );
        await waitFor(() => new Set(later()).size === 300, 12_000, "the 300 never sent to go out");
        assert(Date.now() - t0 < 12_000);
        assertEquals(later().length, 300, "each of them once");
      } finally {
        release();
        for (const w of [first, second]) {
          try {
            w?.child.kill("SIGKILL");
          } catch { /* exited */ }
        }
        await Promise.all([first, second].map((w) => w?.child.status));
      }
    }, { PP_ROLE: "api", PP_RATE_LIMIT: "100000:100000" });
  },
);

Deno.test("webhooks: a release ends only the caller's own lease, not another worker's claim since", opts, async () => {
  // Role api: no dispatcher, so only the claims below touch the queue.
  await webhookTest(async ({ stack, tenant, receiver }) => {
    const { endpoint } = await createEndpoint(stack, tenant.key, { url: receiver.url });
    const d = await sendTest(stack, tenant.key, endpoint.id);
    const db = stack.service.deps.db;
    const leased = () =>
      stack.count("select count(*)::int from webhook_queue where delivery_id = $1 and lease_until > now()", [d.id]);
    const [mine] = await claimDue(db, 10, 30);
    assertEquals(mine.id, d.id);
    // Its lease runs out, and another worker claims it.
    await stack.service.deps.pool.query("update webhook_queue set lease_until = now() - interval '1 s'");
    const [theirs] = await claimDue(db, 10, 30);
    assertEquals(theirs.id, d.id);
    await release(db, [mine]);
    assertEquals(await leased(), 1, "the other worker's claim holds");
    await release(db, [theirs]);
    assertEquals(await leased(), 0, "released by its own claimer");
    const [again] = await claimDue(db, 10, 30);
    assertEquals(again?.id, d.id, "due again at once");
  }, { PP_ROLE: "api" });
});

Deno.test(
  "webhooks: a failure recorded after a success (two claims of one delivery) leaves it succeeded and off the queue",
  opts,
  async () => {
    // Role api: no dispatcher, so only the recordings below touch the delivery.
    await webhookTest(async ({ stack, tenant, receiver }) => {
      const { endpoint } = await createEndpoint(stack, tenant.key, { url: receiver.url });
      const d = await sendTest(stack, tenant.key, endpoint.id);
      const outcome = (ok: boolean, retryInS: number | null) => ({
        deliveryId: d.id,
        endpointId: endpoint.id,
        ok,
        responseStatus: ok ? 200 : 503,
        responseBody: null,
        error: ok ? null : "answered 503",
        durationMs: 5,
        nextAttemptAt: retryInS === null ? null : new Date(Date.now() + retryInS * 1000),
      });
      const queued = () =>
        stack.count("select count(*)::int from webhook_queue where delivery_id = $1 and run_at > now()", [d.id]);
      const db = stack.service.deps.db;

      await recordAttempts(db, [outcome(false, 300)]);
      assertEquals(await queued(), 1, "a failure with a retry is queued at the retry's time");
      await recordAttempts(db, [outcome(true, null)]);
      await recordAttempts(db, [outcome(false, 5)]);
      const [row] = await deliveries(stack, tenant.key, endpoint.id);
      assertEquals([row.status, row.attempts, row.nextAttemptAt], ["SUCCEEDED", 3, null]);
      assertEquals(await stack.count("select count(*)::int from webhook_queue"), 0);
    }, { PP_ROLE: "api" });
  },
);

Deno.test(
  "webhooks: recorded outcomes keep an endpoint's run of failures — a failure starts it, a success ends it, 5 days of it disable",
  opts,
  async () => {
    // Role api: no dispatcher, so only the recordings below touch the deliveries.
    await webhookTest(async ({ stack, tenant, receiver }) => {
      const { endpoint } = await createEndpoint(stack, tenant.key, { url: receiver.url });
      const [a, b, c] = [
        await sendTest(stack, tenant.key, endpoint.id),
        await sendTest(stack, tenant.key, endpoint.id),
        await sendTest(stack, tenant.key, endpoint.id),
      ];
      const outcome = (id: string, ok: boolean) => ({
        deliveryId: id,
        endpointId: endpoint.id,
        ok,
        responseStatus: ok ? 200 : 503,
        responseBody: ok ? "fine" : "busy",
        error: ok ? null : "answered 503",
        durationMs: 5,
        nextAttemptAt: ok ? null : new Date(Date.now() + 300_000),
      });
      const db = stack.service.deps.db;
      const failingSince = async () =>
        (await stack.service.deps.pool.query("select failing_since from webhook_endpoints where id = $1", [
          endpoint.id,
        ])).rows[0].failing_since as Date | null;

      assertEquals(await recordAttempts(db, [outcome(a.id, false)]), [false]);
      const since = await failingSince();
      assert(since, "a failure starts a run");
      await recordAttempts(db, [outcome(a.id, false)]);
      assertEquals(await failingSince(), since, "another failure continues it");
      await recordAttempts(db, [outcome(b.id, true)]);
      assertEquals(await failingSince(), null, "a success ends it");
      await recordAttempts(db, [outcome(a.id, true), outcome(b.id, false)]);
      assert(await failingSince(), "a failure beside a success starts a new one");

      await stack.service.deps.pool.query(
        `update webhook_endpoints set failing_since = now() - interval '5 days 1 minute' where id = $1`,
        [endpoint.id],
      );
      assertEquals(await recordAttempts(db, [outcome(c.id, false)]), [true], "5 days of failures disable it");
      const rows = await deliveries(stack, tenant.key, endpoint.id);
      const byId = Object.fromEntries(rows.map((r: Json) => [r.id, r]));
      // The failure that disabled it ends its delivery (no retry); a success stays one.
      assertEquals([byId[a.id].status, byId[b.id].status], ["SUCCEEDED", "SUCCEEDED"]);
      assertEquals([byId[c.id].status, byId[c.id].attempts, byId[c.id].nextAttemptAt], ["FAILED", 1, null]);
      assertEquals(await stack.count("select count(*)::int from webhook_queue"), 0);
      const [ep] = (await gql(stack, tenant.key, `{ webhookEndpoints { id enabled disabledReason } }`, {}))
        .webhookEndpoints;
      assertEquals(ep.enabled, false);
      assertMatch(ep.disabledReason, /every attempt failed since .* \(5 days\)/);
    }, { PP_ROLE: "api" });
  },
);

Deno.test("webhooks: our signatures are the standardwebhooks package's, byte for byte", () => {
  for (
    const [i, body] of ['{"type":"email.sent"}', JSON.stringify({ to: "ünï@exämple.test", n: "😀" }), ""].entries()
  ) {
    const secret = `whsec_${btoa(String.fromCharCode(...crypto.getRandomValues(new Uint8Array(24 + i))))}`;
    const at = new Date(1_700_000_000_000 + i * 1234);
    const theirs = new Webhook(secret).sign(`msg_${i}`, at, body);
    assertEquals(sign(signingKey(secret), `msg_${i}`, at, body), theirs);
    // Without the prefix, as the package takes it too.
    assertEquals(sign(signingKey(secret.slice(6)), `msg_${i}`, at, body), theirs);
  }
});
