/**
 * Suppressions: contacts that unsubscribed (one-click link), hard-bounced, complained or were
 * unsubscribed through the API are listed with their reason and cause, are not mailed, and
 * can be lifted with updateContact; lifting and unsubscribing through the API are recorded as
 * contact-level events, in the same transaction as the change.
 */
import { assert, assertEquals } from "./assert.ts";
import { ADMIN_TOKEN, gql, opts, rawHeader, type ReceivedMail, startStack, waitFor, waitForStatus } from "./helpers.ts";

const SUPPRESSIONS = `query($first: Int, $after: String, $reason: SuppressionReason) {
  suppressions(first: $first, after: $after, reason: $reason) {
    edges { cursor node {
      reason suppressedAt sendId
      send { id status }
      contact { id email status updatedAt }
      event { id type sendId contactId occurredAt data }
    } }
    pageInfo { hasNextPage endCursor }
  }
}`;

const UPDATE = `mutation($id: ID!, $i: UpdateContactInput!) { updateContact(id: $id, input: $i) { id status } }`;

/** The List-Unsubscribe URL of a delivered message. */
function unsubscribeUrl(mail: ReceivedMail): string {
  const m = rawHeader(mail, "List-Unsubscribe")[0]?.match(/^<([^>]+)>/);
  if (!m) throw new Error("no List-Unsubscribe header");
  return m[1];
}

