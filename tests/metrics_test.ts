/**
 * `GET /metrics` and request ids (API.md "Describing and observing the service"): the token,
 * counters that move by exactly what happened (a delivered send, a render failure, the
 * requests made), labels that stay bounded, `X-Request-Id` on every answer, and the log
 * lines of a request carrying it (read from a spawned process's stderr).
 */
import { assert, assertEquals, assertMatch, assertNotEquals } from "./assert.ts";
import {
  ADMIN_TOKEN,
  type Json,
  opts,
  send,
  spawnWorker,
  startStack,
  startTaskFlags,
  untilListening,
  waitFor,
  waitForStatus,
} from "./helpers.ts";

const METRICS_TOKEN = "test-metrics-token-0123456789";
const UUID = /[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}/i;

/** One sample of the text format: its name, its labels, its value. */
interface Sample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

/** Parses Prometheus' text format (the subset prom-client writes: no timestamps). */
function parseMetrics(text: string): Sample[] {
  const samples: Sample[] = [];
  for (const line of text.split("\n")) {
    if (line === "" || line.startsWith("#")) continue;
    const m = line.match(/^([a-zA-Z_:][\w:]*)(?:\{(.*)\})? (\S+)$/);
    assert(m, `not a sample line: ${line}`);
    const labels: Record<string, string> = {};
    for (const l of (m[2] ?? "").matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)) {
      labels[l[1]] = l[2].replace(/\\(.)/g, (_, c) => c === "n" ? "\n" : c);
    }
    samples.push({ name: m[1], labels, value: Number(m[3]) });
  }
  return samples;
}

/** The value of the sample `name` with exactly `labels`, undefined when there is none. */
function sample(samples: Sample[], name: string, labels: Record<string, string> = {}): number | undefined {
  const want = JSON.stringify(Object.entries(labels).sort());
  return samples.find((x) => x.name === name && JSON.stringify(Object.entries(x.labels).sort()) === want)?.value;
}

/** The value of `name` with exactly `labels`, 0 when there is no such sample (a counter not moved yet). */
function value(samples: Sample[], name: string, labels: Record<string, string> = {}): number {
  return sample(samples, name, labels) ?? 0;
}

async function scrape(url: string, token = METRICS_TOKEN): Promise<{ text: string; samples: Sample[] }> {
  const res = await fetch(`${url}/metrics`, { headers: { authorization: `Bearer ${token}` } });
  const text = await res.text();
  assertEquals(res.status, 200, text);
  return { text, samples: parseMetrics(text) };
}

/** Every label value of every sample is one that a bounded set could hold: no id, no address. */
function assertBounded(samples: Sample[]): void {
  for (const s of samples) {
    for (const [k, v] of Object.entries(s.labels)) {
      assert(!UUID.test(v), `${s.name}{${k}="${v}"} holds an id`);
      assert(!v.includes("@"), `${s.name}{${k}="${v}"} holds an address`);
      if (k === "route") assertMatch(v, /^(\/[\w/:.-]*\*?|tracking|other)$/, `route label ${v}`);
      if (k === "status" && s.name.startsWith("pp_http")) assertMatch(v, /^\d{3}$/);
    }
  }
}

/** main.ts (as `deno task start` runs it) with its stderr kept line by line. */
async function spawnLogged(env: Record<string, string>) {
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", ...await startTaskFlags(), new URL("../main.ts", import.meta.url).pathname],
    env: { PORT: "0", PP_ADMIN_TOKEN: ADMIN_TOKEN, ...env },
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const lines: Json[] = [];
  (async () => {
    let rest = "";
    for await (const chunk of child.stderr.pipeThrough(new TextDecoderStream())) {
      const parts = (rest + chunk).split("\n");
      rest = parts.pop()!;
      for (const p of parts) {
        try {
          lines.push(JSON.parse(p));
        } catch { /* not a log line */ }
      }
    }
  })();
  return {
    url: await untilListening(child),
    lines,
    async stop() {
      child.kill("SIGTERM");
      await child.status;
    },
  };
}

async function post(url: string, path: string, key: string, body: unknown, requestId?: string) {
  const headers: Record<string, string> = { "content-type": "application/json", "x-api-key": key };
  if (requestId) headers["x-request-id"] = requestId;
  const res = await fetch(url + path, { method: "POST", headers, body: JSON.stringify(body) });
  return { status: res.status, headers: res.headers, body: await res.json() };
}

