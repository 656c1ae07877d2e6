/**
 * Faults an operator meets, with real processes: a worker killed with SIGKILL mid-batch, a
 * worker stopped with SIGTERM mid-batch, a delivery that keeps throwing, and a relay that
 * hangs, refuses connections and answers 421. Nothing accepted is lost, nothing stays
 * locked or `sending`, and a redelivered message keeps its Message-ID.
 */
import { assert, assertEquals } from "./assert.ts";
import {
  opts,
  spawnMain,
  spawnWorker,
  type Stack,
  startSmtpSink,
  startStack,
  type TestTenant,
  waitFor,
  waitForStatus,
} from "./helpers.ts";

type Main = Awaited<ReturnType<typeof spawnMain>>;

/** Kills a process the test started, unless it has exited already. */
function stopProcess(m: Main) {
  try {
    m.child.kill("SIGKILL");
  } catch { /* already exited */ }
}

async function batches(stack: Stack, tenant: TestTenant, n: number, size: number) {
  for (let b = 0; b < n; b++) {
    const recipients = Array.from({ length: size }, (_, i) => ({
      to: `b${b}r${i}@example.test`,
      personalizations: { order_id: `B${b}-${i}` },
    }));
    const r = await stack.api("POST", "/api/v1/sends/batch", {
      key: tenant.key,
      body: { templateId: tenant.templateId, recipients },
    });
    assertEquals(r.status, 202, JSON.stringify(r.body).slice(0, 300));
  }
}

const lockedJobs = (stack: Stack) =>
  stack.count("select count(*) from graphile_worker.jobs where locked_by is not null");

/** Every recipient got its message, and every copy of one carries the send's own Message-ID. */
async function assertOneMessageIdEach(stack: Stack, expected: number) {
  const ids = new Map<string, string>();
  const r = await stack.pg.query("select to_email, message_id from sends");
  for (const row of r.rows) ids.set(row.to_email, row.message_id);
  const seen = new Set<string>();
  for (const m of stack.sink.messages) {
    const to = m.to[0];
    seen.add(to);
    assertEquals(m.messageId, ids.get(to), `a redelivered message keeps its Message-ID (${to})`);
  }
  assertEquals(seen.size, expected);
}

Deno.test("faults: a worker killed with SIGKILL mid-batch; another delivers everything", opts, async (t) => {
  const stack = await startStack({ env: { PP_ROLE: "api" } });
  const tenant = await stack.tenant();
  const started: Main[] = [];
  try {
    await batches(stack, tenant, 2, 1_000);
    const first = await spawnWorker(stack);
    started.push(first);
    await waitFor(() => stack.sink.messages.length >= 300, 60_000, "the first worker to be mid-batch");
    first.child.kill("SIGKILL");
    await first.child.status;
    const atKill = stack.sink.messages.length;
    const stranded = await lockedJobs(stack);

    await t.step("the dead worker's jobs are freed and delivered by a new worker within 60 s", async () => {
      assert(atKill < 2_000, `the kill came too late to test anything (${atKill} delivered)`);
      const t0 = performance.now();
      started.push(await spawnWorker(stack));
      await waitFor(
        async () => (await stack.count("select count(*) from sends where status = 'delivered'")) === 2_000,
        60_000,
        "all 2,000 sends delivered",
      );
      const recovery = Math.round(performance.now() - t0);
      console.log(`kill -9 recovery: ${stranded} jobs locked at the kill, all delivered ${recovery} ms after restart`);
      assertEquals(await stack.count("select count(*) from sends where status = 'sending'"), 0);
      await waitFor(async () => (await lockedJobs(stack)) === 0, 10_000, "no job left locked");
    });

    await t.step("duplicates are bounded by what was in flight; Message-IDs are kept", async () => {
      const dups = stack.sink.messages.length - 2_000;
      // At most every job the dead worker was running (PP_WORKER_CONCURRENCY, 100) went out twice.
      assert(dups >= 0 && dups <= 100, `${dups} duplicates`);
      await assertOneMessageIdEach(stack, 2_000);
    });
  } finally {
    for (const w of started) stopProcess(w);
    await Promise.all(started.map((w) => w.child.status));
    await stack.stop();
  }
});