Deno.test("suppressions: listed with reason and cause; lifting is recorded and mails again", opts, async (t) => {
  const stack = await startStack();
  try {
    const tenant = await stack.tenant();
    const send = async (to: string) => {
      const r = await stack.api("POST", "/api/v1/sends", {
        key: tenant.key,
        body: { templateId: tenant.templateId, to, personalizations: { order_id: "S-1" } },
      });
      assertEquals(r.status, 202);
      return r.body;
    };
    const statusOf = (email: string) =>
      stack.pg.query("select status from contacts where email = $1", [email]).then((r) => r.rows[0]?.status);
    const idOf = (email: string) =>
      stack.pg.query("select id from contacts where email = $1", [email]).then((r) => r.rows[0].id as string);
    const contactEvents = (contactId: string) =>
      stack.pg.query(
        "select type, send_id, data from email_events where contact_id = $1 order by id",
        [contactId],
      ).then((r) => r.rows);

    // ann unsubscribes with the one-click link of her mail (RFC 8058).
    const sa = await send("ann@example.test");
    await waitForStatus(stack, tenant.key, sa.id, ["delivered"]);
    const mail = stack.sink.messages.find((m) => m.to.includes("ann@example.test"))!;
    const unsub = await fetch(unsubscribeUrl(mail), {
      method: "POST",
      headers: { "content-type": "application/x-www-form-urlencoded" },
      body: "List-Unsubscribe=One-Click",
    });
    assertEquals(unsub.status, 200);
    await unsub.body?.cancel();
    await waitFor(async () => (await statusOf("ann@example.test")) === "unsubscribed", 5000, "ann unsubscribed");
    // bob's address is refused for good: a hard bounce.
    stack.sink.reply = (rcpt) => (rcpt === "bob@example.test" ? { code: 550, message: "5.1.1 no such user" } : null);
    const sb = await send("bob@example.test");
    await waitForStatus(stack, tenant.key, sb.id, ["bounced"]);
    // cat complains (a feedback-loop report queues record_event like this).
    const sc = await send("cat@example.test");
    await waitForStatus(stack, tenant.key, sc.id, ["delivered"]);
    await stack.pg.query("select graphile_worker.add_job('record_event', $1::json)", [
      JSON.stringify({
        sendId: sc.id,
        type: "complained",
        occurredAt: new Date().toISOString(),
        data: { source: "arf" },
      }),
    ]);
    await waitFor(async () => (await statusOf("cat@example.test")) === "complained", 5000, "cat complained");
    // eve only soft-bounces: still mailed, never listed.
    const se = await send("eve@example.test");
    await waitForStatus(stack, tenant.key, se.id, ["delivered"]);
    await stack.pg.query("select graphile_worker.add_job('record_event', $1::json)", [
      JSON.stringify({
        sendId: se.id,
        type: "bounced",
        occurredAt: new Date().toISOString(),
        data: { bounceType: "soft" },
      }),
    ]);
    await waitFor(
      () => stack.count("select count(*) from email_events where send_id = $1 and type = 'bounced'", [se.id]),
      5000,
      "eve's soft bounce",
    );
    // dee is unsubscribed by the tenant through the API.
    const { createContact: dee } = await gql(
      stack,
      tenant.key,
      `mutation { createContact(input: { email: "dee@example.test" }) { id } }`,
    );
    await t.step("unsubscribing through the API records a contact-level `unsubscribed` event", async () => {
      const u = await gql(stack, tenant.key, UPDATE, { id: dee.id, i: { status: "UNSUBSCRIBED" } });
      assertEquals(u.updateContact.status, "UNSUBSCRIBED");
      assertEquals(await contactEvents(dee.id), [{
        type: "unsubscribed",
        send_id: null,
        data: { previousStatus: "subscribed", by: "api", apiKeyId: tenant.apiKeyId },
      }]);
    });

    await t.step("suppressions: most recently changed first, with reason, time and cause", async () => {
      const { suppressions } = await gql(stack, tenant.key, SUPPRESSIONS);
      const nodes = suppressions.edges.map((e: { node: unknown }) => e.node);
      assertEquals(
        nodes.map((n: { contact: { email: string }; reason: string; sendId: string | null }) => [
          n.contact.email,
          n.reason,
          n.sendId,
        ]),
        [
          ["dee@example.test", "UNSUBSCRIBED", null],
          ["cat@example.test", "COMPLAINED", sc.id],
          ["bob@example.test", "BOUNCED", sb.id],
          ["ann@example.test", "UNSUBSCRIBED", sa.id],
        ],
      );
      const [d, c, b, a] = nodes;
      assertEquals(d.send, null);
      assertEquals(d.event.contactId, dee.id);
      assertEquals(d.event.data.by, "api");
      assertEquals(c.event.data.source, "arf");
      assertEquals(b.send, { id: sb.id, status: "BOUNCED" });
      assertEquals([b.event.type, b.event.data.bounceType, b.event.data.smtpCode], ["BOUNCED", "hard", 550]);
      assertEquals(b.suppressedAt, b.event.occurredAt);
      assertEquals(a.event.data.via, "one-click");
      assertEquals(a.contact.status, "UNSUBSCRIBED");
      assertEquals(suppressions.pageInfo.hasNextPage, false);
    });

    await t.step("suppressions: filtered by reason, in pages; a forged cursor is refused", async () => {
      const bounced = await gql(stack, tenant.key, SUPPRESSIONS, { reason: "BOUNCED" });
      assertEquals(bounced.suppressions.edges.map((e: { node: { sendId: string } }) => e.node.sendId), [sb.id]);
      const unsubscribed = await gql(stack, tenant.key, SUPPRESSIONS, { reason: "UNSUBSCRIBED" });
      assertEquals(unsubscribed.suppressions.edges.length, 2);
      const p1 = await gql(stack, tenant.key, SUPPRESSIONS, { first: 3 });
      assertEquals(p1.suppressions.edges.length, 3);
      assert(p1.suppressions.pageInfo.hasNextPage);
      const p2 = await gql(stack, tenant.key, SUPPRESSIONS, { first: 3, after: p1.suppressions.pageInfo.endCursor });
      assertEquals(
        p2.suppressions.edges.map((e: { node: { contact: { email: string } } }) => e.node.contact.email),
        ["ann@example.test"],
      );
      assertEquals(p2.suppressions.pageInfo.hasNextPage, false);
      const bad = await stack.gql(SUPPRESSIONS, { after: "not-a-cursor" }, tenant.key);
      assertEquals(bad.body.errors[0].extensions.code, "validation_failed");
    });

    await t.step("a send to a suppressed contact is suppressed, with an event and no mail", async () => {
      const before = stack.sink.messages.length;
      const s = await send("bob@example.test");
      assertEquals(s.status, "suppressed");
      const r = await stack.api("GET", `/api/v1/sends/${s.id}`, { key: tenant.key });
      assertEquals(r.body.events.map((e: { type: string; data: unknown }) => [e.type, e.data]), [
        ["suppressed", { reason: "bounced" }],
      ]);
      await new Promise((res) => setTimeout(res, 300));
      assertEquals(stack.sink.messages.length, before);
    });

    const bob = await idOf("bob@example.test");

    await t.step("a failed update lifts nothing and records nothing (one transaction)", async () => {
      const r = await stack.gql(
        UPDATE,
        { id: bob, i: { status: "SUBSCRIBED", email: "cat@example.test" } },
        tenant.key,
      );
      assertEquals(r.body.errors[0].extensions.code, "validation_failed");
      assertEquals(await statusOf("bob@example.test"), "bounced");
      assertEquals(await contactEvents(bob), []);
    });

    await t.step("lifting a suppression records `resubscribed`, and the contact is mailed again", async () => {
      stack.sink.reply = () => null; // the mailbox exists again
      const u = await gql(stack, tenant.key, UPDATE, { id: bob, i: { status: "SUBSCRIBED" } });
      assertEquals(u.updateContact.status, "SUBSCRIBED");
      assertEquals(await contactEvents(bob), [{
        type: "resubscribed",
        send_id: null,
        data: { previousStatus: "bounced", by: "api", apiKeyId: tenant.apiKeyId },
      }]);
      const { suppressions } = await gql(stack, tenant.key, SUPPRESSIONS);
      assertEquals(
        suppressions.edges.map((e: { node: { contact: { email: string } } }) => e.node.contact.email),
        ["dee@example.test", "cat@example.test", "ann@example.test"],
      );
      const s = await send("bob@example.test");
      assertEquals(s.status, "queued");
      await waitForStatus(stack, tenant.key, s.id, ["delivered"]);
      assert(stack.sink.messages.some((m) => m.to.includes("bob@example.test")));
    });

    await t.step("Contact.events: the contact's own events and its sends', newest first", async () => {
      const q = `query($id: ID!, $first: Int) { contact(id: $id) { events(first: $first) { type sendId contactId } } }`;
      const { contact } = await gql(stack, tenant.key, q, { id: bob });
      assertEquals(contact.events.map((e: { type: string }) => e.type), [
        "DELIVERED",
        "SENT",
        "QUEUED",
        "RESUBSCRIBED",
        "SUPPRESSED",
        "BOUNCED",
        "QUEUED",
      ]);
      assertEquals(contact.events[3], { type: "RESUBSCRIBED", sendId: null, contactId: bob });
      const two = await gql(stack, tenant.key, q, { id: bob, first: 2 });
      assertEquals(two.contact.events.map((e: { type: string }) => e.type), ["DELIVERED", "SENT"]);
      const filtered = await gql(
        stack,
        tenant.key,
        `query($id: ID!) { events(sendId: $id, type: BOUNCED) { nodes { type } } }`,
        { id: sb.id },
      );
      assertEquals(filtered.events.nodes, [{ type: "BOUNCED" }]);
    });

    await t.step("changes that lift or suppress nothing record nothing", async () => {
      await gql(stack, tenant.key, UPDATE, { id: bob, i: { status: "SUBSCRIBED", firstName: "Bob" } });
      await gql(stack, tenant.key, UPDATE, { id: dee.id, i: { status: "UNSUBSCRIBED" } });
      await gql(stack, tenant.key, UPDATE, { id: await idOf("ann@example.test"), i: { lastName: "Lee" } });
      assertEquals(await stack.count("select count(*) from email_events where contact_id is not null"), 2);
    });

    await t.step("suppressions and lifting are per account", async () => {
      const other = await stack.tenant({ domain: "other.test" });
      const { suppressions } = await gql(stack, other.key, SUPPRESSIONS);
      assertEquals(suppressions.edges, []);
      const foreign = await stack.gql(UPDATE, { id: dee.id, i: { status: "SUBSCRIBED" } }, other.key);
      assertEquals(foreign.body.errors[0].extensions.code, "not_found");
      assertEquals(await statusOf("dee@example.test"), "unsubscribed");
      const admin = await stack.gql(SUPPRESSIONS, {}, ADMIN_TOKEN);
      assertEquals(admin.body.errors[0].extensions.code, "unauthorized");
      assertEquals(await stack.count("select count(*) from email_events where contact_id is not null"), 2);
    });
  } finally {
    await stack.stop();
  }
});

