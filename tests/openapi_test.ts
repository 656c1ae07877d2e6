/**
 * `GET /api/v1/openapi.json` and `GET /docs`, as a caller sees them. The document is checked
 * with an OpenAPI 3.1 validator (npm `@seriousme/openapi-schema-validator`), against ROUTES
 * (every route, with its doc, its path and parameters), and against the service's real answers:
 * every REST call below goes through tests/openapi_check.ts, which fails on a status the
 * document does not list for the operation, or a body or header that does not match its
 * schema (ajv, JSON Schema 2020-12). In the end every route's successful answer must have been
 * checked, and the problem answers 400, 401, 403, 404, 405, 409, 413, 422 and 429 too.
 * `/docs` is checked to load everything from this origin, under a Content-Security-Policy.
 */
import { Validator } from "@seriousme/openapi-schema-validator";
import { ERROR_STATUS } from "../src/errors.ts";
import { openApiPath } from "../src/rest/openapi.ts";
import { ROUTES } from "../src/rest/router.ts";
import { throws } from "node:assert/strict";
import { assert, assertEquals, assertMatch } from "./assert.ts";
import {
  ADMIN_TOKEN,
  assertProblem,
  gql,
  type JsonResponse,
  opts,
  type Stack,
  startStack,
  type TestTenant,
  waitForStatus,
} from "./helpers.ts";
import { type OpenApiChecker, openApiChecker } from "./openapi_check.ts";

// deno-lint-ignore no-explicit-any
type Json = any;
type Call = (
  method: string,
  path: string,
  o?: { key?: string; body?: unknown; raw?: string; headers?: Record<string, string> },
) => Promise<JsonResponse>;

const HOUR_AHEAD = () => new Date(Date.now() + 3600_000).toISOString();
const UUID = () => crypto.randomUUID();

/** A stack whose `call` checks every answer against its openapi.json. */
async function checkedStack(): Promise<{ stack: Stack; checker: OpenApiChecker; call: Call }> {
  // Webhook endpoints on this machine (the endpoints below are never sent to: no sends of theirs).
  const stack = await startStack({ env: { PP_WEBHOOK_ALLOW_PRIVATE: "true" } });
  try {
    const checker = await openApiChecker(stack.url);
    const call: Call = async (method, path, o) => {
      const r = await stack.api(method, path, o);
      checker.check(method, path, r);
      return r;
    };
    return { stack, checker, call };
  } catch (err) {
    await stack.stop();
    throw err;
  }
}

const sendTo = (tn: TestTenant, to: string, extra: Record<string, unknown> = {}) => ({
  templateId: tn.templateId,
  to,
  personalizations: { order_id: "A-1" },
  ...extra,
});

/** A send and a one-recipient batch of `tn` to `to`: both refused with `status` and `code`. */
async function bothRefused(call: Call, tn: TestTenant, to: string, status: number, code: string) {
  assertProblem(await call("POST", "/api/v1/sends", { key: tn.key, body: sendTo(tn, to) }), status, code);
  const batch = { templateId: tn.templateId, recipients: [{ to }] };
  assertProblem(await call("POST", "/api/v1/sends/batch", { key: tn.key, body: batch }), status, code);
}

