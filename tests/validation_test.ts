/**
 * Every bad input of the REST shim and of GraphQL, as a caller sees it: the status, a
 * problem+json body with API.md's `code` (and `errors[].path`), or GraphQL's
 * `extensions.code` — and the promise that a failed request creates nothing: no send, no
 * contact, no event, no job, no quota used.
 */
import { assert, assertEquals, assertMatch, assertNotEquals } from "./assert.ts";
import {
  ADMIN_TOKEN,
  assertPaths,
  assertProblem,
  createsNothing,
  type JsonResponse,
  opts,
  settle,
  type Snapshot,
  snapshot,
  type Stack,
  startStack,
  type TestTenant,
  waitForStatus,
} from "./helpers.ts";

/** Runs `fn` and returns how each count moved. */
async function delta(stack: Stack, fn: () => Promise<unknown>): Promise<Partial<Snapshot>> {
  await settle(stack);
  const before = await snapshot(stack);
  await fn();
  const after = await snapshot(stack);
  const d: Record<string, number> = {};
  for (const k of Object.keys(before) as (keyof Snapshot)[]) {
    if (after[k] !== before[k]) d[k] = after[k] - before[k];
  }
  return d;
}

/** Asserts a GraphQL error with `extensions.code` and no data for the field. */
function assertGqlError(r: JsonResponse, field: string, code: string, path?: string) {
  const show = JSON.stringify(r.body);
  assert(Array.isArray(r.body.errors) && r.body.errors.length > 0, show);
  assertEquals(r.body.errors[0].extensions?.code, code, show);
  assertEquals(r.body.data?.[field] ?? null, null, show);
  if (path) assertPaths(r.body.errors[0].extensions.errors, [path], show);
}

const CREATE_SEND = `mutation($i: CreateSendInput!) { createSend(input: $i) { id status } }`;
const uuid = () => crypto.randomUUID();
const FUTURE = "2099-04-14T08:00:00+02:00";

