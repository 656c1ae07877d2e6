/**
 * Suppressions: contacts that unsubscribed (one-click link), hard-bounced, complained or were
 * unsubscribed through the API are listed with their reason and cause, are not mailed, and
 * can be lifted with updateContact; lifting and unsubscribing through the API are recorded as
 * contact-level events, in the same transaction as the change.
 *
 * Every test starts its own stack and tenant and builds the suppressions it needs from the
 * fixtures below, so that each one can fail or run alone.
 */
import { assert, assertEquals } from "./assert.ts";
import {
  ADMIN_TOKEN,
  gql,
  type Json,
  opts,
  rawHeader,
  type ReceivedMail,
  send,
  type Stack,
  startStack,
  type TestTenant,
  waitFor,
  waitForStatus,
} from "./helpers.ts";

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

/** A stack with one tenant, for one test. */
interface Fixture {
  stack: Stack;
  tenant: TestTenant;
}

/** A test on a stack and tenant of its own. */
function suppressionTest(name: string, fn: (f: Fixture) => Promise<void>) {
  Deno.test(name, opts, async () => {
    const stack = await startStack();
    try {
      await fn({ stack, tenant: await stack.tenant() });
    } finally {
      await stack.stop();
    }
  });
}

/** The List-Unsubscribe URL of a delivered message. */
function unsubscribeUrl(mail: ReceivedMail): string {
  const m = rawHeader(mail, "List-Unsubscribe")[0]?.match(/^<([^>]+)>/);
  if (!m) throw new Error("no List-Unsubscribe header");
  return m[1];
}

const statusOf = (stack: Stack, email: string) =>
  stack.pg.query("select status from contacts where email = $1", [email]).then((r) => r.rows[0]?.status);
const idOf = (stack: Stack, email: string) =>
  stack.pg.query("select id from contacts where email = $1", [email]).then((r) => r.rows[0].id as string);
/** The contact-level events of a contact (recorded with its contact id), oldest first. */
const contactEvents = (stack: Stack, contactId: string) =>
  stack.pg.query(
    "select type, send_id, data from email_events where contact_id = $1 order by id",
    [contactId],
  ).then((r) => r.rows);
/** How many contact-level events the database holds. */
const allContactEvents = (stack: Stack) =>
  stack.count("select count(*) from email_events where contact_id is not null");

/** The tenant's order mail to `to`, accepted. */
const mailTo = ({ stack, tenant }: Fixture, to: string): Promise<Json> =>
  send(stack, tenant.key, { templateId: tenant.templateId, to, personalizations: { order_id: "S-1" } });

/** Queues `record_event` for a send, as an inbound report (a feedback loop, a DSN) does. */
async function recordEvent(stack: Stack, sendId: string, type: string, data: Record<string, unknown>) {
  await stack.pg.query("select graphile_worker.add_job('record_event', $1::json)", [
    JSON.stringify({ sendId, type, occurredAt: new Date().toISOString(), data }),
  ]);
}

/** `email` unsubscribes with the one-click link of their mail (RFC 8058); returns that send. */
async function unsubscribedByLink(f: Fixture, email = "ann@example.test"): Promise<Json> {
  const { stack, tenant } = f;
  const s = await mailTo(f, email);
  await waitForStatus(stack, tenant.key, s.id, ["delivered"]);
  const mail = stack.sink.messages.find((m) => m.to.includes(email))!;
  const unsub = await fetch(unsubscribeUrl(mail), {
    method: "POST",
    headers: { "content-type": "application/x-www-form-urlencoded" },
    body: "List-Unsubscribe=One-Click",
  });
  assertEquals(unsub.status, 200);
  await unsub.body?.cancel();
  await waitFor(async () => (await statusOf(stack, email)) === "unsubscribed", 5000, `${email} unsubscribed`);
  return s;
}

/** `email` is refused for good (550 to RCPT, until a test lets it through): a hard bounce; returns that send. */
async function hardBounced(f: Fixture, email = "bob@example.test"): Promise<Json> {
  f.stack.sink.reply = (rcpt) => (rcpt === email ? { code: 550, message: "5.1.1 no such user" } : null);
  const s = await mailTo(f, email);
  await waitForStatus(f.stack, f.tenant.key, s.id, ["bounced"]);
  return s;
}