Deno.test("openapi.json: OpenAPI 3.1 of every route, and the real answers match it", opts, async (t) => {
  const { stack, checker, call } = await checkedStack();
  try {
    await t.step("served without a key, valid OpenAPI 3.1, the same text each time", async () => {
      const res = await fetch(`${stack.url}/api/v1/openapi.json`);
      assertEquals(res.status, 200);
      assertEquals(res.headers.get("content-type"), "application/json");
      const text = await res.text();
      assertEquals(await (await fetch(`${stack.url}/api/v1/openapi.json`)).text(), text);
      const doc = JSON.parse(text);
      assertMatch(doc.openapi, /^3\.1\.\d+$/);
      const verdict = await new Validator().validate(doc);
      assert(verdict.valid, JSON.stringify(verdict.errors));
      const post = await call("POST", "/api/v1/openapi.json");
      assertProblem(post, 405, "method_not_allowed");
      assertEquals(post.headers.get("allow"), "GET, HEAD");
    });

    await t.step("every ROUTES entry has a doc and is in it, with its path parameters", () => {
      const doc = checker.doc;
      const undocumented = ROUTES.filter((r) => !r.doc).map((r) => `${r.method} ${openApiPath(r.pattern).path}`);
      assertEquals(undocumented, [], "every route in src/rest/router.ts needs a `doc`");
      const expected = new Set(["/api/v1/openapi.json"]);
      for (const route of ROUTES) {
        const { path, params } = openApiPath(route.pattern);
        expected.add(path);
        const op = doc.paths[path]?.[route.method.toLowerCase()];
        assert(op, `${route.method} ${path} is not in openapi.json`);
        // The written path is the route's: with its parameters filled in, the route matches it.
        assert(route.pattern.test(path.replace(/\{\w+\}/g, UUID())), `${path} is not ${route.pattern}`);
        const inPath = (op.parameters ?? []).filter((p: Json) => p.in === "path").map((p: Json) => p.name);
        assertEquals(inPath, params, `${route.method} ${path}: path parameters`);
        assert(op.summary && op.tags?.length === 1, `${route.method} ${path}: summary and tag`);
        assert(op.security === undefined, `${route.method} ${path}: needs the key (global security)`);
        const codes = Object.entries<Json>(op.responses).flatMap(([status, r]) => {
          const schema = r.content?.["application/problem+json"]?.schema;
          if (!schema) return [];
          const codes: string[] = schema.allOf[1].properties.code.enum;
          for (const c of codes) assertEquals(ERROR_STATUS[c as keyof typeof ERROR_STATUS], Number(status), c);
          return codes;
        });
        for (const c of ["unauthorized", "rate_limited", "unavailable"]) {
          assert(codes.includes(c), `${route.method} ${path} answers ${c}`);
        }
        if (route.idempotent) {
          assert(codes.includes("idempotency_conflict"), `${route.method} ${path}: idempotency_conflict`);
          assert(op.parameters.some((p: Json) => p.in === "header" && p.name === "Idempotency-Key"));
        }
        if (params.length) assert(codes.includes("not_found"), `${route.method} ${path}: not_found`);
      }
      assertEquals(Object.keys(doc.paths).sort(), [...expected].sort());
      assertEquals(doc.paths["/api/v1/openapi.json"].get.security, [], "the document needs no key");
      const send = doc.paths["/api/v1/sends"].post;
      assert(send.requestBody.content["application/json"].schema, "POST /api/v1/sends has its body");
      const query = doc.paths["/api/v1/sends"].get.parameters.map((p: Json) => p.name).sort();
      assertEquals(query, ["batchId", "cursor", "limit", "status"]);
      // The problem schema names every code of errors.ts.
      assertEquals(doc.components.schemas.Problem.properties.code.enum.sort(), Object.keys(ERROR_STATUS).sort());
    });

    await t.step("the check refuses an answer that drifted from the document", async () => {
      const a = await stack.tenant();
      const ok = await call("POST", "/api/v1/sends", { key: a.key, body: sendTo(a, "drift@example.org") });
      const drifted = (body: unknown, status = ok.status) => () =>
        checker.check("POST", "/api/v1/sends", { status, headers: ok.headers, body });
      throws(drifted({ ...ok.body, surprise: 1 }), /must NOT have additional properties/);
      throws(drifted({ ...ok.body, createdAt: 1 }), /createdAt/);
      throws(drifted({ ...ok.body, status: "lost" }), /\/status/);
      throws(drifted(ok.body, 201), /status not documented/);
      const problem = await call("GET", "/api/v1/sends?status=lost", { key: a.key });
      throws(
        () => checker.check("GET", "/api/v1/sends", { ...problem, body: { ...problem.body, code: "not_found" } }),
        /code/,
      );
    });

    await t.step("sends: accepted, replayed, read, listed, cancelled; 404, 409 and 422 on the way", async () => {
      const a = await stack.tenant();
      const body = sendTo(a, "ada@example.org");
      const first = await call("POST", "/api/v1/sends", { key: a.key, body, headers: { "idempotency-key": "k-1" } });
      assertEquals(first.status, 202, JSON.stringify(first.body));
      const again = await call("POST", "/api/v1/sends", { key: a.key, body, headers: { "idempotency-key": "k-1" } });
      assertEquals(again.headers.get("idempotent-replayed"), "true");
      const other = { ...body, to: "bob@example.org" };
      assertProblem(
        await call("POST", "/api/v1/sends", { key: a.key, body: other, headers: { "idempotency-key": "k-1" } }),
        409,
        "idempotency_conflict",
      );
      assertProblem(
        await call("POST", "/api/v1/sends", {
          key: a.key,
          body: other,
          headers: { "idempotency-key": "k".repeat(300) },
        }),
        422,
        "validation_failed",
      );
      // Delivered: the times and the events are filled in.
      await waitForStatus(stack, a.key, first.body.id, ["delivered"]);
      const read = await call("GET", `/api/v1/sends/${first.body.id}`, { key: a.key });
      assertEquals(read.status, 200);
      assert(read.body.events.length >= 2 && read.body.deliveredAt, JSON.stringify(read.body));

      const later = await call("POST", "/api/v1/sends", {
        key: a.key,
        body: sendTo(a, "cy@example.org", { scheduledAt: HOUR_AHEAD() }),
      });
      assertEquals(later.body.status, "scheduled");
      const cancelled = await call("POST", `/api/v1/sends/${later.body.id}/cancel`, { key: a.key });
      assertEquals(cancelled.body.status, "cancelled");
      assertProblem(
        await call("POST", `/api/v1/sends/${later.body.id}/cancel`, { key: a.key }),
        409,
        "not_cancellable",
      );

      const page = await call("GET", "/api/v1/sends?limit=1", { key: a.key });
      assertEquals(page.body.data.length, 1);
      assert(page.body.nextCursor, "a next page");
      const next = await call("GET", `/api/v1/sends?limit=1&cursor=${page.body.nextCursor}`, { key: a.key });
      assertEquals(next.status, 200);
      assertEquals((await call("GET", "/api/v1/sends?status=cancelled", { key: a.key })).body.data.length, 1);
      assertProblem(await call("GET", "/api/v1/sends?status=lost", { key: a.key }), 422, "validation_failed", "status");
      assertProblem(await call("GET", "/api/v1/sends?cursor=nope", { key: a.key }), 422, "validation_failed", "cursor");
      assertProblem(await call("GET", `/api/v1/sends/${UUID()}`, { key: a.key }), 404, "not_found");
      assertProblem(await call("GET", "/api/v1/sends/not-a-uuid", { key: a.key }), 404, "not_found");
      assertProblem(await call("POST", `/api/v1/sends/${UUID()}/cancel`, { key: a.key }), 404, "not_found");
    });

    await t.step("batches and segment sends: accepted, read, cancelled; 404 and 422", async () => {
      const a = await stack.tenant();
      const recipients = ["b1@example.org", "b2@example.org", "b3@example.org"].map((to) => ({ to }));
      const batch = await call("POST", "/api/v1/sends/batch", {
        key: a.key,
        body: { templateId: a.templateId, recipients, scheduledAt: HOUR_AHEAD() },
        headers: { "idempotency-key": "batch-1" },
      });
      assertEquals(batch.status, 202, JSON.stringify(batch.body));
      assertEquals(batch.body.count, 3);
      const read = await call("GET", `/api/v1/batches/${batch.body.batchId}`, { key: a.key });
      assertEquals(read.body.counts, { scheduled: 3 });
      const inBatch = await call("GET", `/api/v1/sends?batchId=${batch.body.batchId}`, { key: a.key });
      assertEquals(inBatch.body.data.length, 3);
      const moved = await call("PATCH", `/api/v1/batches/${batch.body.batchId}`, {
        key: a.key,
        body: { scheduledAt: HOUR_AHEAD() },
      });
      assertEquals(moved.body.rescheduled, 3);
      const one = await call("PATCH", `/api/v1/sends/${batch.body.sends[0].id}`, {
        key: a.key,
        body: { scheduledAt: HOUR_AHEAD() },
      });
      assertEquals(one.body.status, "scheduled");
      const cancelled = await call("POST", `/api/v1/batches/${batch.body.batchId}/cancel`, { key: a.key });
      assertEquals(cancelled.body.cancelled, 3);
      assertProblem(
        await call("PATCH", `/api/v1/sends/${batch.body.sends[0].id}`, {
          key: a.key,
          body: { scheduledAt: HOUR_AHEAD() },
        }),
        409,
        "not_reschedulable",
      );

      await gql(stack, a.key, `mutation { createContact(input: {email: "member@example.org"}) { id } }`);
      const { createSegment } = await gql(
        stack,
        a.key,
        `mutation { createSegment(input: {name: "all", rules: [{field: "email", op: CONTAINS, value: "member@"}]}) { id } }`,
      );
      const seg = await call("POST", "/api/v1/sends", {
        key: a.key,
        body: { templateId: a.templateId, segmentId: createSegment.id },
      });
      assertEquals(seg.status, 202, JSON.stringify(seg.body));
      assertEquals(seg.body.status, "queued");
      assertEquals((await call("GET", `/api/v1/batches/${seg.body.batchId}`, { key: a.key })).status, 200);

      assertProblem(await call("GET", `/api/v1/batches/${UUID()}`, { key: a.key }), 404, "not_found");
      assertProblem(await call("POST", `/api/v1/batches/${UUID()}/cancel`, { key: a.key }), 404, "not_found");
      const tooMany = Array.from({ length: 1001 }, (_, i) => ({ to: `r${i}@example.org` }));
      assertProblem(
        await call("POST", "/api/v1/sends/batch", {
          key: a.key,
          body: { templateId: a.templateId, recipients: tooMany },
        }),
        422,
        "batch_too_large",
      );
      assertProblem(
        await call("POST", "/api/v1/sends/batch", {
          key: a.key,
          body: { templateId: a.templateId, recipients: [{ to: "ok@example.org" }, { to: "not an address" }] },
        }),
        422,
        "validation_failed",
        "recipients.1.to",
      );
    });

    await t.step("webhook endpoints: created with a secret, listed, read, changed, deleted; 404 and 422", async () => {
      const w = await stack.tenant();
      const body = { url: "http://127.0.0.1:9/hook", eventTypes: ["email.delivered"], description: "orders" };
      const created = await call("POST", "/api/v1/webhooks", { key: w.key, body });
      assertEquals(created.status, 201, JSON.stringify(created.body));
      assertMatch(created.body.secret, /^whsec_/);
      const id = created.body.id;
      assertEquals((await call("GET", "/api/v1/webhooks", { key: w.key })).body.data.length, 1);
      assertEquals((await call("GET", `/api/v1/webhooks/${id}`, { key: w.key })).body.eventTypes, ["email.delivered"]);
      const changed = await call("PATCH", `/api/v1/webhooks/${id}`, { key: w.key, body: { eventTypes: [] } });
      assertEquals(changed.body.eventTypes, []);
      const bad = { url: "ftp://example.test/x" };
      assertProblem(await call("PATCH", `/api/v1/webhooks/${id}`, { key: w.key, body: bad }), 422, "validation_failed");
      assertProblem(await call("POST", "/api/v1/webhooks", { key: w.key, body: bad }), 422, "validation_failed");
      assertEquals((await call("DELETE", `/api/v1/webhooks/${id}`, { key: w.key })).status, 204);
      assertProblem(await call("DELETE", `/api/v1/webhooks/${id}`, { key: w.key }), 404, "not_found");
      assertProblem(await call("GET", `/api/v1/webhooks/${id}`, { key: w.key }), 404, "not_found");
    });

    await t.step("templates: created, listed, read, changed, rendered, deleted; 404 and 422", async () => {
      const w = await stack.tenant();
      const body = { name: "Receipt", subject: "Receipt {{ n }}", html: "<p>{{ n }}</p>" };
      const created = await call("POST", "/api/v1/templates", { key: w.key, body });
      assertEquals(created.status, 201, JSON.stringify(created.body));
      const id = created.body.id;
      assertEquals((await call("GET", "/api/v1/templates", { key: w.key })).body.data.length, 2);
      assertEquals((await call("GET", `/api/v1/templates/${id}`, { key: w.key })).body.name, "Receipt");
      const changed = await call("PATCH", `/api/v1/templates/${id}`, { key: w.key, body: { text: "{{ n }}" } });
      assertEquals(changed.body.text, "{{ n }}");
      const rendered = await call("POST", `/api/v1/templates/${id}/render`, {
        key: w.key,
        body: { to: "r@example.org", personalizations: { n: 7 } },
      });
      assertEquals([rendered.body.subject, rendered.body.text], ["Receipt 7", "7"]);
      assertProblem(
        await call("POST", `/api/v1/templates/${id}/render`, { key: w.key, body: { to: UUID() } }),
        422,
        "contact_not_found",
      );
      assertProblem(
        await call("POST", "/api/v1/templates", { key: w.key, body: { name: "x" } }),
        422,
        "validation_failed",
      );
      assertEquals((await call("DELETE", `/api/v1/templates/${id}`, { key: w.key })).status, 204);
      assertProblem(await call("GET", `/api/v1/templates/${id}`, { key: w.key }), 404, "not_found");
      assertProblem(await call("POST", `/api/v1/templates/${id}/render`, { key: w.key, body: {} }), 404, "not_found");
    });

    await t.step("stats: a range of days, and a 422", async () => {
      const w = await stack.tenant();
      const r = await call("GET", "/api/v1/stats?from=2026-01-01&to=2026-01-03&interval=day", { key: w.key });
      assertEquals(r.body.data.length, 3);
      assertProblem(
        await call("GET", "/api/v1/stats?from=2026-01-05&to=2026-01-01", { key: w.key }),
        422,
        "validation_failed",
      );
    });

    await t.step("request problems: 400, 401, 404 and 405 without a route, 413, and each 422", async () => {
      const a = await stack.tenant();
      assertProblem(await call("GET", "/api/v1/sends"), 401, "unauthorized");
      assertProblem(
        await call("GET", "/api/v1/sends", { key: "pp_live_unknown0000000000000000000000000" }),
        401,
        "unauthorized",
      );
      const raw = (text: string) => ({ key: a.key, raw: text, headers: { "content-type": "application/json" } });
      assertProblem(await call("POST", "/api/v1/sends", raw("{")), 400, "invalid_json");
      const huge = JSON.stringify(
        sendTo(a, "big@example.org", { personalizations: { x: "a".repeat(41 * 1024 * 1024) } }),
      );
      assertProblem(await call("POST", "/api/v1/sends", raw(huge)), 413, "payload_too_large");
      assertProblem(await call("POST", "/api/v1/sends/batch", raw("[1,")), 400, "invalid_json");
      assertProblem(await call("POST", "/api/v1/sends", { key: a.key, body: {} }), 422, "validation_failed");
      const post = (body: unknown) => call("POST", "/api/v1/sends", { key: a.key, body });
      assertProblem(await post(sendTo(a, "x@example.org", { templateId: UUID() })), 422, "template_not_found");
      assertProblem(await post(sendTo(a, "x@example.org", { from: "x@elsewhere.test" })), 422, "domain_not_verified");
      assertProblem(await post(sendTo(a, UUID())), 422, "contact_not_found");
      assertProblem(await post({ templateId: a.templateId, segmentId: UUID() }), 422, "segment_not_found");
      assertProblem(await call("GET", "/api/v1/nothing-here", { key: a.key }), 404, "not_found");
      assertProblem(await call("DELETE", "/api/v1/sends", { key: a.key }), 405, "method_not_allowed");
    });

    await t.step("403 sending_paused, 429 quota_exceeded and rate_limited", async () => {
      const paused = await stack.tenant();
      await gql(
        stack,
        ADMIN_TOKEN,
        `mutation($id: ID!) { setAccountSending(accountId: $id, enabled: false) { id } }`,
        { id: paused.accountId },
      );
      await bothRefused(call, paused, "p@example.org", 403, "sending_paused");

      const small = await stack.tenant({ monthlyLimit: 1 });
      assertEquals(
        (await call("POST", "/api/v1/sends", { key: small.key, body: sendTo(small, "q1@example.org") })).status,
        202,
      );
      await bothRefused(call, small, "q2@example.org", 429, "quota_exceeded");

      // The default limit is 100 per second with a burst of 200: 240 at once pass it.
      const busy = await stack.tenant();
      const answers = await Promise.all(
        Array.from(
          { length: 240 },
          (_, i) =>
            call(i % 2 ? "GET" : "POST", "/api/v1/sends", i % 2 ? { key: busy.key } : { key: busy.key, body: {} }),
        ),
      );
      const limited = answers.filter((r) => r.status === 429);
      assert(limited.length > 0, "some were rate limited");
      for (const r of limited) assertProblem(r, 429, "rate_limited");
      assert(limited.every((r) => r.headers.get("retry-after")), "Retry-After on each");
    });

    // Every route's successful answer, and each kind of problem, was checked against the document.
    const missing = ROUTES.flatMap((r) => {
      const { path } = openApiPath(r.pattern);
      return Object.keys(r.doc?.responses ?? {}).map((status) => `${r.method} ${path} ${status}`);
    }).filter((k) => !checker.seen.has(k));
    assertEquals(missing, [], "answers never checked here: add a call above for each");
    const statuses = new Set([...checker.seen].map((k) => Number(k.split(" ").pop())));
    for (const s of [400, 401, 403, 404, 409, 413, 422, 429]) assert(statuses.has(s), `a ${s} was checked`);
  } finally {
    await stack.stop();
  }
});