// Role all stops its worker thread the same way: the thread's runner, then the process.
for (const role of ["worker", "all"]) {
  Deno.test(
    `faults: SIGTERM mid-batch (role ${role}) finishes in flight, hands the rest back at once, exits in time`,
    opts,
    async (t) => {
      const stack = await startStack({ env: { PP_ROLE: "api" } });
      const tenant = await stack.tenant();
      const started: Main[] = [];
      try {
        await batches(stack, tenant, 1, 1_000);
        const first = await spawnWorker(stack, { PP_ROLE: role, PP_SHUTDOWN_TIMEOUT_MS: "5000" });
        started.push(first);
        await waitFor(() => stack.sink.messages.length >= 100, 60_000, "the worker to be mid-batch");
        const t0 = performance.now();
        first.child.kill("SIGTERM");
        const status = await first.child.status;
        const took = performance.now() - t0;

        await t.step("the process exits 0 within PP_SHUTDOWN_TIMEOUT_MS and leaves no job locked", async () => {
          assertEquals(status.code, 0);
          assert(took < 5_000, `stop took ${took} ms`);
          assertEquals(await lockedJobs(stack), 0);
          assertEquals(await stack.count("select count(*) from sends where status = 'sending'"), 0);
          assertEquals(await stack.count("select count(*) from worker_heartbeats"), 0);
        });

        await t.step("a new worker delivers the rest without waiting for a dead worker's timeout", async () => {
          assert(stack.sink.messages.length < 1_000, "the stop came too late to test anything");
          started.push(await spawnWorker(stack));
          await waitFor(
            async () => (await stack.count("select count(*) from sends where status = 'delivered'")) === 1_000,
            15_000,
            "all 1,000 sends delivered",
          );
          assertEquals(stack.sink.messages.length, 1_000, "a graceful stop delivers nothing twice");
          await assertOneMessageIdEach(stack, 1_000);
        });
      } finally {
        for (const w of started) stopProcess(w);
        await Promise.all(started.map((w) => w.child.status));
        await stack.stop();
      }
    },
  );
}

Deno.test("faults: a delivery that keeps throwing ends failed, not sending", opts, async () => {
  // Jobs get their attempts when they are queued: by the api process.
  const stack = await startStack({ env: { PP_ROLE: "api", PP_SMTP_MAX_ATTEMPTS: "2" } });
  const tenant = await stack.tenant();
  let w: Main | null = null;
  try {
    const r = await stack.api("POST", "/api/v1/sends", {
      key: tenant.key,
      body: { templateId: tenant.templateId, to: "poison@example.test", personalizations: { order_id: "P1" } },
    });
    assertEquals(r.status, 202);
    // A worker whose PP_SECRET differs cannot decrypt the domain's DKIM key: every attempt throws.
    w = await spawnWorker(stack, { PP_SECRET: "another-secret-0123456789abcdef" });
    const s = await waitForStatus(stack, tenant.key, r.body.id, ["failed"], 30_000);
    assertEquals(s.error.code, "internal_error");
    const failed = s.events.filter((e: { type: string }) => e.type === "failed");
    assertEquals(failed.length, 1);
    assertEquals(stack.sink.messages.length, 0);
  } finally {
    if (w) stopProcess(w);
    await w?.child.status;
    await stack.stop();
  }
});

/**
 * A TCP relay in front of an SMTP sink that misbehaves on demand: `hang()` holds the next
 * connection open and silent; `down()` drops every connection and stops listening (new ones
 * are refused) until `up()`.
 */
