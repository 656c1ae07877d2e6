/**
 * Hostile requests to the HTTP edge (issue 11, points 2 and 3): GraphQL without a credential,
 * alias, depth, token, directive and cost bombs, aliased mutations against the rate limit,
 * and endless chunked bodies to every route that reads one. Each is answered fast, creates
 * nothing, and `/healthz` keeps answering within a second meanwhile.
 */
import { assert, assertEquals, assertMatch } from "./assert.ts";
import {
  ADMIN_TOKEN,
  createsNothing,
  INBOUND,
  opts,
  postSigned,
  type Stack,
  startStack,
  waitFor,
  whileHealthy,
} from "./helpers.ts";

/** POSTs `body` to /graphql and times the answer. */
async function gqlTimed(stack: Stack, query: string, key?: string, variables: Record<string, unknown> = {}) {
  const headers: Record<string, string> = { "content-type": "application/json" };
  if (key) headers["x-api-key"] = key;
  const t0 = performance.now();
  const res = await fetch(`${stack.url}/graphql`, {
    method: "POST",
    headers,
    body: JSON.stringify({ query, variables }),
  });
  const body = await res.json();
  return { status: res.status, headers: res.headers, body, ms: performance.now() - t0 };
}

/** `n` aliases of one selection: `{ a0: domains { id } a1: … }`. */
const aliasBomb = (n: number) => `{ ${Array.from({ length: n }, (_, i) => `a${i}: domains { id }`).join(" ")} }`;

