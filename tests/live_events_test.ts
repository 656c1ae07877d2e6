/**
 * Live events: `Subscription.sendEvents` over server-sent events, fed by Postgres
 * LISTEN/NOTIFY. A worker in another process and an independent connection both reach an
 * API subscriber; the LISTEN connection comes back after it drops and the subscriber catches
 * up; a slow subscriber's queue stays bounded without losing events; bad arguments, foreign
 * ids and failures inside the stream answer with the API's error codes.
 */
import { Kysely, PostgresDialect } from "kysely";
import pg from "pg";
import type { Database } from "../src/db/tables.ts";
import { LiveEvents, liveEvents } from "../src/events/live.ts";
import { Listener } from "../src/db/listen.ts";
import { type EventRow, eventsAfter, eventsByIds, insertEvents, maxEventId } from "../src/events/repo.ts";
import { createLogger } from "../src/log.ts";
import { assert, assertEquals, assertMatch } from "./assert.ts";
import {
  ADMIN_TOKEN,
  gql,
  opts,
  SEND_EVENTS,
  spawnMain,
  type Stack,
  startStack,
  subscribe,
  waitFor,
  waitForStatus,
} from "./helpers.ts";

/** A Kysely of its own on the stack's database: another connection than the service's. */
function otherConnection(stack: Stack) {
  const pool = new pg.Pool({ connectionString: stack.databaseUrl, max: 2 });
  pool.on("error", () => {});
  return new Kysely<Database>({ dialect: new PostgresDialect({ pool }) });
}

Deno.test("live events: a worker process feeds an API process's subscribers", opts, async (t) => {
  // An API-only service: nothing is delivered or expanded until the worker process starts.
  const stack = await startStack({ env: { PP_ROLE: "api" } });
  let worker: Deno.ChildProcess | null = null;
  try {
    const tenant = await stack.tenant();
    const send = await stack.api("POST", "/api/v1/sends", {
      key: tenant.key,
      body: { templateId: tenant.templateId, to: "solo@example.test", personalizations: { order_id: "S1" } },
    });
    assertEquals(send.status, 202);
    for (const [i, email] of ["m1@example.test", "m2@example.test", "m3@example.test"].entries()) {
      await gql(stack, tenant.key, `mutation($i: CreateContactInput!) { createContact(input: $i) { id } }`, {
        i: { email, company: "Acme", fields: { n: i } },
      });
    }
    const { createSegment } = await gql(
      stack,
      tenant.key,
      `mutation { createSegment(input: { name: "Acme", rules: [{ field: "company", op: EQ, value: "Acme" }] }) { id } }`,
    );
    const { createSegmentSend } = await gql(
      stack,
      tenant.key,
      `mutation($i: CreateSegmentSendInput!) { createSegmentSend(input: $i) { batchId } }`,
      { i: { templateId: tenant.templateId, segmentId: createSegment.id, personalizations: { order_id: "B1" } } },
    );
    const batchId = createSegmentSend.batchId;
    // The segment send's sends do not exist yet: the expansion waits for a worker.
    assertEquals(await stack.count("select count(*) from sends where batch_id = $1", [batchId]), 0);

    const bySend = await subscribe(stack, { sendId: send.body.id }, { key: tenant.key });
    const byBatch = await subscribe(stack, { batchId }, { key: tenant.key });
    try {
      await t.step("the subscription answers as server-sent events", () => {
        assertEquals(bySend.status, 200);
        assertMatch(bySend.contentType, /^text\/event-stream/);
        assertEquals(liveEvents(stack.service.deps).subscriberCount, 2);
      });

      const dataDir = await Deno.makeTempDir({ prefix: "pp-test-worker-" });
      worker = (await spawnMain({
        DATABASE_URL: stack.databaseUrl,
        PP_ROLE: "worker",
        SMTP_URL: stack.sink.url,
        PP_DATA_DIR: dataDir,
        PP_WORKER_POLL_MS: "100",
        // One deployment, one secret: tracking tokens and DKIM keys are sealed with it.
        PP_SECRET: stack.service.deps.secrets.secret,
      })).child;

      await t.step("a send's events, recorded by the worker process, stream as they happen", async () => {
        const evs = await bySend.take(2);
        assertEquals(evs.map((e) => e.type), ["SENT", "DELIVERED"]);
        assert(evs.every((e) => e.sendId === send.body.id && e.contactId === null));
        assertEquals(evs[1].data.via, "smtp");
        // The streamed events are the recorded ones, ids and all.
        const { events } = await gql(
          stack,
          tenant.key,
          `query($id: ID!) { events(sendId: $id) { nodes { id type } } }`,
          { id: send.body.id },
        );
        assertEquals(events.nodes.slice(1), evs.map((e) => ({ id: e.id, type: e.type })));
        assertEquals(events.nodes[0].type, "QUEUED");
      });

      await t.step("a batch subscription receives every event of sends created after it began", async () => {
        const evs = await byBatch.take(9, 15_000);
        const sendIds = [...new Set(evs.map((e) => e.sendId))];
        assertEquals(sendIds.length, 3);
        for (const id of sendIds) {
          assertEquals(evs.filter((e) => e.sendId === id).map((e) => e.type), ["QUEUED", "SENT", "DELIVERED"]);
        }
        assert(!sendIds.includes(send.body.id), "only the batch's sends");
        const rows = await stack.pg.query("select id from sends where batch_id = $1", [batchId]);
        assertEquals(sendIds.sort(), rows.rows.map((r) => r.id).sort());
        // Nothing else is queued on the stream: the next thing is at most a ping.
        await byBatch.next(300).then(
          (e) => {
            throw new Error(`unexpected ${JSON.stringify(e)}`);
          },
          (err) => assertMatch(err.message, /timed out/),
        );
      });
    } finally {
      bySend.close();
      byBatch.close();
    }

    await t.step("clients that go away are unsubscribed", async () => {
      await waitFor(() => liveEvents(stack.service.deps).subscriberCount === 0, 5000, "subscribers to leave");
    });
  } finally {
    if (worker) {
      (worker as Deno.ChildProcess).kill("SIGTERM");
      await (worker as Deno.ChildProcess).status;
    }
    await stack.stop();
  }
});