function faultyRelay(targetPort: number) {
  let listener: Deno.TcpListener | null = null;
  let hangNext = false;
  const hung: Deno.TcpConn[] = [];
  const open = new Set<Deno.TcpConn>();
  let hungClosed: () => void = () => {};
  const hungClosedP = new Promise<void>((r) => hungClosed = r);
  let port = 0;

  async function serve(l: Deno.TcpListener) {
    for await (const conn of l) {
      if (hangNext) {
        hangNext = false;
        hung.push(conn);
        // Read (and drop) until the client gives up on us.
        (async () => {
          const buf = new Uint8Array(1024);
          try {
            while ((await conn.read(buf)) !== null) { /* silent */ }
          } catch { /* reset */ }
          hungClosed();
        })();
        continue;
      }
      (async () => {
        const upstream = await Deno.connect({ hostname: "127.0.0.1", port: targetPort });
        open.add(conn);
        open.add(upstream);
        await Promise.all([
          conn.readable.pipeTo(upstream.writable).catch(() => {}),
          upstream.readable.pipeTo(conn.writable).catch(() => {}),
        ]);
        open.delete(conn);
        open.delete(upstream);
      })();
    }
  }
  function up() {
    listener = Deno.listen({ hostname: "127.0.0.1", port });
    port = (listener.addr as Deno.NetAddr).port;
    serve(listener).catch(() => {});
  }
  up();
  return {
    url: `smtp://127.0.0.1:${port}`,
    hang() {
      hangNext = true;
    },
    /** Resolves once the client closed the hung connection (its timeout). */
    hungClosed: hungClosedP,
    down() {
      listener?.close();
      listener = null;
      for (const c of open) {
        try {
          c.close();
        } catch { /* closed */ }
      }
      open.clear();
    },
    up,
    close() {
      listener?.close();
      for (const c of hung) {
        try {
          c.close();
        } catch { /* closed */ }
      }
    },
  };
}

Deno.test("faults: a relay that hangs, refuses connections and answers 421 bursts", opts, async (t) => {
  const sink = await startSmtpSink();
  const relay = faultyRelay(Number(new URL(sink.url).port));
  const stack = await startStack({
    env: { SMTP_URL: relay.url, PP_SMTP_TIMEOUT_MS: "1500", PP_SMTP_POOL_SIZE: "5" },
  });
  const tenant = await stack.tenant();
  const send = async (to: string) => {
    const r = await stack.api("POST", "/api/v1/sends", {
      key: tenant.key,
      body: { templateId: tenant.templateId, to, personalizations: { order_id: to } },
    });
    assertEquals(r.status, 202);
    return r.body.id as string;
  };
  try {
    await t.step("one hung connection holds up no other send; its own send is retried", async () => {
      relay.hang();
      const ids = [];
      for (let i = 0; i < 10; i++) ids.push(await send(`hang${i}@example.test`));
      await relay.hungClosed;
      // When the client gave up on the hung connection, the others had gone out through the rest.
      assert(sink.messages.length >= 9, `${sink.messages.length} delivered while one connection hung`);
      for (const id of ids) await waitForStatus(stack, tenant.key, id, ["delivered"], 20_000);
      const s = await stack.api("GET", `/api/v1/sends/${ids[0]}`, { key: tenant.key });
      assertEquals(s.body.status, "delivered");
    });

    await t.step("refused connections are retried with backoff until the relay is back", async () => {
      relay.down();
      const ids = [await send("down1@example.test"), await send("down2@example.test")];
      await waitFor(
        async () =>
          (await stack.count(
            "select count(*) from sends where to_email like 'down%' and error_code = 'delivery_deferred'",
          )) === 2,
        10_000,
        "both attempts to fail on a refused connection",
      );
      relay.up();
      for (const id of ids) await waitForStatus(stack, tenant.key, id, ["delivered"], 30_000);
    });

    await t.step("421 and 451 are retried; a 5xx is one attempt", async () => {
      let goneAttempts = 0;
      sink.reply = (rcpt, attempt) => {
        if (rcpt.startsWith("busy") && attempt <= 2) return { code: attempt === 1 ? 421 : 451, message: "try later" };
        if (!rcpt.startsWith("gone")) return null;
        goneAttempts = attempt;
        return { code: 550, message: "no such user" };
      };
      const busy = await send("busy@example.test");
      const gone = await send("gone@example.test");
      const b = await waitForStatus(stack, tenant.key, busy, ["delivered"], 30_000);
      assertEquals(b.status, "delivered");
      const g = await waitForStatus(stack, tenant.key, gone, ["bounced", "failed"], 10_000);
      assertEquals(g.status, "bounced");
      assertEquals(goneAttempts, 1, "a 5xx is not retried");
    });
  } finally {
    await stack.stop();
    relay.close();
    await sink.close();
  }
});
