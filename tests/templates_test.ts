/**
 * Templates over REST (API.md "Message features"): create, list, read, change and delete,
 * and the preview (`POST /api/v1/templates/:id/render`, GraphQL `renderTemplate`) through
 * the same sandbox as delivery — contact fields, personalizations, missingVariables — which
 * sends and creates nothing.
 */
import { assert, assertEquals, assertMatch } from "./assert.ts";
import { assertProblem, createsNothing, opts, startStack, waitForStatus } from "./helpers.ts";

Deno.test("templates: REST create, list, read, change, delete; a deleted one cannot be sent", opts, async (t) => {
  const stack = await startStack();
  try {
    const a = await stack.tenant();
    const b = await stack.tenant({ domain: "bshop.test" });
    let id = "";

    await t.step("POST 201 with the GraphQL fields; GET one and the list; PATCH changes one field", async () => {
      const created = await stack.api("POST", "/api/v1/templates", {
        key: a.key,
        body: {
          name: "Shipping",
          subject: "Order {{ order_id }} shipped",
          text: "Tracking: {{ url }}",
          fromEmail: "orders@shop.test",
        },
      });
      assertEquals(created.status, 201, JSON.stringify(created.body));
      id = created.body.id;
      assertEquals(created.body.html, null);
      assertEquals(created.body.trackOpens, true);
      const one = await stack.api("GET", `/api/v1/templates/${id}`, { key: a.key });
      assertEquals(one.body, created.body);
      const list = await stack.api("GET", "/api/v1/templates", { key: a.key });
      assertEquals(list.body.data.map((x: { id: string }) => x.id), [id, a.templateId]);
      const patched = await stack.api("PATCH", `/api/v1/templates/${id}`, {
        key: a.key,
        body: { fromName: "The Shop" },
      });
      assertEquals(patched.status, 200);
      assertEquals([patched.body.fromName, patched.body.subject], ["The Shop", "Order {{ order_id }} shipped"]);
    });

    await t.step("422 naming the field for a template that does not compile or lacks html and text", async () => {
      const broken = await createsNothing(
        stack,
        () =>
          stack.api("POST", "/api/v1/templates", { key: a.key, body: { name: "x", subject: "ok", html: "{% if %}" } }),
      );
      assertProblem(broken, 422, "validation_failed", "html");
      const empty = await createsNothing(
        stack,
        () => stack.api("POST", "/api/v1/templates", { key: a.key, body: { name: "x", subject: "ok" } }),
      );
      assertProblem(empty, 422, "validation_failed", "html");
    });

    await t.step("another account's template is 404 for every method", async () => {
      for (const [method, path] of [["GET", ""], ["PATCH", ""], ["DELETE", ""], ["POST", "/render"]]) {
        const body = method === "GET" ? undefined : {};
        const r = await stack.api(method, `/api/v1/templates/${id}${path}`, { key: b.key, body });
        assertProblem(r, 404, "not_found");
      }
    });

    await t.step("DELETE 204: gone from reads; new sends refused; a send accepted before still goes out", async () => {
      const before = await stack.api("POST", "/api/v1/sends", {
        key: a.key,
        body: { templateId: id, to: "early@example.test", scheduledAt: new Date(Date.now() + 2000).toISOString() },
      });
      assertEquals(before.status, 202);
      const del = await stack.api("DELETE", `/api/v1/templates/${id}`, { key: a.key });
      assertEquals(del.status, 204);
      assertProblem(await stack.api("GET", `/api/v1/templates/${id}`, { key: a.key }), 404, "not_found");
      assertProblem(await stack.api("DELETE", `/api/v1/templates/${id}`, { key: a.key }), 404, "not_found");
      const list = await stack.api("GET", "/api/v1/templates", { key: a.key });
      assertEquals(list.body.data.map((x: { id: string }) => x.id), [a.templateId]);
      const after = await createsNothing(
        stack,
        () => stack.api("POST", "/api/v1/sends", { key: a.key, body: { templateId: id, to: "late@example.test" } }),
      );
      assertProblem(after, 422, "template_not_found");
      const sent = await waitForStatus(stack, a.key, before.body.id, ["delivered"], 15_000);
      assertEquals(sent.subject, "Order  shipped");
      const gql = await stack.gql(`query($id: ID!) { template(id: $id) { id } }`, { id }, a.key);
      assertEquals(gql.body.data.template, null);
    });
  } finally {
    await stack.stop();
  }
});

