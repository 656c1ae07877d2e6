/**
 * main.ts as a real process: roles (an `api` process accepts but never delivers; a
 * `worker` process serves only /healthz and delivers), and SIGTERM exits 0.
 */
import { assertEquals, assertMatch } from "./assert.ts";
import {
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