/** `email` complains about their delivered mail (a feedback-loop report); returns that send. */
async function complained(f: Fixture, email = "cat@example.test"): Promise<Json> {
  const s = await mailTo(f, email);
  await waitForStatus(f.stack, f.tenant.key, s.id, ["delivered"]);
  await recordEvent(f.stack, s.id, "complained", { source: "arf" });
  await waitFor(async () => (await statusOf(f.stack, email)) === "complained", 5000, `${email} complained`);
  return s;
}

/** `email` only soft-bounces (a DSN after delivery): still mailed, never listed; returns that send. */
async function softBounced(f: Fixture, email = "eve@example.test"): Promise<Json> {
  const s = await mailTo(f, email);
  await waitForStatus(f.stack, f.tenant.key, s.id, ["delivered"]);
  await recordEvent(f.stack, s.id, "bounced", { bounceType: "soft" });
  await waitFor(
    () => f.stack.count("select count(*) from email_events where send_id = $1 and type = 'bounced'", [s.id]),
    5000,
    `${email}'s soft bounce`,
  );
  return s;
}

/** A new contact `email`, unsubscribed by the tenant through the API; returns its id. */
async function unsubscribedByApi(f: Fixture, email = "dee@example.test"): Promise<string> {
  const { createContact } = await gql(
    f.stack,
    f.tenant.key,
    `mutation($e: String!) { createContact(input: { email: $e }) { id } }`,
    { e: email },
  );
  const u = await gql(f.stack, f.tenant.key, UPDATE, { id: createContact.id, i: { status: "UNSUBSCRIBED" } });
  assertEquals(u.updateContact.status, "UNSUBSCRIBED");
  return createContact.id;
}

/** Every way to be suppressed, in this order: ann (link), bob (hard bounce), cat (complaint), dee (API); and eve's soft bounce. */
async function everyReason(f: Fixture) {
  const sa = await unsubscribedByLink(f);
  const sb = await hardBounced(f);
  const sc = await complained(f);
  const se = await softBounced(f);
  const dee = await unsubscribedByApi(f);
  return { sa, sb, sc, se, dee };
}

/** Lifts a suppression through the API: the mailbox exists again and the contact is SUBSCRIBED. */
async function lift(f: Fixture, contactId: string): Promise<Json> {
  f.stack.sink.reply = () => null;
  return (await gql(f.stack, f.tenant.key, UPDATE, { id: contactId, i: { status: "SUBSCRIBED" } })).updateContact;
}

suppressionTest("unsubscribing through the API records a contact-level `unsubscribed` event", async (f) => {
  const dee = await unsubscribedByApi(f);
  assertEquals(await contactEvents(f.stack, dee), [{
    type: "unsubscribed",
    send_id: null,
    data: { previousStatus: "subscribed", by: "api", apiKeyId: f.tenant.apiKeyId },
  }]);
});

suppressionTest("suppressions: most recently changed first, with reason, time and cause", async (f) => {
  const { sa, sb, sc, dee } = await everyReason(f);
  const { suppressions } = await gql(f.stack, f.tenant.key, SUPPRESSIONS);
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
  assertEquals(d.event.contactId, dee);
  assertEquals(d.event.data.by, "api");
  assertEquals(c.event.data.source, "arf");
  assertEquals(b.send, { id: sb.id, status: "BOUNCED" });
  assertEquals([b.event.type, b.event.data.bounceType, b.event.data.smtpCode], ["BOUNCED", "hard", 550]);
  assertEquals(b.suppressedAt, b.event.occurredAt);
  assertEquals(a.event.data.via, "one-click");
  assertEquals(a.contact.status, "UNSUBSCRIBED");
  assertEquals(suppressions.pageInfo.hasNextPage, false);
});

