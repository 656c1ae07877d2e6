/**
 * main.ts as a real process: roles (an `api` process accepts but never delivers; a
 * `worker` process serves only /healthz and delivers; an `all` process delivers on its
 * worker thread, and its webhooks on a third started with the first endpoint), and SIGTERM
 * exits 0.
 */
import { assert, assertEquals, assertMatch } from "./assert.ts";
import { startReceiver, verified } from "./webhook_receiver.ts";
import { onDemandThread } from "../src/jobs/on_demand.ts";
import { createLogger } from "../src/log.ts";
import {
  ADMIN_TOKEN,
  dropDatabase,
  freshDatabase,
  opts,
  spawnMain,
  spawnWorker,
  startStack,
  startTaskFlags,
  waitFor,
  waitForStatus,
} from "./helpers.ts";

Deno.test("process: api role accepts, worker role delivers, SIGTERM exits 0", opts, async (t) => {
  const stack = await startStack({ env: { PP_ROLE: "api" } });
  const tenant = await stack.tenant();
  let worker: Awaited<ReturnType<typeof spawnMain>> | null = null;
  try {
    const r = await stack.api("POST", "/api/v1/sends", {
      key: tenant.key,
      body: { templateId: tenant.templateId, to: "ops@example.test", personalizations: { order_id: "A1" } },
    });
    assertEquals(r.status, 202);

    await t.step("an api-only process queues but does not deliver", async () => {
      await new Promise((res) => setTimeout(res, 700));
      const s = await stack.api("GET", `/api/v1/sends/${r.body.id}`, { key: tenant.key });
      assertEquals(s.body.status, "queued");
      assertEquals(stack.sink.messages.length, 0);
    });

    await t.step("a worker process delivers it and serves only /healthz", async () => {
      // Every process of one deployment shares PP_SECRET (tracking tokens, DKIM keys at rest).
      worker = await spawnWorker(stack);
      const health = await fetch(`${worker.url}/healthz`);
      assertEquals(await health.json(), { status: "ok" });
      const gql = await fetch(`${worker.url}/graphql`, { method: "POST" });
      assertEquals(gql.status, 404);
      await gql.body?.cancel();
      const send = await waitForStatus(stack, tenant.key, r.body.id, ["delivered"], 10_000);
      assertEquals(send.to, "ops@example.test");
      assertEquals(stack.sink.messages.length, 1);
      assertMatch(stack.sink.messages[0].subject, /A1/);
    });

    await t.step("SIGTERM stops the process with exit code 0", async () => {
      worker!.child.kill("SIGTERM");
      const status = await waitFor(() => worker!.child.status, 15_000, "worker exit");
      assertEquals(status.code, 0);
      worker = null;
    });
  } finally {
    if (worker) (worker as { child: Deno.ChildProcess }).child.kill("SIGKILL");
    await stack.stop();
  }
});

/** CPU ticks (user + system) each thread of process `pid` has used, by thread id, with its name. */
async function threadTicks(pid: number): Promise<Map<number, { name: string; ticks: number }>> {
  const out = new Map<number, { name: string; ticks: number }>();
  for await (const t of Deno.readDir(`/proc/${pid}/task`)) {
    try {
      const name = (await Deno.readTextFile(`/proc/${pid}/task/${t.name}/comm`)).trim();
      // Fields after "(comm) ": state is [0], utime [11], stime [12].
      const f = (await Deno.readTextFile(`/proc/${pid}/task/${t.name}/stat`)).split(") ")[1].split(" ");
      out.set(Number(t.name), { name, ticks: Number(f[11]) + Number(f[12]) });
    } catch { /* a thread that ended meanwhile */ }
  }
  return out;
}

Deno.test("process: role all delivers on a thread of its own and answers HTTP on the main one", opts, async (t) => {
  const stack = await startStack({ env: { PP_ROLE: "api" } });
  const tenant = await stack.tenant();
  const all = await spawnWorker(stack, { PP_ROLE: "all" });
  try {
    await t.step("a 1,000-recipient batch accepted elsewhere is delivered by the worker thread's CPU", async () => {
      const before = await threadTicks(all.child.pid);
      const recipients = Array.from({ length: 1_000 }, (_, i) => ({ to: `t${i}@example.test` }));
      const r = await stack.api("POST", "/api/v1/sends/batch", {
        key: tenant.key,
        body: { templateId: tenant.templateId, recipients },
      });
      assertEquals(r.status, 202);
      await waitFor(
        async () => (await stack.count("select count(*) from sends where status = 'delivered'")) === 1_000,
        60_000,
        "1,000 sends delivered",
      );
      const after = await threadTicks(all.child.pid);
      const used = (tid: number) => (after.get(tid)?.ticks ?? 0) - (before.get(tid)?.ticks ?? 0);
      // Deno names a Web Worker's thread worker-N: the delivery thread, and the DKIM signing
      // thread it starts (rsa_sign.ts threadSigner). The main thread's id is the process id.
      const workers = [...after].filter(([, v]) => v.name.startsWith("worker-")).map(([tid]) => tid);
      assert(workers.length === 1 || workers.length === 2, `worker threads: ${JSON.stringify([...after.values()])}`);
      const thread = workers.reduce((sum, tid) => sum + used(tid), 0);
      const main = used(all.child.pid);
      console.log(`1,000 deliveries: worker thread ${thread} ticks, main thread ${main} ticks`);
      assert(thread > 4 * main, `the worker thread did the deliveries (${thread} ticks vs main ${main})`);
    });

    await t.step("the same process answers the API on its main thread", async () => {
      const res = await fetch(`${all.url}/api/v1/sends?limit=1`, { headers: { "x-api-key": tenant.key } });
      assertEquals(res.status, 200);
      assertEquals((await res.json()).data.length, 1);
    });

    await t.step("SIGTERM stops both halves with exit code 0", async () => {
      all.child.kill("SIGTERM");
      assertEquals((await all.child.status).code, 0);
      assertEquals(await stack.count("select count(*) from worker_heartbeats"), 0);
    });
  } finally {
    try {
      all.child.kill("SIGKILL");
    } catch { /* exited */ }
    await all.child.status;
    await stack.stop();
  }
});