Deno.test("graphql: 401 before parsing, 400 query_too_complex for every limit, fast", opts, async (t) => {
  // 100 aliased fields run 100 queries at once: the default pool (110) outgrows the test server's
  // max_connections (100).
  const stack = await startStack({ env: { PP_DB_POOL_SIZE: "20" } });
  try {
    const tenant = await stack.tenant();

    await t.step("GraphiQL still loads without a key; any operation without one is 401", async () => {
      const page = await fetch(`${stack.url}/graphql`, { headers: { accept: "text/html" } });
      assertEquals(page.status, 200);
      assertMatch(await page.text(), /graphiql/i);
      const post = await gqlTimed(stack, "{ __typename }");
      assertEquals([post.status, post.body.errors[0].extensions.code], [401, "unauthorized"]);
      const get = await fetch(`${stack.url}/graphql?query=${encodeURIComponent("{ __typename }")}`);
      assertEquals([get.status, (await get.json()).errors[0].extensions.code], [401, "unauthorized"]);
      // Not even a syntax error is looked at.
      const broken = await gqlTimed(stack, "{ not graphql");
      assertEquals([broken.status, broken.body.errors[0].extensions.code], [401, "unauthorized"]);
      const admin = await gqlTimed(stack, "{ __schema { queryType { name } } }", ADMIN_TOKEN);
      assertEquals(admin.body.data.__schema.queryType.name, "Query");
    });

    await t.step("an alias bomb (30,000 aliases, 0.6 MB): 401 without a key, 400 with one, each fast", async () => {
      const bomb = aliasBomb(30_000);
      assert(bomb.length > 600_000, "the document is 0.6 MB");
      await whileHealthy(stack, async () => {
        const anonymous = await gqlTimed(stack, bomb);
        assertEquals([anonymous.status, anonymous.body.errors[0].extensions.code], [401, "unauthorized"]);
        assert(anonymous.ms < 500, `401 took ${Math.round(anonymous.ms)} ms`);
        for (let i = 0; i < 3; i++) {
          const keyed = await gqlTimed(stack, bomb + " ".repeat(i), tenant.key);
          assertEquals([keyed.status, keyed.body.errors[0].extensions.code], [400, "query_too_complex"]);
          assert(keyed.ms < 500, `400 took ${Math.round(keyed.ms)} ms`);
        }
      });
      // Under the token limit but over the alias limit: refused in validation, before execute.
      const aliases = await gqlTimed(stack, aliasBomb(101), tenant.key);
      assertEquals([aliases.status, aliases.body.errors[0].extensions.code], [400, "query_too_complex"]);
      assertMatch(aliases.body.errors[0].message, /Aliases limit of 100/);
      assert(!("data" in aliases.body) || aliases.body.data === undefined, "nothing ran");
      const ok = await gqlTimed(stack, aliasBomb(100), tenant.key);
      assertEquals(ok.status, 200);
      assertEquals(ok.body.errors, undefined);
      assertEquals(ok.body.data.a99, ok.body.data.a0);
      assertEquals(ok.body.data.a0.length, 1);
    });

    await t.step("a deep query, a token bomb, a directive bomb: 400 query_too_complex", async () => {
      const deep = `{ ${"... on Query { ".repeat(12)}__typename${" }".repeat(12)} }`;
      const d = await gqlTimed(stack, deep, tenant.key);
      assertEquals([d.status, d.body.errors[0].extensions.code], [400, "query_too_complex"]);
      assertMatch(d.body.errors[0].message, /depth/i);

      const tokens = await gqlTimed(stack, `{ domains { ${"id ".repeat(5000)}} }`, tenant.key);
      assertEquals([tokens.status, tokens.body.errors[0].extensions.code], [400, "query_too_complex"]);
      assertMatch(tokens.body.errors[0].message, /Token limit/);

      const directives = await gqlTimed(stack, `{ __typename ${"@include(if: true) ".repeat(60)}}`, tenant.key);
      assertEquals([directives.status, directives.body.errors[0].extensions.code], [400, "query_too_complex"]);
      assertMatch(directives.body.errors[0].message, /Directives limit/);
    });

    await t.step("a cost bomb of nested `first: 100` lists: 400; the same document with small pages runs", async () => {
      const query =
        `query($n: Int, $m: Int) { contacts(first: $n) { nodes { email events(first: $m) { type data } } } }`;
      // The small one first: the refusal must not depend on a cached verdict for the document.
      const small = await gqlTimed(stack, query, tenant.key, { n: 5, m: 5 });
      assertEquals(small.status, 200);
      assertEquals(small.body.data.contacts.nodes, []);
      const bomb = await gqlTimed(stack, query, tenant.key, { n: 100, m: 100 });
      assertEquals([bomb.status, bomb.body.errors[0].extensions.code], [400, "query_too_complex"]);
      assertMatch(bomb.body.errors[0].message, /cost of \d+ exceeds the limit of 10000/);
      const inline = await gqlTimed(
        stack,
        `{ contacts(first: 100) { edges { node { events(first: 100) { type } } } } }`,
        tenant.key,
      );
      assertEquals([inline.status, inline.body.errors[0].extensions.code], [400, "query_too_complex"]);
      // A full page of sends with their events is well inside the limit.
      const page = await gqlTimed(
        stack,
        `{ sends(first: 100) { edges { cursor node { id status to subject events { type occurredAt data } } } pageInfo { hasNextPage } } }`,
        tenant.key,
      );
      assertEquals(page.status, 200);
    });
  } finally {
    await stack.stop();
  }
});