Deno.test("live events: LISTEN path, reconnects, bounded queues, errors", opts, async (t) => {
  const stack = await startStack();
  const other = otherConnection(stack);
  let stopping: Promise<void> | null = null;
  try {
    const tenant = await stack.tenant();
    const create = async (to: string, extra: Record<string, unknown> = {}) => {
      const r = await stack.api("POST", "/api/v1/sends", {
        key: tenant.key,
        body: { templateId: tenant.templateId, to, personalizations: { order_id: "L1" }, ...extra },
      });
      assertEquals(r.status, 202);
      return r.body;
    };

    await t.step("a scheduled send streams its delivery when it comes due", async () => {
      const s = await create("later@example.test", { scheduledAt: new Date(Date.now() + 1500).toISOString() });
      const sub = await subscribe(stack, { sendId: s.id }, { key: tenant.key });
      try {
        const evs = await sub.take(2);
        assertEquals(evs.map((e) => e.type), ["SENT", "DELIVERED"]);
      } finally {
        sub.close();
      }
    });

    const s = await create("watched@example.test");
    await waitForStatus(stack, tenant.key, s.id, ["delivered"]);

    await t.step(
      "an event inserted on another connection reaches the subscriber (LISTEN, no in-process bus)",
      async () => {
        const sub = await subscribe(stack, { sendId: s.id }, { key: tenant.key });
        try {
          await insertEvents(other, [{
            send_id: s.id,
            account_id: tenant.accountId,
            type: "opened",
            data: { userAgent: "elsewhere" },
          }]);
          const [e] = await sub.take(1);
          assertEquals(e.type, "OPENED");
          assertEquals(e.data, { userAgent: "elsewhere" });
          // Another send's and another account's events do not reach it.
          const s2 = await create("bystander@example.test");
          await insertEvents(other, [{ send_id: s2.id, account_id: tenant.accountId, type: "clicked" }]);
          const foreign = await stack.tenant({ domain: "other.test" });
          await insertEvents(other, [{ send_id: s.id, account_id: foreign.accountId, type: "clicked" }]);
          await insertEvents(other, [{ send_id: s.id, account_id: tenant.accountId, type: "clicked" }]);
          const [c] = await sub.take(1);
          assertEquals(c.type, "CLICKED");
          assertEquals(c.sendId, s.id);
          const ids = await stack.pg.query(
            "select id::text from email_events where send_id = $1 and account_id = $2 and type = 'clicked'",
            [s.id, tenant.accountId],
          );
          assertEquals(ids.rows.map((r) => r.id), [c.id]);
        } finally {
          sub.close();
        }
      },
    );

    await t.step("when the LISTEN connection drops, it comes back and the subscriber catches up", async () => {
      const hub = liveEvents(stack.service.deps);
      const sub = await subscribe(stack, { sendId: s.id }, { key: tenant.key });
      try {
        const killed = await stack.pg.query(
          `select pg_terminate_backend(pid) as ok from pg_stat_activity
           where application_name = 'pp-notices' and datname = current_database()`,
        );
        // One per event loop: the API's and the worker thread's.
        assertEquals(killed.rows.length, 2);
        // Recorded while nobody listens: its notice is lost, the catch-up reads it back.
        await insertEvents(other, [{ send_id: s.id, account_id: tenant.accountId, type: "opened", data: { n: 1 } }]);
        const [missed] = await sub.take(1);
        assertEquals([missed.type, missed.data], ["OPENED", { n: 1 }]);
        await waitFor(() => hub.listening, 5000, "LISTEN again");
        await insertEvents(other, [{ send_id: s.id, account_id: tenant.accountId, type: "opened", data: { n: 2 } }]);
        const [after] = await sub.take(1);
        assertEquals(after.data, { n: 2 });
        await sub.next(300).then(
          (e) => {
            throw new Error(`a duplicate or stray event: ${JSON.stringify(e)}`);
          },
          (err) => assertMatch(err.message, /timed out/),
        );
      } finally {
        sub.close();
      }
    });

    await t.step(
      "one insert of 100 events is announced as 3 notifications of 40, 40 and 20 notices, in order",
      async () => {
        const client = new pg.Client({ connectionString: stack.databaseUrl });
        await client.connect();
        try {
          const payloads: string[] = [];
          client.on("notification", (m) => m.channel === "pp_events" && payloads.push(m.payload ?? ""));
          await client.query("listen pp_events");
          await insertEvents(
            stack.service.deps.db,
            Array.from({ length: 100 }, (_, n) => ({
              send_id: s.id,
              account_id: tenant.accountId,
              type: "opened" as const,
              data: { n },
            })),
          );
          await waitFor(() => payloads.length >= 3, 5000, "three notifications");
          const notices = payloads.map((p) => JSON.parse(p) as { id: string; sendId: string; accountId: string }[]);
          assertEquals(notices.map((n) => n.length), [40, 40, 20]);
          const ids = notices.flat().map((n) => BigInt(n.id));
          assertEquals(new Set(ids).size, 100);
          assert(ids.every((id, i) => i === 0 || id > ids[i - 1]), "oldest first, across notifications");
          assert(notices.flat().every((n) => n.sendId === s.id && n.accountId === tenant.accountId));
        } finally {
          await client.end();
        }
      },
    );

    await t.step("channels added one after the other while listening are all LISTENed", async () => {
      const listener = new Listener(
        () => new pg.Client({ connectionString: stack.databaseUrl }),
        createLogger("error"),
      );
      const got: string[] = [];
      try {
        listener.on("pp_test_a", (p) => got.push(`a:${p}`));
        await listener.whenListening();
        // The second is added while the first one's LISTEN is under way (it was left out).
        listener.on("pp_test_b", (p) => got.push(`b:${p}`));
        listener.on("pp_test_c", (p) => got.push(`c:${p}`));
        await listener.whenListening();
        await stack.service.deps.pool.query("select pg_notify('pp_test_b', '1'), pg_notify('pp_test_c', '2')");
        await waitFor(() => got.length === 2, 5_000, "both notices");
        assertEquals(got.sort(), ["b:1", "c:2"]);
      } finally {
        await listener.stop();
      }
    });

    await t.step("a subscriber that falls behind keeps a bounded queue and loses nothing", async () => {
      // A hub of its own with a tiny queue, on the real database.
      const listener = new Listener(
        () => new pg.Client({ connectionString: stack.databaseUrl }),
        createLogger("error"),
      );
      const hub = new LiveEvents(listener, createLogger("error"), { maxQueue: 5, chunk: 4 });
      try {
        const db = stack.service.deps.db;
        const sub = await hub.subscribe<EventRow>({
          accountId: tenant.accountId,
          sendId: s.id,
          startId: await maxEventId(db),
          load: (ids) => eventsByIds(db, tenant.accountId, ids),
          since: (afterId, limit) => eventsAfter(db, tenant.accountId, { sendId: s.id }, afterId, limit),
        });
        await insertEvents(
          other,
          Array.from({ length: 23 }, (_, n) => ({
            send_id: s.id,
            account_id: tenant.accountId,
            type: "opened" as const,
            data: { n },
          })),
        );
        // Let every notice arrive (and overflow the queue) before reading any.
        await new Promise((r) => setTimeout(r, 300));
        const got: number[] = [];
        while (got.length < 23) {
          const r = await sub.next();
          assert(!r.done);
          got.push(((r.value as EventRow).data as { n: number }).n);
        }
        assertEquals(got, Array.from({ length: 23 }, (_, n) => n));
        await sub.return();
        assertEquals(hub.subscriberCount, 0);
      } finally {
        await hub.stop();
        await listener.stop();
      }
    });

    await t.step("events(sendId, type) lists one type, with pages", async () => {
      const q = `query($id: ID!, $type: EmailEventType, $first: Int, $after: String) {
        events(sendId: $id, type: $type, first: $first, after: $after) { nodes { type data } pageInfo { hasNextPage endCursor } }
      }`;
      const delivered = await gql(stack, tenant.key, q, { id: s.id, type: "DELIVERED" });
      assertEquals(delivered.events.nodes.map((e: { type: string }) => e.type), ["DELIVERED"]);
      const p1 = await gql(stack, tenant.key, q, { id: s.id, type: "OPENED", first: 2 });
      assertEquals(p1.events.nodes.map((e: { data: unknown }) => e.data), [{ userAgent: "elsewhere" }, { n: 1 }]);
      assert(p1.events.pageInfo.hasNextPage);
      const p2 = await gql(stack, tenant.key, q, {
        id: s.id,
        type: "OPENED",
        first: 2,
        after: p1.events.pageInfo.endCursor,
      });
      assertEquals(p2.events.nodes.map((e: { data: unknown }) => e.data), [{ n: 2 }, { n: 0 }]);
      const none = await gql(stack, tenant.key, q, { id: s.id, type: "BOUNCED" });
      assertEquals(none.events.nodes, []);
    });

    await t.step(
      "bad arguments, foreign and unknown ids, and the admin token are refused before streaming",
      async () => {
        const foreign = await stack.tenant({ domain: "foreign.test" });
        const firstError = async (variables: Record<string, unknown>, auth: { key?: string; token?: string }) => {
          const sub = await subscribe(stack, variables, auth);
          try {
            const e = await sub.next();
            assertEquals(e.event, "next");
            assertEquals(e.data.data ?? null, null);
            assertEquals((await sub.next()).event, "complete");
            return e.data.errors[0];
          } finally {
            sub.close();
          }
        };
        assertEquals((await firstError({ sendId: s.id }, { key: foreign.key })).extensions.code, "not_found");
        assertEquals(
          (await firstError({ sendId: crypto.randomUUID() }, { key: tenant.key })).extensions.code,
          "not_found",
        );
        assertEquals((await firstError({ sendId: "nope" }, { key: tenant.key })).extensions.code, "not_found");
        assertEquals(
          (await firstError({ batchId: crypto.randomUUID() }, { key: tenant.key })).extensions.code,
          "not_found",
        );
        const neither = await firstError({}, { key: tenant.key });
        assertEquals(neither.extensions.code, "validation_failed");
        assertEquals(neither.extensions.errors.map((e: { path: string }) => e.path), ["sendId", "batchId"]);
        const both = await firstError({ sendId: s.id, batchId: crypto.randomUUID() }, { key: tenant.key });
        assertEquals(both.extensions.code, "validation_failed");
        assertEquals((await firstError({ sendId: s.id }, { token: ADMIN_TOKEN })).extensions.code, "unauthorized");
        // Without any credential the request is refused before it is read: a plain 401, no stream.
        const anonymous = await fetch(`${stack.url}/graphql`, {
          method: "POST",
          headers: { "content-type": "application/json", accept: "text/event-stream" },
          body: JSON.stringify({ query: SEND_EVENTS, variables: { sendId: s.id } }),
        });
        assertEquals(anonymous.status, 401);
        assertEquals((await anonymous.json()).errors[0].extensions.code, "unauthorized");
        await waitFor(() => liveEvents(stack.service.deps).subscriberCount === 0, 5000, "no subscriber left");
      },
    );

    await t.step("a failure inside the stream is logged and answered masked, then the stream ends", async () => {
      const sub = await subscribe(stack, { sendId: s.id }, { key: tenant.key });
      await stack.pg.query("alter table email_events rename to email_events_gone");
      try {
        // A notice whose row cannot be read now.
        await stack.pg.query("select pg_notify('pp_events', $1)", [
          JSON.stringify({ id: "1", sendId: s.id, batchId: null, accountId: tenant.accountId, type: "opened" }),
        ]);
        const e = await sub.next();
        assertEquals(e.data.errors[0].message, "Unexpected error.");
        assertEquals(e.data.errors[0].extensions.code, "internal");
        assert(!JSON.stringify(e.data).includes("email_events"));
        assertEquals((await sub.next()).event, "complete");
      } finally {
        await stack.pg.query("alter table email_events_gone rename to email_events");
        sub.close();
      }
    });

    await t.step("stopping the service ends open streams instead of waiting for them", async () => {
      await other.destroy(); // the test database is dropped at the end of stop()
      const sub = await subscribe(stack, { sendId: s.id }, { key: tenant.key });
      stopping = stack.stop();
      const e = await sub.next();
      assertEquals(e.event, "complete");
      await stopping;
    });
  } finally {
    await other.destroy().catch(() => {});
    await (stopping ?? stack.stop());
  }
});