Deno.test("ops lift a suppression with the admin token, recorded as theirs", opts, async () => {
  const stack = await startStack();
  try {
    const tenant = await stack.tenant();
    const c = await stack.gql(
      `mutation { createContact(input: { email: "gone@example.test" }) { id } }`,
      {},
      tenant.key,
    );
    const id = c.body.data.createContact.id;
    await stack.pg.query("update contacts set status = 'unsubscribed' where id = $1", [id]);
    const r = await stack.gql(
      `mutation($id: ID!) { updateContact(id: $id, input: { status: SUBSCRIBED }) { status events { type data } } }`,
      { id },
      ADMIN_TOKEN,
    );
    assertEquals(r.body.data.updateContact.status, "SUBSCRIBED", JSON.stringify(r.body));
    const ev = r.body.data.updateContact.events.find((e: { type: string }) => e.type === "RESUBSCRIBED");
    assertEquals(ev.data, { previousStatus: "unsubscribed", by: "ops" });
    const unknown = await stack.gql(
      `mutation($id: ID!) { updateContact(id: $id, input: { status: SUBSCRIBED }) { status } }`,
      { id: crypto.randomUUID() },
      ADMIN_TOKEN,
    );
    assertEquals(unknown.body.errors[0].extensions.code, "not_found");
  } finally {
    await stack.stop();
  }
});
