/**
 * API key scopes (API.md "Message features"): a `SENDING` key sends and reads sends, batches
 * and events, and is refused everything else with 403 `forbidden`, over REST and GraphQL; a
 * key with `domains` sends only from those (and their subdomains); a `FULL` key may create
 * `SENDING` keys for its own account, nothing more; keys list their scope.
 */
import { assertEquals } from "./assert.ts";
import { ADMIN_TOKEN, assertProblem, createsNothing, opts, startStack, waitForStatus } from "./helpers.ts";

const CREATE_KEY = `mutation($i: CreateApiKeyInput!) { createApiKey(input: $i) { key apiKey { id scope domains } } }`;

Deno.test("scopes: SENDING keys send and read sends only; domains restrict the from address", opts, async (t) => {
  const stack = await startStack();
  try {
    const a = await stack.tenant();
    const b = await stack.tenant({ domain: "bshop.test" });
    // A second verified domain of A's, to send from where the restricted key may not.
    const { body: added } = await stack.gql(`mutation { addDomain(name: "other.test") { id } }`, {}, a.key);
    await stack.gql(
      `mutation($id: ID!) { markDomainVerified(id: $id) { id } }`,
      { id: added.data.addDomain.id },
      ADMIN_TOKEN,
    );
    let sending = "";

    await t.step("a FULL key creates a SENDING key for its account, restricted to shop.test", async () => {
      const r = await stack.gql(CREATE_KEY, { i: { scope: "SENDING", domains: ["Shop.test"] } }, a.key);
      assertEquals(r.body.errors, undefined, JSON.stringify(r.body));
      sending = r.body.data.createApiKey.key;
      assertEquals(r.body.data.createApiKey.apiKey.scope, "SENDING");
      assertEquals(r.body.data.createApiKey.apiKey.domains, ["shop.test"]);
      const keys = await stack.gql(`{ account { apiKeys { scope domains } } }`, {}, a.key);
      assertEquals(
        keys.body.data.account.apiKeys.map((k: { scope: string }) => k.scope).sort(),
        ["FULL", "SENDING"],
      );
    });

    await t.step("what a FULL key may not create: a FULL key, another account's, unverified domains", async () => {
      const full = await createsNothing(stack, () => stack.gql(CREATE_KEY, { i: { scope: "FULL" } }, a.key));
      assertEquals(full.body.errors[0].extensions.code, "forbidden");
      const other = await stack.gql(CREATE_KEY, { i: { accountId: b.accountId, scope: "SENDING" } }, a.key);
      assertEquals(other.body.errors[0].extensions.code, "forbidden");
      const unverified = await stack.gql(CREATE_KEY, { i: { scope: "SENDING", domains: ["bshop.test"] } }, a.key);
      assertEquals(unverified.body.errors[0].extensions.code, "validation_failed");
      assertEquals(unverified.body.errors[0].extensions.errors[0].path, "domains.0");
      const bySending = await stack.gql(CREATE_KEY, { i: { scope: "SENDING" } }, sending);
      assertEquals(bySending.body.errors[0].extensions.code, "forbidden");
    });

    await t.step("a SENDING key sends, reads, reschedules and cancels; batches too", async () => {
      const s = await stack.api("POST", "/api/v1/sends", {
        key: sending,
        body: { templateId: a.templateId, to: "ok@example.test", personalizations: { order_id: "S-1" } },
      });
      assertEquals(s.status, 202, JSON.stringify(s.body));
      await waitForStatus(stack, sending, s.body.id, ["delivered"]);
      assertEquals((await stack.api("GET", "/api/v1/sends", { key: sending })).status, 200);
      const later = await stack.api("POST", "/api/v1/sends", {
        key: sending,
        body: { templateId: a.templateId, to: "later@example.test", scheduledAt: new Date(Date.now() + 3600_000) },
      });
      const moved = await stack.api("PATCH", `/api/v1/sends/${later.body.id}`, {
        key: sending,
        body: { scheduledAt: new Date(Date.now() + 7200_000).toISOString() },
      });
      assertEquals(moved.status, 200);
      assertEquals((await stack.api("POST", `/api/v1/sends/${later.body.id}/cancel`, { key: sending })).status, 200);
      const batch = await stack.api("POST", "/api/v1/sends/batch", {
        key: sending,
        body: { templateId: a.templateId, recipients: [{ to: "b1@example.test" }] },
      });
      assertEquals(batch.status, 202);
      assertEquals((await stack.api("GET", `/api/v1/batches/${batch.body.batchId}`, { key: sending })).status, 200);
      const events = await stack.gql(
        `query($id: ID!) { events(sendId: $id) { nodes { type } } }`,
        { id: s.body.id },
        sending,
      );
      assertEquals(events.body.errors, undefined, JSON.stringify(events.body));
    });

    await t.step("everything else is 403 forbidden for it, over REST and GraphQL, and creates nothing", async () => {
      for (
        const [method, path, body] of [
          ["GET", "/api/v1/templates", undefined],
          ["POST", "/api/v1/templates", { name: "x", subject: "s", text: "t" }],
          ["POST", `/api/v1/templates/${a.templateId}/render`, {}],
          ["GET", "/api/v1/webhooks", undefined],
          ["POST", "/api/v1/webhooks", { url: "https://hooks.example.test/x" }],
        ] as const
      ) {
        const r = await createsNothing(stack, () => stack.api(method, path, { key: sending, body }));
        assertProblem(r, 403, "forbidden");
      }
      for (
        const q of [
          `{ account { id } }`,
          `{ templates { id } }`,
          `{ contacts { nodes { id } } }`,
          `mutation { addDomain(name: "new.test") { id } }`,
          `mutation { createContact(input: { email: "c@example.test" }) { id } }`,
        ]
      ) {
        const r = await createsNothing(stack, () => stack.gql(q, {}, sending));
        assertEquals(r.body.errors?.[0]?.extensions?.code, "forbidden", `${q}: ${JSON.stringify(r.body)}`);
      }
    });

    await t.step("its domains: a subdomain is fine, another verified domain is 403 forbidden", async () => {
      const sub = await stack.api("POST", "/api/v1/sends", {
        key: sending,
        body: { templateId: a.templateId, to: "sub@example.test", from: "Shop <news@mail.shop.test>" },
      });
      assertEquals(sub.status, 202, JSON.stringify(sub.body));
      const elsewhere = await createsNothing(stack, () =>
        stack.api("POST", "/api/v1/sends", {
          key: sending,
          body: { templateId: a.templateId, to: "x@example.test", from: "orders@other.test" },
        }));
      assertProblem(elsewhere, 403, "forbidden");
      // The FULL key of the same account may.
      const full = await stack.api("POST", "/api/v1/sends", {
        key: a.key,
        body: { templateId: a.templateId, to: "x@example.test", from: "orders@other.test" },
      });
      assertEquals(full.status, 202);
    });

    await t.step("ops create SENDING keys for any account", async () => {
      const r = await stack.gql(CREATE_KEY, { i: { accountId: b.accountId, scope: "SENDING" } }, ADMIN_TOKEN);
      assertEquals(r.body.data.createApiKey.apiKey, {
        id: r.body.data.createApiKey.apiKey.id,
        scope: "SENDING",
        domains: null,
      });
      const noAccount = await stack.gql(CREATE_KEY, { i: { scope: "SENDING" } }, ADMIN_TOKEN);
      assertEquals(noAccount.body.errors[0].extensions.code, "validation_failed");
    });
  } finally {
    await stack.stop();
  }
});