Deno.test("graphql: the rate limit takes one token per root field", opts, async (t) => {
  const stack = await startStack({ env: { PP_RATE_LIMIT: "1:100" } });
  try {
    const tenant = await stack.tenant();
    /** A fresh key of the tenant's account: a full bucket of 100 tokens. */
    const freshKey = async () =>
      (await stack.gql(
        `mutation($i: CreateApiKeyInput!) { createApiKey(input: $i) { key } }`,
        { i: { accountId: tenant.accountId, mode: "LIVE" } },
        ADMIN_TOKEN,
      )).body.data.createApiKey.key as string;
    const sends = (n: number) =>
      `mutation($i: CreateSendInput!) { ${
        Array.from({ length: n }, (_, i) => `s${i}: createSend(input: $i) { id }`).join(" ")
      } }`;
    const input = { i: { templateId: tenant.templateId, to: "aliased@example.test" } };

    await t.step("100 aliased createSends take 100 tokens: the next request is refused", async () => {
      const key = await freshKey();
      const t0 = performance.now();
      const r = await gqlTimed(stack, sends(100), key, input);
      assertEquals(r.status, 200, JSON.stringify(r.body.errors));
      assertEquals(Object.keys(r.body.data).length, 100);
      assertEquals(await stack.count("select count(*) from sends"), 100);
      // At 1 token per second, fewer than 5 tokens can have come back since.
      const next = await gqlTimed(
        stack,
        `{ a: __typename b: __typename c: __typename d: __typename e: __typename }`,
        key,
      );
      assert(performance.now() - t0 < 4000, "the check ran within 4 s");
      assertEquals([next.status, next.body.errors[0].extensions.code], [429, "rate_limited"]);
      assertEquals(next.headers.get("ratelimit-limit"), "1");
      assert(Number(next.headers.get("retry-after")) >= 1);
    });

    await t.step("100 aliased createSends with 99 tokens left: 429, nothing created", async () => {
      const key = await freshKey();
      assertEquals((await gqlTimed(stack, `{ __typename }`, key)).status, 200);
      await createsNothing(stack, async () => {
        const r = await gqlTimed(stack, sends(100), key, input);
        assertEquals([r.status, r.body.errors[0].extensions.code], [429, "rate_limited"]);
        assertMatch(r.body.errors[0].message, /100 root fields/);
        assertEquals(r.body.data, undefined);
      });
    });
  } finally {
    await stack.stop();
  }
});

/** An endless chunked body: `total` bytes made lazily, 64 KiB at a time; `pulled` counts what was read. */
function endlessBody(prefix: string, total = 300 * 1024 * 1024) {
  const state = { pulled: 0 };
  const first = new TextEncoder().encode(prefix);
  const stream = new ReadableStream<Uint8Array>({
    pull(controller) {
      if (state.pulled >= total) return controller.close();
      const chunk = state.pulled === 0 ? first : new Uint8Array(64 * 1024).fill(0x78);
      state.pulled += chunk.byteLength;
      controller.enqueue(chunk);
    },
  });
  return { stream, state };
}