Deno.test("/docs: the reference page and its assets, all from this origin, under a CSP", opts, async (t) => {
  const stack = await startStack();
  try {
    await t.step("the page names only same-origin assets, each served with its type", async () => {
      const res = await fetch(`${stack.url}/docs`);
      assertEquals(res.status, 200);
      assertMatch(res.headers.get("content-type") ?? "", /^text\/html/);
      const csp = res.headers.get("content-security-policy") ?? "";
      for (const d of ["default-src 'none'", "script-src 'self'", "connect-src 'self'", "font-src 'self'"]) {
        assert(csp.includes(d), `CSP has ${d}: ${csp}`);
      }
      assert(!/https?:|\/\/[a-z]|data:|blob:|\*/i.test(csp), `CSP names no other origin, data: or blob:: ${csp}`);
      const html = await res.text();
      assert(!/<script>/.test(html) && !/ on\w+=/.test(html), "no inline script");
      const urls = [...html.matchAll(/(?:src|href)="([^"]+)"/g)].map((m) => m[1]);
      assert(urls.length >= 3, html);
      const types: Record<string, RegExp> = { js: /^text\/javascript/, css: /^text\/css/, png: /^image\/png/ };
      for (const u of urls) {
        assert(u.startsWith("/docs/assets/"), `same origin: ${u}`);
        const asset = await fetch(stack.url + u);
        assertEquals(asset.status, 200, u);
        assertMatch(asset.headers.get("content-type") ?? "", types[u.split(".").pop()!], u);
        assertMatch(asset.headers.get("cache-control") ?? "", /immutable/, u);
        const text = await asset.text();
        if (u.endsWith(".css")) {
          assert(!/@import|data:/.test(text), `${u} imports nothing and has no data: URL`);
          // Each picture of the style sheet is a file beside it.
          const pictures = [...text.matchAll(/url\("([^"]+)"\)/g)].map((m) => new URL(m[1], stack.url + u));
          assert(pictures.length > 0, "the style sheet's pictures");
          for (const p of pictures) {
            assertEquals(p.origin, new URL(stack.url).origin, p.href);
            const picture = await fetch(p);
            assertEquals(picture.status, 200, p.href);
            assertMatch(picture.headers.get("content-type") ?? "", /^image\/(svg\+xml|png|jpeg)$/, p.href);
            await picture.body?.cancel();
          }
          assert(![...text.matchAll(/url\(\s*([^)]*)\)/g)].some((m) => /^["']?(https?:)?\/\//.test(m[1])), u);
        }
        if (u.endsWith(".js")) assert(!/fonts\.(googleapis|gstatic)\.com/.test(text), `${u} loads no web fonts`);
      }
      const init = await (await fetch(stack.url + urls.find((u) => u.endsWith("/init.js"))!)).text();
      assert(init.includes('"/api/v1/openapi.json"') && init.includes("validatorUrl: null"), init);
    });

    await t.step("HEAD answers, other methods 405, unknown assets 404", async () => {
      const head = await fetch(`${stack.url}/docs`, { method: "HEAD" });
      assertEquals(head.status, 200);
      assertEquals(await head.text(), "");
      const post = await stack.api("POST", "/docs");
      assertProblem(post, 405, "method_not_allowed");
      assertProblem(await stack.api("GET", "/docs/assets/0.0.0/swagger-ui.css"), 404, "not_found");
      assertProblem(await stack.api("GET", "/docs/nothing"), 404, "not_found");
    });
  } finally {
    await stack.stop();
  }
});
