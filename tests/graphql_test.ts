/** GraphQL: schema drift, GraphiQL, ops-only mutations, error codes and masking. */
import { printSchema } from "graphql";
import { schema } from "../src/graphql/schema.ts";
import { uuidv7 } from "../src/ids.ts";
import { assert, assertEquals, assertMatch } from "./assert.ts";
import { ADMIN_TOKEN, opts, startStack } from "./helpers.ts";

Deno.test("schema.graphql is what the code prints (run `deno task schema`)", () => {
  const file = Deno.readTextFileSync(new URL("../schema.graphql", import.meta.url));
  assertEquals(file, printSchema(schema) + "\n");
});

Deno.test("uuidv7 ids sort in creation order and carry version 7", () => {
  const ids = Array.from({ length: 5000 }, () => uuidv7());
  assertEquals([...ids].sort(), ids);
  assertEquals(new Set(ids).size, ids.length);
  assert(ids.every((id) => /^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/.test(id)));
});

Deno.test("graphql: ops mutations, tenant queries, errors", opts, async (t) => {
  const stack = await startStack();
  try {
    await t.step("GET /graphql from a browser serves GraphiQL", async () => {
      const res = await fetch(`${stack.url}/graphql`, { headers: { accept: "text/html" } });
      assertEquals(res.status, 200);
      assertMatch(await res.text(), /graphiql/i);
    });

    const tenant = await stack.tenant();

    await t.step("a body over 40 MiB is refused with 413 before it is parsed", async () => {
      const res = await fetch(`${stack.url}/graphql`, {
        method: "POST",
        headers: { "content-type": "application/json", "x-api-key": tenant.key },
        body: JSON.stringify({ query: "{ __typename }", variables: { pad: "x".repeat(41 * 1024 * 1024) } }),
      });
      assertEquals(res.status, 413);
      assertEquals((await res.json()).errors[0].extensions.code, "payload_too_large");
      const ok = await stack.gql(`{ __typename }`, {}, tenant.key);
      assertEquals([ok.status, ok.body.data?.__typename], [200, "Query"]);
    });

    await t.step("ops mutations need the admin token", async () => {
      const m = `mutation { createAccount(input: { name: "x" }) { id } }`;
      const asTenant = await stack.gql(m, {}, tenant.key);
      assertEquals(asTenant.body.errors[0].extensions.code, "unauthorized");
      const anonymous = await stack.gql(m, {});
      assertEquals(anonymous.body.errors[0].extensions.code, "unauthorized");
      const wrong = await stack.gql(m, {}, "not-the-admin-token-at-all");
      assertEquals(wrong.body.errors[0].extensions.code, "unauthorized");
      assertEquals(await stack.count("select count(*) from accounts where name = 'x'"), 0, "no account was created");
    });

    await t.step("tenant queries need a key; a bad key is 401", async () => {
      const r = await stack.gql(`{ templates { id } }`, {});
      assertEquals(r.body.errors[0].extensions.code, "unauthorized");
      const bad = await stack.gql(`{ templates { id } }`, {}, "pp_live_" + "x".repeat(40));
      assertEquals(bad.status, 401);
      assertEquals(bad.body.errors[0].extensions.code, "unauthorized");
    });

    await t.step("account shows limit, usage and keys (prefix only)", async () => {
      // An account of its own: other steps send (usage) and add keys to the tenant's.
      const fresh = await stack.tenant({ domain: "account.test" });
      const r = await stack.gql(
        `{ account { id name monthlyLimit sendingEnabled usage { used limit remaining month } apiKeys { prefix mode } } }`,
        {},
        fresh.key,
      );
      const acc = r.body.data.account;
      assertEquals(acc.id, fresh.accountId);
      assertEquals(acc.usage.used, 0);
      assertEquals(acc.usage.month, new Date().toISOString().slice(0, 7));
      assertEquals(acc.apiKeys, [{ prefix: fresh.key.slice(0, 12), mode: "LIVE" }]);
      const admin = await stack.gql(
        `query($id: ID) { account(id: $id) { id } }`,
        { id: fresh.accountId },
        ADMIN_TOKEN,
      );
      assertEquals(admin.body.data.account.id, fresh.accountId);
    });

    await t.step("revokeApiKey stops the key at once", async () => {
      const { body } = await stack.gql(
        `mutation($i: CreateApiKeyInput!) { createApiKey(input: $i) { key apiKey { id prefix mode } } }`,
        { i: { accountId: tenant.accountId, mode: "TEST" } },
        ADMIN_TOKEN,
      );
      const { key, apiKey } = body.data.createApiKey;
      assertMatch(key, /^pp_test_[0-9A-Za-z]{40}$/);
      assertEquals(apiKey.prefix, key.slice(0, 12));
      assertEquals((await stack.api("GET", "/api/v1/sends", { key })).status, 200);
      const rev = await stack.gql(
        `mutation($id: ID!) { revokeApiKey(id: $id) { revokedAt } }`,
        { id: apiKey.id },
        ADMIN_TOKEN,
      );
      assert(rev.body.data.revokeApiKey.revokedAt);
      const after = await stack.api("GET", "/api/v1/sends", { key });
      assertEquals(after.status, 401);
      assertEquals(after.body.code, "unauthorized");
      // Only the hash is stored.
      assertEquals(await stack.count("select count(*) from api_keys where key_hash = $1 or prefix = $1", [key]), 0);
    });

    await t.step("templates: create, read, update; a broken template is refused", async () => {
      const c = await stack.gql(
        `mutation($i: CreateTemplateInput!) { createTemplate(input: $i) { id subject trackOpens } }`,
        { i: { name: "Reset", subject: "Reset your password", text: "Use {{ link }}", fromEmail: "a@shop.test" } },
        tenant.key,
      );
      const id = c.body.data.createTemplate.id;
      assertEquals(c.body.data.createTemplate.trackOpens, true);
      const u = await stack.gql(
        `mutation($id: ID!, $i: UpdateTemplateInput!) { updateTemplate(id: $id, input: $i) { subject text } }`,
        { id, i: { subject: "Reset it now" } },
        tenant.key,
      );
      assertEquals(u.body.data.updateTemplate, { subject: "Reset it now", text: "Use {{ link }}" });
      const broken = await stack.gql(
        `mutation($id: ID!, $i: UpdateTemplateInput!) { updateTemplate(id: $id, input: $i) { subject } }`,
        { id, i: { html: "<p>{% if %}</p>" } },
        tenant.key,
      );
      assertEquals(broken.body.errors[0].extensions.code, "validation_failed");
      assertEquals(broken.body.errors[0].extensions.errors[0].path, "html");
      const emptied = await stack.gql(
        `mutation($id: ID!, $i: UpdateTemplateInput!) { updateTemplate(id: $id, input: $i) { subject } }`,
        { id, i: { text: null } },
        tenant.key,
      );
      assertEquals(emptied.body.errors[0].extensions.code, "validation_failed");
      const read = await stack.gql(`query($id: ID!) { template(id: $id) { subject text } }`, { id }, tenant.key);
      assertEquals(read.body.data.template, { subject: "Reset it now", text: "Use {{ link }}" });
      const missing = await stack.gql(`mutation($id: ID!) { updateTemplate(id: $id, input: {}) { id } }`, {
        id: crypto.randomUUID(),
      }, tenant.key);
      assertEquals(missing.body.errors[0].extensions.code, "not_found");
    });

    await t.step("contacts: create, find by id or email (any case), duplicate refused", async () => {
      const c = await stack.gql(
        `mutation($i: CreateContactInput!) { createContact(input: $i) { id status fields } }`,
        { i: { email: "Ann@Example.test", firstName: "Ann", fields: { plan: "pro" } } },
        tenant.key,
      );
      assertEquals(c.body.data.createContact.status, "SUBSCRIBED");
      assertEquals(c.body.data.createContact.fields, { plan: "pro" });
      const byEmail = await stack.gql(`{ contact(email: "ann@example.TEST") { id firstName } }`, {}, tenant.key);
      assertEquals(byEmail.body.data.contact, { id: c.body.data.createContact.id, firstName: "Ann" });
      const dup = await stack.gql(
        `mutation { createContact(input: { email: "ANN@example.test" }) { id } }`,
        {},
        tenant.key,
      );
      assertEquals(dup.body.errors[0].extensions.code, "validation_failed");
      assertEquals(
        await stack.count("select count(*) from contacts where account_id = $1 and lower(email) = 'ann@example.test'", [
          tenant.accountId,
        ]),
        1,
        "one contact for every spelling",
      );
    });

    await t.step("a template update applies to the very next send (the send path caches templates)", async () => {
      const sendSubject = async () =>
        (await stack.gql(
          `mutation($i: CreateSendInput!) { createSend(input: $i) { subject } }`,
          { i: { templateId: tenant.templateId, to: "cache@example.test" } },
          tenant.key,
        )).body.data.createSend.subject;
      assertEquals(await sendSubject(), "Order {{ order_id }} confirmed");
      await stack.gql(
        `mutation($id: ID!, $i: UpdateTemplateInput!) { updateTemplate(id: $id, input: $i) { id } }`,
        { id: tenant.templateId, i: { subject: "Order {{ order_id }} is confirmed" } },
        tenant.key,
      );
      assertEquals(await sendSubject(), "Order {{ order_id }} is confirmed");
    });

    await t.step("domains: addDomain is pending with DNS records until ops verify it", async () => {
      const add = await stack.gql(
        `mutation { addDomain(name: "Mail.Brand.test") { id name status dnsRecords { type name value } } }`,
        {},
        tenant.key,
      );
      const d = add.body.data.addDomain;
      assertEquals(d.name, "mail.brand.test");
      assertEquals(d.status, "PENDING");
      assert(d.dnsRecords.some((r: { name: string }) => r.name === "_pigeonperch.mail.brand.test"));
      const send = () =>
        stack.api("POST", "/api/v1/sends", {
          key: tenant.key,
          body: { templateId: tenant.templateId, to: "x@example.test", from: "news@mail.brand.test" },
        });
      assertEquals((await send()).body.code, "domain_not_verified");
      const v = await stack.gql(
        `mutation($id: ID!) { markDomainVerified(id: $id) { status } }`,
        { id: d.id },
        ADMIN_TOKEN,
      );
      assertEquals(v.body.data.markDomainVerified.status, "VERIFIED");
      assertEquals((await send()).status, 202);
      const notHost = await stack.gql(`mutation { addDomain(name: "not a domain") { id } }`, {}, tenant.key);
      assertEquals(notHost.body.errors[0].extensions.code, "validation_failed");
    });

    await t.step("unexpected errors are masked, not leaked", async () => {
      // Break the database under the service (the send path caches its template for a second,
      // so its own table goes too).
      await stack.pg.query("alter table templates rename to templates_gone");
      await stack.pg.query("alter table sends rename to sends_gone");
      try {
        const r = await stack.gql(`{ templates { id } }`, {}, tenant.key);
        assertEquals(r.body.errors[0].message, "Unexpected error.");
        assertEquals(r.body.errors[0].extensions.code, "internal");
        assert(!JSON.stringify(r.body).includes("templates_gone"));
        const rest = await stack.api("POST", "/api/v1/sends", {
          key: tenant.key,
          body: { templateId: tenant.templateId, to: "y@example.test" },
        });
        assertEquals(rest.status, 500);
        assertEquals(rest.body.code, "internal");
        assert(!JSON.stringify(rest.body).includes("templates"));
        assert(!JSON.stringify(rest.body).includes("sends_gone"));
      } finally {
        await stack.pg.query("alter table sends_gone rename to sends");
        await stack.pg.query("alter table templates_gone rename to templates");
      }
    });
  } finally {
    await stack.stop();
  }
});