Deno.test(
  "process: role all starts its webhook thread when an endpoint is added, and sends from it",
  opts,
  async () => {
    const stack = await startStack({ env: { PP_ROLE: "api", PP_WEBHOOK_ALLOW_PRIVATE: "true" } });
    const tenant = await stack.tenant();
    const all = await spawnWorker(stack, { PP_ROLE: "all", PP_WEBHOOK_ALLOW_PRIVATE: "true" });
    const receiver = startReceiver();
    const workers = async () =>
      [...(await threadTicks(all.child.pid)).values()].filter((t) => t.name.startsWith("worker-"));
    try {
      // No endpoint: the delivery thread alone (its DKIM thread starts with the first signature).
      await new Promise((r) => setTimeout(r, 1_500));
      const before = (await workers()).length;
      assertEquals(before, 1, "no webhook thread without an endpoint");
      // Added through the api process: its announcement wakes the all process.
      const t0 = performance.now();
      const created = await stack.api("POST", "/api/v1/webhooks", { key: tenant.key, body: { url: receiver.url } });
      assertEquals(created.status, 201);
      await waitFor(async () => (await workers()).length === before + 1, 10_000, "the webhook thread");
      console.log(`webhook thread up ${Math.round(performance.now() - t0)} ms after the endpoint was added`);
      const send = await stack.api("POST", "/api/v1/sends", {
        key: tenant.key,
        body: { templateId: tenant.templateId, to: "hooked@example.test", personalizations: { order_id: "W-1" } },
      });
      assertEquals(send.status, 202);
      await waitFor(() => receiver.got.length >= 3, 20_000, "queued, sent and delivered webhooks");
      assertEquals(verified(receiver, created.body.secret).map((b) => b.type).sort(), [
        "email.delivered",
        "email.queued",
        "email.sent",
      ]);
      // The thread's counters are in the process's /metrics.
      const metrics = await (await fetch(`${all.url}/metrics`, { headers: { authorization: `Bearer ${ADMIN_TOKEN}` } }))
        .text();
      assertMatch(metrics, /pp_webhook_attempts_total\{outcome="succeeded"\} [3-9]/);
      all.child.kill("SIGTERM");
      assertEquals((await all.child.status).code, 0);
    } finally {
      try {
        all.child.kill("SIGKILL");
      } catch { /* exited */ }
      await all.child.status;
      await receiver.close();
      await stack.stop();
    }
  },
);

Deno.test("process: a start with the defaults logs no warning", opts, async () => {
  const databaseUrl = await freshDatabase();
  const dataDir = await Deno.makeTempDir({ prefix: "pp-test-data-" });
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", ...await startTaskFlags(), new URL("../main.ts", import.meta.url).pathname],
    env: { DATABASE_URL: databaseUrl, PORT: "0", PP_DATA_DIR: dataDir, PP_LOG_LEVEL: "warn" },
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  try {
    const out = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
    let text = "";
    while (!text.includes("listening on")) {
      const { value, done } = await out.read();
      if (done) break;
      text += value;
    }
    assertMatch(text, /listening on/);
    child.kill("SIGTERM");
    const [status, stderr] = await Promise.all([
      child.status,
      new Response(child.stderr).text(),
      (async () => {
        while (!(await out.read()).done) { /* drain */ }
      })(),
    ]);
    assertEquals(status.code, 0);
    assertEquals(stderr.trim(), "", "warnings or errors on a default start");
  } finally {
    try {
      child.kill("SIGKILL");
    } catch { /* exited */ }
    await dropDatabase(databaseUrl);
    await Deno.remove(dataDir, { recursive: true }).catch(() => {});
  }
});

Deno.test(
  "process: an on-demand thread starts when wanted, stops after its idle time, and wakes at once",
  opts,
  async () => {
    let wanted = false;
    const events: string[] = [];
    const log = createLogger("error");
    const demand = onDemandThread({
      name: "test",
      start: () => {
        events.push("start");
        return Promise.resolve({
          metrics: () => Promise.resolve([]),
          stop: () => (events.push("stop"), Promise.resolve()),
        });
      },
      wanted: () => Promise.resolve(wanted),
      everyMs: 10_000, // only wake() and the first check run within this test's time
      idleMs: 200,
      log,
    });
    try {
      await new Promise((r) => setTimeout(r, 50));
      assertEquals(events, [], "not wanted: not started");
      wanted = true;
      demand.wake();
      await new Promise((r) => setTimeout(r, 50));
      assertEquals(events, ["start"], "woken and wanted: started");
      wanted = false;
      demand.wake();
      await new Promise((r) => setTimeout(r, 50));
      assertEquals(events, ["start"], "not wanted for less than its idle time: still running");
      await new Promise((r) => setTimeout(r, 250));
      demand.wake();
      await new Promise((r) => setTimeout(r, 50));
      assertEquals(events, ["start", "stop"], "idle for longer: stopped");
      wanted = true;
      demand.wake();
      await new Promise((r) => setTimeout(r, 50));
      assertEquals(events, ["start", "stop", "start"], "wanted again: started again");
    } finally {
      await demand.stop();
    }
    assertEquals(events, ["start", "stop", "start", "stop"], "stop() stops it");
  },
);