Deno.test("metrics: the token, counters that move by what happened, bounded labels, request ids", opts, async (t) => {
  const stack = await startStack({ env: { PP_METRICS_TOKEN: METRICS_TOKEN } });
  try {
    const tenant = await stack.tenant();

    await t.step("401 problem+json without the token; 200 with PP_METRICS_TOKEN and with the admin token", async () => {
      const refused: Record<string, string>[] = [
        {},
        { authorization: "Bearer not-the-token-at-all" },
        { "x-api-key": tenant.key },
        { authorization: `Bearer ${tenant.key}` },
      ];
      for (const headers of refused) {
        const res = await fetch(`${stack.url}/metrics`, { headers });
        assertEquals(res.status, 401);
        assertEquals(res.headers.get("content-type"), "application/problem+json");
        assertEquals((await res.json()).code, "unauthorized");
      }
      for (const token of [METRICS_TOKEN, ADMIN_TOKEN]) {
        const res = await fetch(`${stack.url}/metrics`, { headers: { authorization: `Bearer ${token}` } });
        assertEquals(res.status, 200);
        assertMatch(res.headers.get("content-type")!, /^text\/plain; version=0\.0\.4/);
        const text = await res.text();
        for (
          const [name, type] of [
            ["pp_sends_accepted_total", "counter"],
            ["pp_sends_finished_total", "counter"],
            ["pp_delivery_seconds", "histogram"],
            ["pp_jobs_queued", "gauge"],
            ["pp_jobs_oldest_due_seconds", "gauge"],
            ["pp_webhook_attempts_total", "counter"],
            ["pp_webhook_backlog", "gauge"],
            ["pp_render_failures_total", "counter"],
            ["pp_reputation_pauses_total", "counter"],
            ["pp_http_requests_total", "counter"],
            ["pp_http_request_seconds", "histogram"],
          ]
        ) assertMatch(text, new RegExp(`^# TYPE ${name} ${type}$`, "m"), name);
      }
      // Scrapes are not rate limited with tenants: a burst past PP_RATE_LIMIT's burst passes.
      const many = await Promise.all(
        Array.from(
          { length: 30 },
          () => fetch(`${stack.url}/metrics`, { headers: { authorization: `Bearer ${METRICS_TOKEN}` } }),
        ),
      );
      for (const r of many) {
        assertEquals(r.status, 200);
        await r.body?.cancel();
      }
    });

    await t.step("a delivered send and a render failure move the counters by exactly that", async () => {
      const before = (await scrape(stack.url)).samples;
      const ok = await send(stack, tenant.key, {
        templateId: tenant.templateId,
        to: "metrics-ok@example.test",
        personalizations: { order_id: "M-1" },
      });
      // Object.prototype's methods are no filters: the render fails (security_test has more).
      const bad = await send(stack, tenant.key, {
        templateId: tenant.templateId,
        to: "metrics-bad@example.test",
        subject: `{{ "x" | constructor }}`,
      });
      await waitForStatus(stack, tenant.key, ok.id, ["delivered"], 10_000);
      const failed = await waitForStatus(stack, tenant.key, bad.id, ["failed"], 15_000);
      assertEquals(failed.error.code, "render_failed");
      // One 404 on a send route, one on no route at all: each under its pattern, not its path.
      assertEquals((await stack.api("GET", `/api/v1/sends/${crypto.randomUUID()}`, { key: tenant.key })).status, 404);
      assertEquals((await stack.api("GET", `/api/v1/nothing/${crypto.randomUUID()}`, { key: tenant.key })).status, 404);

      // The worker counts right after its commit, which the status read may just beat.
      const after = await waitFor(
        async () => {
          const s = (await scrape(stack.url)).samples;
          return value(s, "pp_delivery_seconds_count") > value(before, "pp_delivery_seconds_count") &&
              value(s, "pp_sends_finished_total", { status: "failed" }) >
                value(before, "pp_sends_finished_total", { status: "failed" })
            ? s
            : null;
        },
        5000,
        "the worker's counts",
      ) as Sample[];
      const delta = (name: string, labels: Record<string, string> = {}) =>
        value(after, name, labels) - value(before, name, labels);

      assertEquals(delta("pp_sends_accepted_total"), 2);
      assertEquals(delta("pp_sends_finished_total", { status: "delivered" }), 1);
      assertEquals(delta("pp_sends_finished_total", { status: "failed" }), 1);
      assertEquals(delta("pp_sends_finished_total", { status: "bounced" }), 0);
      assertEquals(delta("pp_sends_finished_total", { status: "suppressed" }), 0);
      assertEquals(delta("pp_delivery_seconds_count"), 1);
      assert(delta("pp_delivery_seconds_sum") > 0 && delta("pp_delivery_seconds_sum") < 10);
      assertEquals(delta("pp_render_failures_total", { reason: "template_error" }), 1);
      assertEquals(delta("pp_render_failures_total", { reason: "timeout" }), 0);
      assertEquals(delta("pp_http_requests_total", { route: "/api/v1/sends", status: "202" }), 2);
      assertEquals(delta("pp_http_requests_total", { route: "/api/v1/sends/:id", status: "404" }), 1);
      assertEquals(delta("pp_http_requests_total", { route: "other", status: "404" }), 1);
      assert(delta("pp_http_requests_total", { route: "/api/v1/sends/:id", status: "200" }) >= 2);
      assert(delta("pp_http_request_seconds_count", { route: "/api/v1/sends" }) === 2);
      assert(delta("pp_http_requests_total", { route: "/metrics", status: "200" }) >= 1);
      assertBounded(after);
    });

    await t.step("the queue gauges: a scheduled send waits as scheduled, an overdue job as due", async () => {
      const later = await send(stack, tenant.key, {
        templateId: tenant.templateId,
        to: "metrics-later@example.test",
        personalizations: { order_id: "M-2" },
        scheduledAt: new Date(Date.now() + 120_000).toISOString(),
      });
      assertEquals(later.status, "scheduled");
      const s1 = (await scrape(stack.url)).samples;
      assertEquals(value(s1, "pp_jobs_queued", { task: "deliver_send", state: "scheduled" }), 1);
      // A job overdue by a minute that no worker takes (no worker has its task): the lag shows.
      await stack.pg.query(
        `select graphile_worker.add_job('metrics_probe', '{}'::json, run_at => now() - interval '60 seconds')`,
      );
      const s2 = (await scrape(stack.url)).samples;
      assertEquals(value(s2, "pp_jobs_queued", { task: "metrics_probe", state: "due" }), 1);
      const lag = value(s2, "pp_jobs_oldest_due_seconds", { task: "metrics_probe" });
      assert(lag >= 59 && lag < 120, `oldest due ${lag}`);
      await stack.pg.query(`select graphile_worker.permanently_fail_jobs(array(
        select id from graphile_worker.jobs where task_identifier = 'metrics_probe'), 'test over')`);
      const failed = (await scrape(stack.url)).samples;
      assertEquals(value(failed, "pp_jobs_failed", { task: "metrics_probe" }), 1);
      await stack.pg.query(`select graphile_worker.complete_jobs(array(
        select id from graphile_worker.jobs where task_identifier = 'metrics_probe'))`);
      // A task seen once stays, at 0, rather than vanishing.
      const s3 = (await scrape(stack.url)).samples;
      for (
        const [name, labels] of [
          ["pp_jobs_queued", { task: "metrics_probe", state: "due" }],
          ["pp_jobs_failed", { task: "metrics_probe" }],
          ["pp_jobs_oldest_due_seconds", { task: "metrics_probe" }],
        ] as const
      ) {
        assertEquals(sample(s3, name, labels), 0, name);
      }
    });

    await t.step("X-Request-Id: kept when sane, made when absent or not sane, on every kind of answer", async () => {
      const given = "req-01HZX8.abc:42";
      const cases: [string, RequestInit][] = [
        ["/healthz", {}],
        ["/metrics", {}], // 401
        ["/api/v1/sends", { headers: { "x-api-key": tenant.key } }],
        ["/api/v1/nothing", {}],
        ["/graphql", {
          method: "POST",
          headers: { "content-type": "application/json", "x-api-key": tenant.key },
          body: JSON.stringify({ query: "{ account { id } }" }),
        }],
        ["/graphql", { method: "POST", headers: { "content-type": "application/json" }, body: "{}" }], // 401
        ["/t/o/not-a-token.gif", {}],
      ];
      for (const [path, init] of cases) {
        const withId = await fetch(stack.url + path, {
          ...init,
          headers: { ...init.headers as Record<string, string>, "x-request-id": given },
        });
        await withId.body?.cancel();
        assertEquals(withId.headers.get("x-request-id"), given, `${path} ${withId.status}`);
        const without = await fetch(stack.url + path, init);
        await without.body?.cancel();
        assertMatch(without.headers.get("x-request-id") ?? "", UUID, `${path} made one`);
        for (const bad of ["x".repeat(129), "has space", "semi;colon", "<script>", "ünï"]) {
          const res = await fetch(stack.url + path, {
            ...init,
            headers: { ...init.headers as Record<string, string>, "x-request-id": bad },
          }).catch(() => null);
          if (!res) continue; // a header value fetch itself refuses
          await res.body?.cancel();
          const id = res.headers.get("x-request-id");
          assertNotEquals(id, bad);
          assertMatch(id ?? "", UUID);
        }
      }
    });

    await t.step("the log lines of a request carry its id (an api process's stderr)", async () => {
      const api = await spawnLogged({
        DATABASE_URL: stack.databaseUrl,
        PP_ROLE: "api",
        PP_LOG_LEVEL: "info",
        PP_DATA_DIR: await Deno.makeTempDir({ prefix: "pp-test-metrics-" }),
        PP_SECRET: stack.service.deps.secrets.secret,
        PP_METRICS_TOKEN: METRICS_TOKEN,
      });
      try {
        const before = (await scrape(api.url)).samples;
        const rest = await post(api.url, "/api/v1/sends", tenant.key, {
          templateId: tenant.templateId,
          to: "metrics-logged@example.test",
          personalizations: { order_id: "M-3" },
        }, "rest-request-1");
        assertEquals(rest.status, 202, JSON.stringify(rest.body));
        assertEquals(rest.headers.get("x-request-id"), "rest-request-1");
        const gql = await post(api.url, "/graphql", tenant.key, {
          query: `mutation($i: CreateContactInput!) { createContact(input: $i) { id } }`,
          variables: { i: { email: "metrics-contact@example.test" } },
        }, "graphql-request-1");
        assertEquals(gql.body.errors, undefined, JSON.stringify(gql.body.errors));
        assertEquals(gql.headers.get("x-request-id"), "graphql-request-1");

        const accepted = await waitFor(
          () => api.lines.find((l) => l.msg === "send accepted" && l.sendId === rest.body.id),
          5000,
          "the send's log line",
        );
        assertEquals(accepted.requestId, "rest-request-1");
        const created = await waitFor(
          () => api.lines.find((l) => l.msg === "contact created" && l.contactId === gql.body.data.createContact.id),
          5000,
          "the contact's log line",
        );
        assertEquals(created.requestId, "graphql-request-1");
        // A line of no request has no id.
        assertEquals(api.lines.find((l) => l.msg === "service started")?.requestId, undefined);

        // Each process counts what it did: the api process accepted it; delivering is the worker's.
        await waitForStatus(stack, tenant.key, rest.body.id, ["delivered"], 10_000);
        const after = (await scrape(api.url)).samples;
        assertEquals(value(after, "pp_sends_accepted_total") - value(before, "pp_sends_accepted_total"), 1);
        assertEquals(value(after, "pp_sends_finished_total", { status: "delivered" }), 0);
        assertBounded(after);
      } finally {
        await api.stop();
      }
    });

    await t.step("a worker process serves its own /metrics beside /healthz", async () => {
      const worker = await spawnWorker(stack, { PP_METRICS_TOKEN: METRICS_TOKEN });
      try {
        const refused = await fetch(`${worker.url}/metrics`);
        await refused.body?.cancel();
        assertEquals(refused.status, 401);
        const { text, samples } = await scrape(worker.url);
        assertMatch(text, /^# TYPE pp_sends_finished_total counter$/m);
        assertEquals(value(samples, "pp_sends_accepted_total"), 0);
        assertBounded(samples);
      } finally {
        worker.child.kill("SIGTERM");
        await worker.child.status;
      }
    });
  } finally {
    await stack.stop();
  }
});
