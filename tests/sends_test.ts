/** Listing, pagination, filters and tenant isolation of sends, over REST and GraphQL. */
import { assert, assertEquals } from "./assert.ts";
import { opts, startStack, waitForStatus } from "./helpers.ts";

Deno.test("sends: list pagination, status filter, tenant isolation", opts, async (t) => {
  const stack = await startStack();
  try {
    const a = await stack.tenant();
    const b = await stack.tenant({ domain: "other.test" });
    const future = new Date(Date.now() + 3600_000).toISOString();
    const ids: string[] = [];
    // 5 sent now and 3 scheduled for later, created one after another.
    for (let i = 0; i < 8; i++) {
      const r = await stack.api("POST", "/api/v1/sends", {
        key: a.key,
        body: {
          templateId: a.templateId,
          to: `buyer${i}@example.test`,
          personalizations: { order_id: `ORD-${i}` },
          ...(i >= 5 ? { scheduledAt: future } : {}),
        },
      });
      assertEquals(r.status, 202, JSON.stringify(r.body));
      ids.push(r.body.id);
    }
    for (const id of ids.slice(0, 5)) await waitForStatus(stack, a.key, id, ["delivered"]);
    const bSend = await stack.api("POST", "/api/v1/sends", {
      key: b.key,
      body: { templateId: b.templateId, to: "someone@example.test" },
    });
    assertEquals(bSend.status, 202);

    await t.step("pages of 3 walk every send once, newest first", async () => {
      const seen: string[] = [];
      let cursor: string | null = null;
      let pages = 0;
      do {
        const q: string = `/api/v1/sends?limit=3${cursor ? `&cursor=${cursor}` : ""}`;
        const r = await stack.api("GET", q, { key: a.key });
        assertEquals(r.status, 200);
        assert(r.body.data.length <= 3);
        seen.push(...r.body.data.map((s: { id: string }) => s.id));
        cursor = r.body.nextCursor;
        pages++;
      } while (cursor);
      assertEquals(pages, 3);
      assertEquals(seen, [...ids].reverse());
    });

    await t.step("status filter", async () => {
      const scheduled = await stack.api("GET", "/api/v1/sends?status=scheduled", { key: a.key });
      assertEquals(scheduled.body.data.map((s: { id: string }) => s.id), ids.slice(5).reverse());
      assert(scheduled.body.data.every((s: { status: string }) => s.status === "scheduled"));
      const delivered = await stack.api("GET", "/api/v1/sends?status=delivered&limit=100", { key: a.key });
      assertEquals(delivered.body.data.length, 5);
      assertEquals(delivered.body.nextCursor, null);
      const bad = await stack.api("GET", "/api/v1/sends?status=lost", { key: a.key });
      assertEquals(bad.status, 422);
      assertEquals(bad.body.code, "validation_failed");
    });

    await t.step("GraphQL sends connection pages and filters the same way", async () => {
      const q = `query($after: String, $status: SendStatus) {
        sends(first: 4, after: $after, status: $status) { edges { cursor node { id status } } pageInfo { hasNextPage endCursor } }
      }`;
      const p1 = await stack.gql(q, {}, a.key);
      const c1 = p1.body.data.sends;
      assertEquals(c1.edges.map((e: { node: { id: string } }) => e.node.id), [...ids].reverse().slice(0, 4));
      assertEquals(c1.pageInfo.hasNextPage, true);
      const p2 = await stack.gql(q, { after: c1.pageInfo.endCursor }, a.key);
      assertEquals(
        p2.body.data.sends.edges.map((e: { node: { id: string } }) => e.node.id),
        [...ids].reverse().slice(4),
      );
      assertEquals(p2.body.data.sends.pageInfo.hasNextPage, false);
      const sch = await stack.gql(q, { status: "SCHEDULED" }, a.key);
      assertEquals(sch.body.data.sends.edges.length, 3);
    });

    await t.step("events(sendId) pages oldest first", async () => {
      const q = `query($id: ID!, $after: String) { events(sendId: $id, first: 2, after: $after) {
        nodes { type } pageInfo { hasNextPage endCursor } } }`;
      const p1 = await stack.gql(q, { id: ids[0] }, a.key);
      assertEquals(p1.body.data.events.nodes.map((e: { type: string }) => e.type), ["QUEUED", "SENT"]);
      assertEquals(p1.body.data.events.pageInfo.hasNextPage, true);
      const p2 = await stack.gql(q, { id: ids[0], after: p1.body.data.events.pageInfo.endCursor }, a.key);
      assertEquals(p2.body.data.events.nodes.map((e: { type: string }) => e.type), ["DELIVERED"]);
    });

    await t.step("one tenant never sees another's sends", async () => {
      const list = await stack.api("GET", "/api/v1/sends?limit=100", { key: b.key });
      assertEquals(list.body.data.map((s: { id: string }) => s.id), [bSend.body.id]);
      const foreign = await stack.api("GET", `/api/v1/sends/${ids[0]}`, { key: b.key });
      const unknown = await stack.api("GET", `/api/v1/sends/${crypto.randomUUID()}`, { key: b.key });
      assertEquals(foreign.status, 404);
      assertEquals(foreign.body.code, "not_found");
      assertEquals({ ...foreign.body, detail: "" }, { ...unknown.body, detail: "" });
      const cancel = await stack.api("POST", `/api/v1/sends/${ids[7]}/cancel`, { key: b.key });
      assertEquals(cancel.status, 404);
      const g = await stack.gql(`query($id: ID!) { send(id: $id) { id } events(sendId: $id) { nodes { type } } }`, {
        id: ids[0],
      }, b.key);
      assertEquals(g.body.data.send, null);
      assertEquals(g.body.data.events.nodes, []);
      const gc = await stack.gql(`mutation($id: ID!) { cancelSend(id: $id) { id } }`, { id: ids[7] }, b.key);
      assertEquals(gc.body.errors[0].extensions.code, "not_found");
      const still = await stack.api("GET", `/api/v1/sends/${ids[7]}`, { key: a.key });
      assertEquals(still.body.status, "scheduled");
    });

    await t.step("templates, contacts and domains are per tenant too", async () => {
      const q =
        `query($id: ID!) { template(id: $id) { id } templates { id } contacts(first: 100) { nodes { email } } domains { name } }`;
      const r = await stack.gql(q, { id: a.templateId }, b.key);
      assertEquals(r.body.data.template, null);
      assertEquals(r.body.data.templates.map((x: { id: string }) => x.id), [b.templateId]);
      assertEquals(r.body.data.contacts.nodes.map((c: { email: string }) => c.email), ["someone@example.test"]);
      assertEquals(r.body.data.domains.map((d: { name: string }) => d.name), ["other.test"]);
    });
  } finally {
    await stack.stop();
  }
});