Deno.test("body limits: a chunked 300 MB body is cut off at each route's limit", opts, async (t) => {
  const stack = await startStack({ env: { PP_INBOUND_SECRET: INBOUND.secret } });
  try {
    const tenant = await stack.tenant();
    // A delivered send gives a real unsubscribe token.
    const sent = await stack.api("POST", "/api/v1/sends", {
      key: tenant.key,
      body: { templateId: tenant.templateId, to: "reader@example.test" },
    });
    assertEquals(sent.status, 202);
    const mail = await waitFor(() => stack.sink.messages.find((m) => m.to.includes("reader@example.test")));
    const unsubToken = mail!.raw.match(/\/u\/([A-Za-z0-9_-]{20,})>/)![1];

    /** Streams 300 MB to `path`; asserts a 413 long before the end, and returns the answer's body. */
    const chunked = async (path: string, headers: Record<string, string>, prefix: string) => {
      const { stream, state } = endlessBody(prefix);
      const t0 = performance.now();
      const res = await fetch(`${stack.url}${path}`, { method: "POST", headers, body: stream });
      const text = await res.text();
      const ms = performance.now() - t0;
      assertEquals(res.status, 413, `${path}: ${text.slice(0, 200)}`);
      // The largest limit is 40 MiB (a send with 25 MB of files): cut off within a few chunks of it.
      assert(state.pulled < 48 * 1024 * 1024, `${path}: ${state.pulled} bytes were pulled before the 413`);
      assert(ms < 5000, `${path}: the 413 took ${Math.round(ms)} ms`);
      return { contentType: res.headers.get("content-type"), body: JSON.parse(text) };
    };
    const problem = (r: { contentType: string | null; body: Record<string, unknown> }) => {
      assertEquals(r.contentType, "application/problem+json");
      assertEquals([r.body.status, r.body.code], [413, "payload_too_large"]);
    };
    const json = { "content-type": "application/json" };

    await t.step("/graphql: the GraphQL-shaped 413", async () => {
      await whileHealthy(stack, () =>
        createsNothing(stack, async () => {
          const r = await chunked("/graphql", { ...json, "x-api-key": tenant.key }, `{"query":"{ __typename }","v":"`);
          assertEquals(r.body.errors[0].extensions.code, "payload_too_large");
        }));
    });

    await t.step("/api/v1/sends and /api/v1/sends/batch: problem+json 413, nothing created", async () => {
      await whileHealthy(stack, () =>
        createsNothing(stack, async () => {
          const prefix = `{"templateId":"${tenant.templateId}","to":"x@example.test","personalizations":{"p":"`;
          problem(await chunked("/api/v1/sends", { ...json, "x-api-key": tenant.key }, prefix));
          problem(
            await chunked("/api/v1/sends", { ...json, "x-api-key": tenant.key, "idempotency-key": "big-1" }, prefix),
          );
          problem(await chunked("/api/v1/sends/batch", { ...json, "x-api-key": tenant.key }, prefix));
        }));
      // The idempotency key was not used up by the refused request.
      assertEquals(await stack.count("select count(*) from sends"), 1);
    });

    await t.step("/api/v1/events/inbound: 413 before the signature is checked", async () => {
      await whileHealthy(stack, () =>
        createsNothing(stack, async () => {
          problem(
            await chunked("/api/v1/events/inbound", { ...json, "x-pp-signature": "t=1,v1=00" }, `{"events":[`),
          );
        }));
      // The route itself still works: a signed small body is read and checked as before.
      const ok = await postSigned(stack, "/api/v1/events/inbound", {
        events: [{ type: "bounced", sendId: sent.body.id }],
      });
      assertEquals(ok.status, 202, JSON.stringify(ok.body));
    });

    await t.step("/u/<token> POST: 413, not unsubscribed", async () => {
      await whileHealthy(stack, () =>
        createsNothing(stack, async () => {
          problem(
            await chunked(
              `/u/${unsubToken}`,
              { "content-type": "application/x-www-form-urlencoded" },
              "List-Unsubscribe=One-Click&pad=",
            ),
          );
        }));
      assertEquals(await stack.count("select count(*) from email_events where type = 'unsubscribed'"), 0);
      assertEquals(await stack.count("select count(*) from contacts where status = 'unsubscribed'"), 0);
    });

    await t.step("a declared Content-Length over the limit is refused without reading", async () => {
      const res = await fetch(`${stack.url}/api/v1/sends`, {
        method: "POST",
        headers: { ...json, "x-api-key": tenant.key },
        body: JSON.stringify({
          templateId: tenant.templateId,
          to: "y@example.test",
          pad: "x".repeat(41 * 1024 * 1024),
        }),
      });
      const body = await res.json();
      assertEquals([res.status, body.code], [413, "payload_too_large"]);
    });

    await t.step("a full batch (1,000 recipients, 1 KB of personalizations each) fits", async () => {
      const later = new Date(Date.now() + 3600_000).toISOString();
      const recipients = Array.from({ length: 1000 }, (_, i) => ({
        to: `r${i}@example.test`,
        personalizations: { order_id: `O-${i}`, note: "n".repeat(1000) },
      }));
      const r = await stack.api("POST", "/api/v1/sends/batch", {
        key: tenant.key,
        body: { templateId: tenant.templateId, scheduledAt: later, recipients },
      });
      assertEquals(r.status, 202, JSON.stringify(r.body).slice(0, 300));
      assertEquals(r.body.count, 1000);
    });
  } finally {
    await stack.stop();
  }
});