Deno.test(
  "templates: the preview renders as a send would, over REST and GraphQL, and sends nothing",
  opts,
  async (t) => {
    const stack = await startStack();
    try {
      const a = await stack.tenant();
      // The stack's template: "Hi {{ first_name }} {{ last_name }} of {{ company }} ({{ email }}), order {{ order_id }}".
      const contact = await stack.gql(
        `mutation($i: CreateContactInput!) { createContact(input: $i) { id } }`,
        { i: { email: "ada@example.test", firstName: "Ada", lastName: "Lovelace", company: "Engines" } },
        a.key,
      );
      const contactId = contact.body.data.createContact.id;
      const render = (body: unknown) =>
        createsNothing(
          stack,
          () => stack.api("POST", `/api/v1/templates/${a.templateId}/render`, { key: a.key, body }),
        );

      await t.step("a contact's fields, then the personalizations; nothing missing", async () => {
        const r = await render({ to: contactId, personalizations: { order_id: "P-1", company: "Analytical" } });
        assertEquals(r.status, 200, JSON.stringify(r.body));
        assertEquals(r.body.subject, "Order P-1 confirmed");
        assertEquals(r.body.html, "<p>Hi Ada Lovelace of Analytical (ada@example.test), order P-1</p>");
        assertEquals(r.body.text, "Hi Ada, order P-1");
        assertEquals(r.body.missingVariables, []);
        const byEmail = await render({ to: "ADA@example.test", personalizations: { order_id: "P-2" } });
        assertMatch(byEmail.body.html, /Hi Ada Lovelace of Engines/);
        assertEquals(stack.sink.messages.length, 0);
      });

      await t.step("an unknown address renders as a new contact would; missingVariables names the gaps", async () => {
        const r = await render({ to: "new@example.test" });
        assertEquals(r.body.missingVariables.toSorted(), ["company", "first_name", "last_name", "order_id"]);
        assertEquals(await stack.count("select count(*) from contacts where email = 'new@example.test'"), 0);
        const none = await render(undefined);
        assertEquals(none.status, 200);
        assert(none.body.missingVariables.includes("email"), JSON.stringify(none.body));
      });

      await t.step("HTML is autoescaped; a template error is a 422 naming the template", async () => {
        const r = await render({ personalizations: { order_id: "<script>x</script>" } });
        assertMatch(r.body.html, /order &lt;script&gt;x&lt;\/script&gt;/);
        assertEquals(r.body.subject, "Order <script>x</script> confirmed");
        const bad = await stack.api("POST", "/api/v1/templates", {
          key: a.key,
          body: { name: "throws", subject: "s", text: "{{ nothing() }}" },
        });
        assertEquals(bad.status, 201);
        const failed = await createsNothing(
          stack,
          () => stack.api("POST", `/api/v1/templates/${bad.body.id}/render`, { key: a.key, body: {} }),
        );
        assertProblem(failed, 422, "validation_failed", "template");
      });

      await t.step("bad input: a foreign or unknown contact, an unknown field", async () => {
        assertProblem(await render({ to: crypto.randomUUID() }), 422, "contact_not_found");
        assertProblem(await render({ to: "not an address" }), 422, "validation_failed", "to");
        assertProblem(await render({ personalisations: {} }), 422, "validation_failed", "personalisations");
      });

      await t.step("GraphQL renderTemplate answers the same", async () => {
        const r = await stack.gql(
          `query($id: ID!, $to: String, $p: JSON) {
          renderTemplate(id: $id, to: $to, personalizations: $p) { subject html text missingVariables }
        }`,
          { id: a.templateId, to: contactId, p: { order_id: "G-1" } },
          a.key,
        );
        assertEquals(r.body.data.renderTemplate, {
          subject: "Order G-1 confirmed",
          html: "<p>Hi Ada Lovelace of Engines (ada@example.test), order G-1</p>",
          text: "Hi Ada, order G-1",
          missingVariables: [],
        });
      });
    } finally {
      await stack.stop();
    }
  },
);