suppressionTest("suppressions: filtered by reason, in pages; a forged cursor is refused", async (f) => {
  const { stack, tenant } = f;
  const { sb } = await everyReason(f);
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

suppressionTest("a send to a suppressed contact is suppressed, with an event and no mail", async (f) => {
  await hardBounced(f);
  const before = f.stack.sink.messages.length;
  const s = await mailTo(f, "bob@example.test");
  assertEquals(s.status, "suppressed");
  const r = await f.stack.api("GET", `/api/v1/sends/${s.id}`, { key: f.tenant.key });
  assertEquals(r.body.events.map((e: { type: string; data: unknown }) => [e.type, e.data]), [
    ["suppressed", { reason: "bounced" }],
  ]);
  await new Promise((res) => setTimeout(res, 300));
  assertEquals(f.stack.sink.messages.length, before);
});

suppressionTest("a failed update lifts nothing and records nothing (one transaction)", async (f) => {
  const { stack, tenant } = f;
  await hardBounced(f);
  await gql(stack, tenant.key, `mutation { createContact(input: { email: "cat@example.test" }) { id } }`);
  const bob = await idOf(stack, "bob@example.test");
  // Lifting bob and taking cat's address at once: the address is taken, so nothing changes.
  const r = await stack.gql(UPDATE, { id: bob, i: { status: "SUBSCRIBED", email: "cat@example.test" } }, tenant.key);
  assertEquals(r.body.errors[0].extensions.code, "validation_failed");
  assertEquals(await statusOf(stack, "bob@example.test"), "bounced");
  assertEquals(await contactEvents(stack, bob), []);
});

suppressionTest("lifting a suppression records `resubscribed`, and the contact is mailed again", async (f) => {
  const { stack, tenant } = f;
  await everyReason(f);
  const bob = await idOf(stack, "bob@example.test");
  const u = await lift(f, bob);
  assertEquals(u.status, "SUBSCRIBED");
  assertEquals(await contactEvents(stack, bob), [{
    type: "resubscribed",
    send_id: null,
    data: { previousStatus: "bounced", by: "api", apiKeyId: tenant.apiKeyId },
  }]);
  const { suppressions } = await gql(stack, tenant.key, SUPPRESSIONS);
  assertEquals(
    suppressions.edges.map((e: { node: { contact: { email: string } } }) => e.node.contact.email),
    ["dee@example.test", "cat@example.test", "ann@example.test"],
  );
  const s = await mailTo(f, "bob@example.test");
  assertEquals(s.status, "queued");
  await waitForStatus(stack, tenant.key, s.id, ["delivered"]);
  assert(stack.sink.messages.some((m) => m.to.includes("bob@example.test")));
});

suppressionTest("Contact.events: the contact's own events and its sends', newest first", async (f) => {
  const { stack, tenant } = f;
  // bob's history: a hard bounce, a suppressed send, the lift, a delivered send.
  const sb = await hardBounced(f);
  assertEquals((await mailTo(f, "bob@example.test")).status, "suppressed");
  const bob = await idOf(stack, "bob@example.test");
  await lift(f, bob);
  await waitForStatus(stack, tenant.key, (await mailTo(f, "bob@example.test")).id, ["delivered"]);

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

suppressionTest("changes that lift or suppress nothing record nothing", async (f) => {
  const { stack, tenant } = f;
  await unsubscribedByLink(f);
  await hardBounced(f);
  const bob = await idOf(stack, "bob@example.test");
  await lift(f, bob);
  const dee = await unsubscribedByApi(f);
  // bob's `resubscribed` and dee's `unsubscribed` (ann's unsubscribe is an event of her send).
  assertEquals(await allContactEvents(stack), 2);
  await gql(stack, tenant.key, UPDATE, { id: bob, i: { status: "SUBSCRIBED", firstName: "Bob" } });
  await gql(stack, tenant.key, UPDATE, { id: dee, i: { status: "UNSUBSCRIBED" } });
  await gql(stack, tenant.key, UPDATE, { id: await idOf(stack, "ann@example.test"), i: { lastName: "Lee" } });
  assertEquals(await allContactEvents(stack), 2);
});

suppressionTest("suppressions and lifting are per account", async (f) => {
  const { stack, tenant } = f;
  await hardBounced(f);
  const dee = await unsubscribedByApi(f);
  const own = await gql(stack, tenant.key, SUPPRESSIONS);
  assertEquals(own.suppressions.edges.length, 2, "the tenant has suppressions to keep to itself");
  const other = await stack.tenant({ domain: "other.test" });
  const { suppressions } = await gql(stack, other.key, SUPPRESSIONS);
  assertEquals(suppressions.edges, []);
  const foreign = await stack.gql(UPDATE, { id: dee, i: { status: "SUBSCRIBED" } }, other.key);
  assertEquals(foreign.body.errors[0].extensions.code, "not_found");
  assertEquals(await statusOf(stack, "dee@example.test"), "unsubscribed");
  const admin = await stack.gql(SUPPRESSIONS, {}, ADMIN_TOKEN);
  assertEquals(admin.body.errors[0].extensions.code, "unauthorized");
  assertEquals(await allContactEvents(stack), 1, "only dee's own `unsubscribed`");
});

suppressionTest("ops lift a suppression with the admin token, recorded as theirs", async ({ stack, tenant }) => {
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
});