Deno.test("validation: every bad input is refused as API.md says, and creates nothing", opts, async (t) => {
  const stack = await startStack();
  try {
    const a = await stack.tenant();
    const b = await stack.tenant({ domain: "bshop.test" });
    const body = (patch: Record<string, unknown> = {}) => ({
      templateId: a.templateId,
      to: "alice@example.com",
      ...patch,
    });
    const post = (tn: TestTenant, payload: unknown) =>
      stack.api("POST", "/api/v1/sends", { key: tn.key, body: payload });
    /** A POST /api/v1/sends that must fail with `code` (and `path`) and create nothing. */
    const refuse = async (tn: TestTenant, payload: unknown, status: number, code: string, path?: string | string[]) =>
      assertProblem(await createsNothing(stack, () => post(tn, payload)), status, code, path);
    const gqlRefuse = async (query: string, vars: Record<string, unknown>, token: string | undefined, code: string) => {
      const field = query.match(/\{\s*(\w+)\(/)![1];
      const r = await createsNothing(stack, () => stack.gql(query, vars, token));
      assertGqlError(r, field, code);
      return r;
    };

    await t.step("control: a good send is 202 and moves every counted table, so snapshots see writes", async () => {
      // Scheduled, so that its job stays in the table instead of running at once (within
      // the scheduling horizon, or it would wait without a job: see delivery_test.ts).
      const d = await delta(stack, async () => {
        const r = await post(a, body({ scheduledAt: new Date(Date.now() + 300_000).toISOString() }));
        assertEquals(r.status, 202, JSON.stringify(r.body));
        assertEquals(r.body.status, "scheduled");
      });
      assertEquals(d, { sends: 1, contacts: 1, events: 1, jobs: 1, usageRows: 1, usageUsed: 1 });
    });

    await t.step("Authorization: Bearer <key> works like X-API-Key", async () => {
      const r = await stack.api("POST", "/api/v1/sends", {
        body: body({ to: "bearer@example.com" }),
        headers: { authorization: `Bearer ${a.key}` },
      });
      assertEquals(r.status, 202, JSON.stringify(r.body));
      const g = await stack.api("GET", "/api/v1/sends?limit=1", { headers: { authorization: `Bearer ${a.key}` } });
      assertEquals(g.status, 200);
    });

    await t.step("400 invalid_json: a body that is not JSON", async () => {
      for (const raw of ["{not json", "", '{"templateId": "x",}']) {
        const r = await createsNothing(
          stack,
          () =>
            stack.api("POST", "/api/v1/sends", { key: a.key, raw, headers: { "content-type": "application/json" } }),
        );
        assertProblem(r, 400, "invalid_json");
      }
    });

    await t.step("401 unauthorized: no key, unknown key, malformed key, the admin token", async () => {
      const unknown = "pp_live_" + "aB3".repeat(13) + "x";
      assertEquals(unknown.length, 8 + 40);
      const cases: Record<string, string>[] = [
        {},
        { "x-api-key": unknown },
        { authorization: `Bearer ${unknown}` },
        { "x-api-key": "pp_test_" + "Z".repeat(40) },
        { "x-api-key": "pp_live_short" },
        { "x-api-key": "not-a-key" },
        { "x-api-key": `pp_live_${"a".repeat(39)}!` },
        { authorization: "Basic dXNlcjpwYXNz" },
        { "x-api-key": ADMIN_TOKEN },
      ];
      for (const headers of cases) {
        const r = await createsNothing(stack, () => stack.api("POST", "/api/v1/sends", { body: body(), headers }));
        assertProblem(r, 401, "unauthorized");
        assertProblem(await stack.api("GET", "/api/v1/sends", { headers }), 401, "unauthorized");
      }
    });

    await t.step("401 unauthorized: a revoked key stops working at once", async () => {
      const { data } = (await stack.gql(
        `mutation($i: CreateApiKeyInput!) { createApiKey(input: $i) { key apiKey { id } } }`,
        { i: { accountId: a.accountId, mode: "LIVE" } },
        ADMIN_TOKEN,
      )).body;
      const key: string = data.createApiKey.key;
      assertEquals((await stack.api("GET", "/api/v1/sends", { key })).status, 200);
      const rv = await stack.gql(`mutation($id: ID!) { revokeApiKey(id: $id) { id revokedAt } }`, {
        id: data.createApiKey.apiKey.id,
      }, ADMIN_TOKEN);
      assert(rv.body.data?.revokeApiKey?.revokedAt, JSON.stringify(rv.body));
      const r = await createsNothing(stack, () => stack.api("POST", "/api/v1/sends", { key, body: body() }));
      assertProblem(r, 401, "unauthorized");
      assertProblem(await stack.api("GET", "/api/v1/sends", { key }), 401, "unauthorized");
      assertGqlError(await stack.gql(CREATE_SEND, { i: body() }, key), "createSend", "unauthorized");
      assertEquals((await stack.api("GET", "/api/v1/sends", { key: a.key })).status, 200, "other keys still work");
    });

    // b's send is scheduled, so a foreign cancel that ignored the account would really cancel it.
    const bSend = await post(b, { templateId: b.templateId, to: "bob@example.com", scheduledAt: FUTURE });
    assertEquals(bSend.status, 202, JSON.stringify(bSend.body));
    assertEquals(bSend.body.status, "scheduled");

    await t.step("404 not_found: unknown, malformed and foreign send ids", async () => {
      const unknown = await stack.api("GET", `/api/v1/sends/${uuid()}`, { key: a.key });
      assertProblem(unknown, 404, "not_found");
      assertProblem(await stack.api("GET", "/api/v1/sends/not-a-uuid", { key: a.key }), 404, "not_found");
      const foreign = await stack.api("GET", `/api/v1/sends/${bSend.body.id}`, { key: a.key });
      assertProblem(foreign, 404, "not_found");
      assertEquals(foreign.body, unknown.body, "a foreign id answers exactly as an unknown one");
      assertEquals((await stack.api("GET", `/api/v1/sends/${bSend.body.id}`, { key: b.key })).status, 200);
      assertProblem(await stack.api("GET", "/api/v1/nothing-here", { key: a.key }), 404, "not_found");
    });

    await t.step("405 on a known path with the wrong method is problem+json with Allow", async () => {
      const r = await createsNothing(stack, () => stack.api("DELETE", "/api/v1/sends", { key: a.key }));
      assertEquals(r.status, 405);
      assertEquals(r.headers.get("content-type")?.split(";")[0], "application/problem+json", JSON.stringify(r.body));
      assertEquals(r.body.status, 405);
      assertMatch(r.headers.get("allow") ?? "", /POST/);
    });

    await t.step("404 not_found: cancel of unknown, malformed and foreign ids changes nothing", async () => {
      const cancel = (id: string) =>
        createsNothing(stack, () => stack.api("POST", `/api/v1/sends/${id}/cancel`, { key: a.key }));
      const unknown = await cancel(uuid());
      assertProblem(unknown, 404, "not_found");
      assertProblem(await cancel("not-a-uuid"), 404, "not_found");
      const foreign = await cancel(bSend.body.id);
      assertProblem(foreign, 404, "not_found");
      assertEquals(foreign.body, unknown.body, "a foreign id answers exactly as an unknown one");
      const still = await stack.api("GET", `/api/v1/sends/${bSend.body.id}`, { key: b.key });
      assertEquals(still.body.status, "scheduled", "another tenant cannot cancel b's send");
      const g = await stack.gql(`query($id: ID!) { send(id: $id) { id } }`, { id: bSend.body.id }, a.key);
      assertEquals(g.body.data?.send, null, "GraphQL hides foreign sends too");
    });

    await t.step("409 not_cancellable: a delivered send, and a cancelled one twice", async () => {
      const sent = await post(a, body({ to: "delivered@example.com" }));
      assertEquals(sent.status, 202);
      await waitForStatus(stack, a.key, sent.body.id, ["delivered"]);
      const r = await createsNothing(
        stack,
        () => stack.api("POST", `/api/v1/sends/${sent.body.id}/cancel`, { key: a.key }),
      );
      assertProblem(r, 409, "not_cancellable");
      assertEquals((await stack.api("GET", `/api/v1/sends/${sent.body.id}`, { key: a.key })).body.status, "delivered");

      const later = await post(a, body({ to: "later@example.com", scheduledAt: FUTURE }));
      assertEquals(later.body.status, "scheduled", JSON.stringify(later.body));
      const first = await stack.api("POST", `/api/v1/sends/${later.body.id}/cancel`, { key: a.key });
      assertEquals(first.status, 200, JSON.stringify(first.body));
      assertEquals(first.body.status, "cancelled");
      const again = await createsNothing(
        stack,
        () => stack.api("POST", `/api/v1/sends/${later.body.id}/cancel`, { key: a.key }),
      );
      assertProblem(again, 409, "not_cancellable");
      const gq = await createsNothing(
        stack,
        () => stack.gql(`mutation($id: ID!) { cancelSend(id: $id) { id } }`, { id: later.body.id }, a.key),
      );
      assertGqlError(gq, "cancelSend", "not_cancellable");
    });

    await t.step("422 validation_failed names the bad field", async (s) => {
      const big = { pad: "x".repeat(64 * 1024 - 10 + 1) }; // {"pad":"…"} is 1 byte over 64 KB
      const cases: [string, Record<string, unknown>, string][] = [
        ["missing templateId", { templateId: undefined }, "templateId"],
        ["templateId not a uuid", { templateId: "tmpl_123" }, "templateId"],
        ["templateId not a string", { templateId: 42 }, "templateId"],
        ["missing to", { to: undefined }, "to"],
        ["empty to", { to: "" }, "to"],
        ["to neither email nor uuid", { to: "alice at example.com" }, "to"],
        ["to with a display name", { to: "Alice <alice@example.com>" }, "to"],
        ["subject with CRLF", { subject: "Hi\r\nBcc: x@evil.test" }, "subject"],
        ["subject with LF", { subject: "Hi\nthere" }, "subject"],
        ["subject with CR", { subject: "Hi\rthere" }, "subject"],
        ["from with CRLF injection", { from: "a@shop.test\r\nBcc: x@evil.test" }, "from"],
        ["from name with CRLF", { from: "Shop\r\nBcc: x@evil.test <a@shop.test>" }, "from"],
        ["from not an address", { from: "the shop" }, "from"],
        ["from name without address", { from: "Shop <not-an-address>" }, "from"],
        ["replyTo not an email", { replyTo: "support" }, "replyTo"],
        ["replyTo with LF", { replyTo: "a@shop.test\nBcc: x@evil.test" }, "replyTo"],
        ["scheduledAt without offset", { scheduledAt: "2026-04-14T08:00:00" }, "scheduledAt"],
        ["scheduledAt garbage", { scheduledAt: "next tuesday" }, "scheduledAt"],
        ["scheduledAt a number", { scheduledAt: 1776153600000 }, "scheduledAt"],
        ["tags not a map", { tags: "vip" }, "tags"],
        ["tags an array", { tags: ["vip"] }, "tags"],
        ["tags with a non-string value", { tags: { tier: 1 } }, "tags.tier"],
        ["trackOpens not boolean", { trackOpens: "yes" }, "trackOpens"],
        ["trackClicks not boolean", { trackClicks: 1 }, "trackClicks"],
        ["personalizations a string", { personalizations: "order 1" }, "personalizations"],
        ["personalizations an array", { personalizations: [1, 2] }, "personalizations"],
        ["personalizations over 64 KB", { personalizations: big }, "personalizations"],
        ["subject that does not compile", { subject: "{% if %}" }, "subject"],
        ["subject over 998 characters", { subject: "x".repeat(999) }, "subject"],
        ["more than 50 tags", { tags: Object.fromEntries([...Array(51).keys()].map((i) => [`t${i}`, "v"])) }, "tags"],
        ["to longer than 254", { to: `${"a".repeat(250)}@example.com` }, "to"],
        // Postgres cannot store NUL (text) or \u0000 and lone surrogates (jsonb): 422, never a 500.
        ["to with NUL", { to: "a\u0000b@example.com" }, "to"],
        ["to with a control character", { to: "a\u0007b@example.com" }, "to"],
        ["subject with NUL", { subject: "Hi\u0000there" }, "subject"],
        ["from name with NUL", { from: "Sh\u0000op <a@shop.test>" }, "from"],
        ["replyTo with NUL", { replyTo: "a\u0000b@shop.test" }, "replyTo"],
        ["tags value with NUL", { tags: { k: "v\u0000" } }, "tags.k"],
        ["personalizations value with NUL", { personalizations: { x: "a\u0000b" } }, "personalizations"],
        ["personalizations key with NUL", { personalizations: { "a\u0000": 1 } }, "personalizations"],
        ["personalizations with a lone surrogate", { personalizations: { s: "\ud800" } }, "personalizations"],
      ];
      for (const [name, patch, path] of cases) {
        await s.step(name, async () => await refuse(a, body(patch), 422, "validation_failed", path));
      }
    });

    await t.step("422 validation_failed names every bad field at once; a non-object body is 422", async () => {
      await refuse(a, { templateId: "x", to: "y", trackOpens: "z" }, 422, "validation_failed", [
        "templateId",
        "to",
        "trackOpens",
      ]);
      for (const payload of [[], "send", 42, null]) await refuse(a, payload, 422, "validation_failed");
    });

    await t.step("personalizations of exactly 64 KB are accepted", async () => {
      const p = { pad: "x".repeat(64 * 1024 - 10) };
      assertEquals(new TextEncoder().encode(JSON.stringify(p)).length, 64 * 1024);
      const r = await post(a, body({ to: "big@example.com", personalizations: p }));
      assertEquals(r.status, 202, JSON.stringify(r.body).slice(0, 500));
      const off = await post(a, body({ to: "offset@example.com", scheduledAt: FUTURE }));
      assertEquals(off.status, 202, JSON.stringify(off.body));
      assertEquals(off.body.scheduledAt, "2099-04-14T06:00:00.000Z");
    });

    await t.step("422 validation_failed naming every unknown field (a typo never mails without its data)", async () => {
      await refuse(
        a,
        body({ personalisations: { order_id: "O-1" }, bogus: { deep: 1 } }),
        422,
        "validation_failed",
        ["personalisations", "bogus"],
      );
      const batch = await createsNothing(stack, () =>
        stack.api("POST", "/api/v1/sends/batch", {
          key: a.key,
          body: {
            templateId: a.templateId,
            recipients: [{ to: "r0@example.com" }, { to: "r1@example.com", perso: {} }],
          },
        }));
      assertProblem(batch, 422, "validation_failed", "recipients.1.perso");
      const contact = await createsNothing(stack, () =>
        stack.gql(
          `mutation($i: CreateContactInput!) { createContact(input: $i) { id } }`,
          { i: { email: "c@example.com", firstname: "Al" } },
          a.key,
        ));
      assertGqlError(contact, "createContact", "validation_failed", "i.firstname");
      // GraphQL: the same code and path, whether the input is a variable or inline.
      const vars = await createsNothing(
        stack,
        () =>
          stack.gql(CREATE_SEND, { i: { templateId: a.templateId, to: "g@example.com", personalisations: {} } }, a.key),
      );
      assertGqlError(vars, "createSend", "validation_failed", "i.personalisations");
      const inline = await createsNothing(stack, () =>
        stack.gql(
          `mutation { createSend(input: { templateId: "${a.templateId}", to: "g@example.com", bogus: 1 }) { id } }`,
          {},
          a.key,
        ));
      assertGqlError(inline, "createSend", "validation_failed", "bogus");
    });

    await t.step("422 template_not_found: unknown and foreign template ids", async () => {
      await refuse(a, body({ templateId: uuid() }), 422, "template_not_found");
      await refuse(a, body({ templateId: b.templateId }), 422, "template_not_found");
    });

    await t.step("422 contact_not_found: unknown and foreign contact ids", async () => {
      await refuse(a, body({ to: uuid() }), 422, "contact_not_found");
      await refuse(a, body({ to: bSend.body.contactId }), 422, "contact_not_found");
    });

    await t.step(
      "422 domain_not_verified: never added, pending, foreign, look-alike; a subdomain is fine",
      async () => {
        const add = await stack.gql(`mutation($n: String!) { addDomain(name: $n) { id status } }`, {
          n: "pending.test",
        }, a.key);
        assertEquals(add.body.data?.addDomain?.status, "PENDING", JSON.stringify(add.body));
        for (const from of ["x@never.test", "Shop <x@pending.test>", "x@bshop.test", "x@evilshop.test"]) {
          await refuse(a, body({ from }), 422, "domain_not_verified");
        }
        const sub = await post(a, body({ to: "sub@example.com", from: "News <news@news.shop.test>" }));
        assertEquals(sub.status, 202, JSON.stringify(sub.body));
        assertEquals(sub.body.from, "News <news@news.shop.test>");
      },
    );

    await t.step("403 sending_paused while ops pause the account; 202 again once resumed", async () => {
      const p = await stack.tenant();
      const setSending = (enabled: boolean) =>
        stack.gql(
          `mutation($a: ID!, $e: Boolean!) { setAccountSending(accountId: $a, enabled: $e) { id } }`,
          { a: p.accountId, e: enabled },
          ADMIN_TOKEN,
        );
      assertEquals((await setSending(false)).body.data?.setAccountSending?.id, p.accountId);
      await refuse(p, { templateId: p.templateId, to: "paused@example.com" }, 403, "sending_paused");
      await gqlRefuse(
        CREATE_SEND,
        { i: { templateId: p.templateId, to: "paused@example.com" } },
        p.key,
        "sending_paused",
      );
      assertEquals((await setSending(true)).body.data?.setAccountSending?.id, p.accountId);
      const r = await post(p, { templateId: p.templateId, to: "paused@example.com" });
      assertEquals(r.status, 202, JSON.stringify(r.body));
    });

    await t.step("429 quota_exceeded at the monthly limit; a cancelled send gives its unit back", async () => {
      const q = await stack.tenant({ monthlyLimit: 2 });
      const qb = (to: string, more: Record<string, unknown> = {}) => ({ templateId: q.templateId, to, ...more });
      const first = await post(q, qb("q1@example.com", { scheduledAt: FUTURE }));
      assertEquals(first.status, 202, JSON.stringify(first.body));
      assertEquals((await post(q, qb("q2@example.com"))).status, 202);
      await refuse(q, qb("q3@example.com"), 429, "quota_exceeded");
      await refuse(q, qb("q1@example.com"), 429, "quota_exceeded");
      await gqlRefuse(CREATE_SEND, { i: qb("q3@example.com") }, q.key, "quota_exceeded");
      const c = await stack.api("POST", `/api/v1/sends/${first.body.id}/cancel`, { key: q.key });
      assertEquals(c.status, 200, JSON.stringify(c.body));
      assertEquals((await post(q, qb("q4@example.com"))).status, 202, "the cancelled unit is free again");
      await refuse(q, qb("q5@example.com"), 429, "quota_exceeded");
      const acc = await stack.gql(`{ account { usage { used limit } } }`, {}, q.key);
      assertEquals(acc.body.data?.account?.usage, { used: 2, limit: 2 }, JSON.stringify(acc.body));
    });

    await t.step("GET /api/v1/sends: bad limit, cursor, status and batchId are 422", async () => {
      const list = (qs: string) => stack.api("GET", `/api/v1/sends?${qs}`, { key: a.key });
      const forged = btoa(JSON.stringify(["yesterday", "not-a-uuid"]));
      const cases: [string, string][] = [
        ["limit=0", "limit"],
        ["limit=101", "limit"],
        ["limit=-1", "limit"],
        ["limit=ten", "limit"],
        ["limit=1.5", "limit"],
        ["cursor=garbage!!", "cursor"],
        [`cursor=${encodeURIComponent(forged)}`, "cursor"],
        ["status=lost", "status"],
        ["batchId=batch-1", "batchId"],
      ];
      for (const [qs, path] of cases) assertProblem(await list(qs), 422, "validation_failed", path);
      const page = await list("limit=1");
      assertEquals(page.status, 200);
      assertEquals(page.body.data.length, 1);
      assert(page.body.nextCursor, "there is a second page");
      const next = await list(`limit=100&cursor=${encodeURIComponent(page.body.nextCursor)}`);
      assertEquals(next.status, 200, JSON.stringify(next.body));
      assertNotEquals(next.body.data[0]?.id, page.body.data[0].id);
      assertEquals((await list("limit=100")).status, 200);
      const g = await stack.gql(`{ sends(first: 1, after: "garbage!!") { edges { node { id } } } }`, {}, a.key);
      assertGqlError(g, "sends", "validation_failed", "cursor");
    });

    await t.step("GraphQL createSend answers the REST codes", async (s) => {
      const cases: [string, Record<string, unknown>, string, string?][] = [
        ["to not an address", body({ to: "nope" }), "validation_failed", "to"],
        ["subject with CRLF", body({ subject: "Hi\r\nBcc: x@evil.test" }), "validation_failed", "subject"],
        ["from with CRLF", body({ from: "a@shop.test\r\nBcc: x@evil.test" }), "validation_failed", "from"],
        ["personalizations a string", body({ personalizations: "x" }), "validation_failed", "personalizations"],
        ["tags not a string map", body({ tags: { a: 1 } }), "validation_failed", "tags.a"],
        ["unknown template", body({ templateId: uuid() }), "template_not_found"],
        ["foreign template", body({ templateId: b.templateId }), "template_not_found"],
        ["unknown contact", body({ to: uuid() }), "contact_not_found"],
        ["unverified domain", body({ from: "x@never.test" }), "domain_not_verified"],
        ["subject with NUL", body({ subject: "Hi\u0000" }), "validation_failed", "subject"],
      ];
      for (const [name, input, code, path] of cases) {
        await s.step(name, async () => {
          const r = await createsNothing(stack, () => stack.gql(CREATE_SEND, { i: input }, a.key));
          assertGqlError(r, "createSend", code, path);
        });
      }
    });

    await t.step("GraphQL unauthorized: no key, unknown key, and ops mutations with a tenant key", async () => {
      await gqlRefuse(CREATE_SEND, { i: body() }, undefined, "unauthorized");
      await gqlRefuse(CREATE_SEND, { i: body() }, "pp_live_" + "Q".repeat(40), "unauthorized");
      await gqlRefuse(
        `mutation($i: CreateAccountInput!) { createAccount(input: $i) { id } }`,
        { i: { name: "Sneaky", monthlyLimit: null } },
        a.key,
        "unauthorized",
      );
      await gqlRefuse(
        `mutation($i: CreateApiKeyInput!) { createApiKey(input: $i) { key } }`,
        { i: { accountId: a.accountId, mode: "LIVE" } },
        a.key,
        // A tenant's key may create SENDING keys only (tests/scopes_test.ts): a FULL one is forbidden.
        "forbidden",
      );
      const pending = await stack.gql(`{ domains { id name status } }`, {}, a.key);
      const dom = pending.body.data.domains.find((d: { name: string }) => d.name === "pending.test");
      await gqlRefuse(
        `mutation($id: ID!) { markDomainVerified(id: $id) { id } }`,
        { id: dom.id },
        a.key,
        "unauthorized",
      );
      await gqlRefuse(
        `mutation($a: ID!) { setAccountSending(accountId: $a, enabled: true) { id } }`,
        { a: a.accountId },
        a.key,
        "unauthorized",
      );
      await gqlRefuse(`mutation($id: ID!) { revokeApiKey(id: $id) { id } }`, { id: b.apiKeyId }, a.key, "unauthorized");
      assertEquals(
        await stack.count("select count(*) from api_keys where revoked_at is not null and id = $1", [b.apiKeyId]),
        0,
      );
      assertEquals(await stack.count("select count(*) from domains where id = $1 and status = 'pending'", [dom.id]), 1);
    });

    await t.step("GraphQL createTemplate and createContact refuse bad fields and create nothing", async (s) => {
      const tpl = { name: "Bad", subject: "Hi", html: "<p>x</p>", fromEmail: "a@shop.test" };
      const mk = `mutation($i: CreateTemplateInput!) { createTemplate(input: $i) { id } }`;
      const mc = `mutation($i: CreateContactInput!) { createContact(input: $i) { id } }`;
      const cases: [string, string, string, Record<string, unknown>, string][] = [
        [
          "template fromName with CRLF",
          mk,
          "createTemplate",
          { ...tpl, fromName: "Shop\r\nBcc: x@evil.test" },
          "fromName",
        ],
        ["template fromName with LF", mk, "createTemplate", { ...tpl, fromName: "Shop\nX" }, "fromName"],
        ["template subject with LF", mk, "createTemplate", { ...tpl, subject: "Hi\nBcc: x@evil.test" }, "subject"],
        ["template fromEmail not an email", mk, "createTemplate", { ...tpl, fromEmail: "nope" }, "fromEmail"],
        ["template html does not compile", mk, "createTemplate", { ...tpl, html: "{% if %}" }, "html"],
        ["contact email not an email", mc, "createContact", { email: "not-an-email" }, "email"],
        ["contact email empty", mc, "createContact", { email: "" }, "email"],
        ["contact email without a dot domain", mc, "createContact", { email: "a@b" }, "email"],
        ["contact email with a display name", mc, "createContact", { email: "Alice <alice@example.com>" }, "email"],
        ["contact email with LF", mc, "createContact", { email: "a@example.com\nBcc: x" }, "email"],
        ["contact email with NUL", mc, "createContact", { email: "a\u0000@example.com" }, "email"],
        [
          "contact fields with NUL",
          mc,
          "createContact",
          { email: "nul@example.com", fields: { p: "\u0000" } },
          "fields",
        ],
      ];
      for (const [name, query, field, i, path] of cases) {
        await s.step(name, async () => {
          const r = await createsNothing(stack, () => stack.gql(query, { i }, a.key));
          assertGqlError(r, field, "validation_failed", path);
        });
      }
      const ok = await stack.gql(mc, { i: { email: "fine@example.com" } }, a.key);
      assert(ok.body.data?.createContact?.id, JSON.stringify(ok.body));
    });
  } finally {
    await stack.stop();
  }
});
