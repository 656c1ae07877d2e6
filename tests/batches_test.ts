/**
 * Batch sends and segment sends, as a caller sees them: `POST /api/v1/sends/batch` and
 * `createBatchSend` (1–1,000 recipients, all or nothing, one quota check), the batch record
 * (`GET /api/v1/batches/:id`, GraphQL `batch`, `GET /api/v1/sends?batchId=`), batch cancel,
 * and segment sends (`POST /api/v1/sends` with `segmentId`, `createSegmentSend`) expanded by
 * the `expand_segment` job: suppressed members skipped, paging past 1,000 contacts, and a
 * re-run job that mails nobody twice.
 *
 * Every test starts a stack of its own and creates its own tenants and data (fixtures
 * below), so that each one runs alone (`--filter`) and none depends on another's leftovers.
 */
import { assert, assertEquals } from "./assert.ts";
import {
  assertProblem,
  createsNothing,
  gql,
  type Json,
  type JsonResponse,
  mailsTo,
  opts,
  settle,
  sleep,
  type Stack,
  startStack,
  type TestTenant,
  used,
  waitFor,
  waitForOutcome,
} from "./helpers.ts";

const HOUR_AHEAD = () => new Date(Date.now() + 3600_000).toISOString();

async function postBatch(stack: Stack, tn: TestTenant, body: Record<string, unknown>): Promise<JsonResponse> {
  return await stack.api("POST", "/api/v1/sends/batch", { key: tn.key, body: { templateId: tn.templateId, ...body } });
}

async function getBatch(stack: Stack, key: string, id: string): Promise<Json> {
  const r = await stack.api("GET", `/api/v1/batches/${id}`, { key });
  assertEquals(r.status, 200, JSON.stringify(r.body));
  return r.body;
}

/** Waits until the REST batch satisfies `ok`, and returns it. */
async function waitForBatch(
  stack: Stack,
  key: string,
  id: string,
  ok: (b: Json) => boolean,
  what: string,
  ms = 30_000,
) {
  let last: Json = null;
  try {
    return await waitFor(
      async () => {
        last = await getBatch(stack, key, id);
        return ok(last) ? last : null;
      },
      ms,
      what,
    );
  } catch (e) {
    throw new Error(`${(e as Error).message}; last seen: ${JSON.stringify(last)}`);
  }
}

/** Every send of a batch, through `GET /api/v1/sends?batchId=` pages of `limit`. */
async function listBatchSends(stack: Stack, key: string, batchId: string, limit = 100) {
  const all: Json[] = [];
  const pages: number[] = [];
  let cursor: string | null = null;
  do {
    const q: string = `batchId=${batchId}&limit=${limit}` + (cursor ? `&cursor=${encodeURIComponent(cursor)}` : "");
    const r = await stack.api("GET", `/api/v1/sends?${q}`, { key });
    assertEquals(r.status, 200, JSON.stringify(r.body));
    assert(r.body.data.length <= limit, `a page has at most ${limit}`);
    pages.push(r.body.data.length);
    all.push(...r.body.data);
    cursor = r.body.nextCursor;
    assert(pages.length <= 100, "paging does not end");
  } while (cursor);
  return { sends: all, pages };
}

const BATCH_Q = `query($id: ID!) { batch(id: $id) { id status count segmentId counts { status count } } }`;
const CREATE_CONTACT = `mutation($i: CreateContactInput!) { createContact(input: $i) { id email } }`;
const UPDATE_CONTACT =
  `mutation($id: ID!, $i: UpdateContactInput!) { updateContact(id: $id, input: $i) { id status } }`;
const CREATE_SEGMENT = `mutation($i: CreateSegmentInput!) { createSegment(input: $i) { id } }`;

async function createContact(stack: Stack, tn: TestTenant, i: Record<string, unknown>): Promise<string> {
  return (await gql(stack, tn.key, CREATE_CONTACT, { i })).createContact.id;
}

async function createSegment(
  stack: Stack,
  tn: TestTenant,
  rules: { field: string; op: string; value?: string }[],
): Promise<string> {
  return (await gql(stack, tn.key, CREATE_SEGMENT, { i: { name: "seg", rules } })).createSegment.id;
}

/** Pending graphile-worker jobs of one task. */
function jobsOf(stack: Stack, task: string, extra = "true"): Promise<number> {
  return stack.count(
    `select count(*) from graphile_worker.jobs j where j.task_identifier = $1 and ${extra}`,
    [task],
  );
}

/** Pending delivery jobs of a batch's sends (by job key). */
function deliveryJobsOfBatch(stack: Stack, batchId: string): Promise<number> {
  return stack.count(
    `select count(*) from graphile_worker.jobs j join sends s on j.key = 'send:' || s.id::text
      where s.batch_id = $1`,
    [batchId],
  );
}

/** Queues the expansion again and rewinds the batch to its start, as a crashed-and-retried run would see it. */
async function rerunExpansion(stack: Stack, key: string, batchId: string) {
  await stack.pg.query(`update batches set status = 'expanding', expand_cursor = null where id = $1`, [batchId]);
  await stack.pg.query(`select graphile_worker.add_job('expand_segment', json_build_object('batchId', $1::text))`, [
    batchId,
  ]);
  await waitForBatch(stack, key, batchId, (b) => b.status !== "expanding", "the re-run expansion to finish", 20_000);
  await waitFor(async () => (await jobsOf(stack, "expand_segment")) === 0, 10_000, "no expand_segment job left");
}

/** What every test here gets: its own stack, and the SMTP sink's answers per recipient. */
interface Fixture {
  stack: Stack;
  /** Per-recipient SMTP answers (lower-case address → reply). */
  refuse: Map<string, { code: number; message: string }>;
  /** Every RCPT attempt, lower-cased, in order. */
  rcptAttempts: string[];
}

/**
 * A test on a stack of its own, stopped afterwards. The tests look at the delivery jobs of
 * sends scheduled an hour ahead: with a day's horizon every scheduled send gets its job at
 * once (deferred sends: delivery_test.ts).
 */
function batchTest(name: string, fn: (f: Fixture, t: Deno.TestContext) => Promise<void>) {
  Deno.test(name, opts, async (t) => {
    const stack = await startStack({ env: { PP_SCHEDULE_HORIZON_S: "86400" } });
    const refuse = new Map<string, { code: number; message: string }>();
    const rcptAttempts: string[] = [];
    stack.sink.reply = (rcpt) => {
      rcptAttempts.push(rcpt.toLowerCase());
      return refuse.get(rcpt.toLowerCase()) ?? null;
    };
    try {
      await fn({ stack, refuse, rcptAttempts }, t);
    } finally {
      await stack.stop();
    }
  });
}

/** A tenant whose contacts form a segment, and another tenant with a look-alike. */
interface SegmentTenant {
  seg: TestTenant;
  /** Another tenant, with a look-alike contact `zed@members.test` and segment. */
  other: TestTenant;
  /** Contact ids by name: ann and bob (subscribed, plan pro), cy, dee, eve (not subscribed), frank (free). */
  members: Record<string, string>;
  /** The segment plan = pro (ann and bob are its subscribed members). */
  pros: string;
  /** The other tenant's segment plan = pro. */
  foreignSegment: string;
}

/** Segment sends: members with fields; some members unsubscribed, bounced, complained. */
async function segmentTenant(stack: Stack): Promise<SegmentTenant> {
  const seg = await stack.tenant({ domain: "seg.test" });
  const other = await stack.tenant({ domain: "bshop.test" });
  const members: Record<string, string> = {};
  for (
    const [name, plan] of [["ann", "pro"], ["bob", "PRO"], ["cy", "pro"], ["dee", "pro"], ["eve", "pro"], [
      "frank",
      "free",
    ]]
  ) {
    members[name] = await createContact(stack, seg, {
      email: `${name}@members.test`,
      firstName: name[0].toUpperCase() + name.slice(1),
      fields: { plan },
    });
  }
  for (const [name, status] of [["cy", "UNSUBSCRIBED"], ["dee", "BOUNCED"], ["eve", "COMPLAINED"]]) {
    const u = await gql(stack, seg.key, UPDATE_CONTACT, { id: members[name], i: { status } });
    assertEquals(u.updateContact.status, status);
  }
  // Another tenant's look-alike contact and segment.
  await createContact(stack, other, { email: "zed@members.test", fields: { plan: "pro" } });
  const foreignSegment = await createSegment(stack, other, [{ field: "plan", op: "EQ", value: "pro" }]);
  const pros = await createSegment(stack, seg, [{ field: "plan", op: "EQ", value: "pro" }]);
  return { seg, other, members, pros, foreignSegment };
}

/** A segment send over REST to `pros`, waited for until expanded and both members delivered. */
async function sendToPros(stack: Stack, s: SegmentTenant, orderId: string) {
  const r = await stack.api("POST", "/api/v1/sends", {
    key: s.seg.key,
    body: { templateId: s.seg.templateId, segmentId: s.pros, personalizations: { order_id: orderId } },
  });
  assertEquals(r.status, 202, JSON.stringify(r.body));
  const done = await waitForBatch(
    stack,
    s.seg.key,
    r.body.batchId,
    (x) => x.status === "accepted" && x.counts.delivered === 2,
    "expanded and delivered",
    15_000,
  );
  return { response: r, batchId: r.body.batchId as string, done };
}

batchTest("a 1,000-recipient batch over REST: 1,000 distinct, personalized mails", async ({ stack }) => {
  const a = await stack.tenant();
  // A send outside the batch, which must not show up in the batch's lists or counts.
  const outside = await stack.api("POST", "/api/v1/sends", {
    key: a.key,
    body: { templateId: a.templateId, to: "outside@example.test", personalizations: { order_id: "X" } },
  });
  assertEquals(outside.status, 202, JSON.stringify(outside.body));

  const N = 1000;
  const addr = (i: number) => `bulk-${i}@example.test`;
  const recipients = Array.from({ length: N }, (_, i) => ({
    to: addr(i),
    personalizations: { order_id: `B-${i}`, first_name: `N${i}`, last_name: `L${i}`, company: `Co${i}` },
  }));
  const usedBefore = await used(stack, a.key);
  const started = Date.now();
  const r = await postBatch(stack, a, { recipients });
  assertEquals(r.status, 202, JSON.stringify(r.body).slice(0, 2000));
  const { batchId, count, sends } = r.body;
  assert(typeof batchId === "string" && batchId.length > 0, "batchId");
  assertEquals(count, N);
  assertEquals(sends.length, N);
  assertEquals(sends.map((s: Json) => s.to), recipients.map((x) => x.to), "sends in recipient order");
  assert(sends.every((s: Json) => s.status === "queued"), "every send is queued");
  assertEquals(new Set(sends.map((s: Json) => s.id)).size, N, "distinct send ids");
  assertEquals(await used(stack, a.key), usedBefore + N, "the batch uses N units");

  const mine = () => stack.sink.messages.filter((m) => m.to.some((x) => x.startsWith("bulk-")));
  await waitFor(() => mine().length >= N, 30_000, `${N} mails`);
  const b1 = await waitForBatch(stack, a.key, batchId, (x) => x.counts?.delivered === N, "all delivered");
  await sleep(200); // a duplicate would be on its way by now
  console.log(`    ${N} mails delivered ${Date.now() - started} ms after the request`);

  const mails = mine();
  assertEquals(mails.length, N, "exactly N mails");
  assertEquals(new Set(mails.map((m) => m.to[0])).size, N, "N distinct recipients");
  assertEquals(new Set(mails.map((m) => m.messageId)).size, N, "N distinct messages");
  const index = new Map(recipients.map((x, i) => [x.to, i]));
  for (const m of mails) {
    assertEquals(m.to.length, 1, "one envelope recipient per mail");
    const i = index.get(m.to[0]);
    assert(i !== undefined, `unexpected recipient ${m.to[0]}`);
    assertEquals(m.messageId, `<${sends[i].id}@shop.test>`, "the mail of this recipient's send");
    assertEquals(m.subject, `Order B-${i} confirmed`);
    assertEquals(m.html, `<p>Hi N${i} L${i} of Co${i} (${addr(i)}), order B-${i}</p>`);
    assertEquals(m.text.trim(), `Hi N${i}, order B-${i}`);
  }

  assertEquals(b1.id, batchId);
  assertEquals(b1.status, "accepted");
  assertEquals(b1.count, N);
  assertEquals(b1.counts, { delivered: N }, "counts only the batch's sends");
  const g = (await gql(stack, a.key, BATCH_Q, { id: batchId })).batch;
  assertEquals(g.id, batchId);
  assertEquals(g.status, "ACCEPTED");
  assertEquals(g.count, N);
  assertEquals(g.segmentId, null);
  assertEquals(g.counts, [{ status: "DELIVERED", count: N }]);

  const { sends: listed, pages } = await listBatchSends(stack, a.key, batchId, 100);
  assertEquals(pages, Array(10).fill(100), "ten full pages, then the end");
  assertEquals(listed.length, N);
  assertEquals(new Set(listed.map((s: Json) => s.id)), new Set(sends.map((s: Json) => s.id)));
  for (const s of listed) {
    assertEquals(s.batchId, batchId);
    assertEquals(s.status, "delivered");
    const i = index.get(s.to)!;
    assertEquals(s.id, sends[i].id);
    assertEquals(s.personalizations, recipients[i].personalizations);
    assertEquals(s.subject, `Order B-${i} confirmed`);
  }
  const gs = await gql(stack, a.key, `query($b: ID!) { sends(first: 5, batchId: $b) { nodes { batchId } } }`, {
    b: batchId,
  });
  assertEquals(gs.sends.nodes.map((n: Json) => n.batchId), Array(5).fill(batchId));
});

batchTest("GraphQL createBatchSend: per-recipient values, a contact uuid as `to`", async ({ stack }) => {
  const a = await stack.tenant();
  const gina = await createContact(stack, a, { email: "gina@example.test", firstName: "Gina", company: "GCo" });
  const r = await gql(
    stack,
    a.key,
    `mutation($i: CreateBatchSendInput!) { createBatchSend(input: $i) { batchId count sends { id to status } } }`,
    {
      i: {
        templateId: a.templateId,
        tags: { campaign: "gql" },
        from: "Deals <deals@shop.test>",
        subject: "Deal {{ order_id }} for {{ first_name }}",
        recipients: [
          { to: gina, personalizations: { order_id: "G-1" } },
          { to: "gql-two@example.test", personalizations: { order_id: "G-2", first_name: "Tom" } },
        ],
      },
    },
  );
  const p = r.createBatchSend;
  assertEquals(p.count, 2);
  assertEquals(p.sends.map((s: Json) => [s.to, s.status]), [
    ["gina@example.test", "QUEUED"],
    ["gql-two@example.test", "QUEUED"],
  ]);
  await waitFor(
    async () =>
      JSON.stringify((await gql(stack, a.key, BATCH_Q, { id: p.batchId })).batch.counts) ===
        JSON.stringify([{ status: "DELIVERED", count: 2 }]),
    10_000,
    "both delivered",
  );
  const g = (await gql(stack, a.key, BATCH_Q, { id: p.batchId })).batch;
  assertEquals(g.counts, [{ status: "DELIVERED", count: 2 }]);
  const [m1] = mailsTo(stack, "gina@example.test");
  assertEquals(mailsTo(stack, "gina@example.test").length, 1);
  assertEquals(m1.subject, "Deal G-1 for Gina", "the batch's subject, rendered per recipient");
  assertEquals(m1.html, "<p>Hi Gina  of GCo (gina@example.test), order G-1</p>");
  assertEquals(m1.from, "deals@shop.test", "the batch's from, not the template's");
  assert(/^From: Deals <deals@shop\.test>\r?$/m.test(m1.raw), "From header");
  const [m2] = mailsTo(stack, "gql-two@example.test");
  assertEquals(mailsTo(stack, "gql-two@example.test").length, 1);
  assertEquals(m2.subject, "Deal G-2 for Tom");
  assertEquals(m2.text.trim(), "Hi Tom, order G-2");
  const s = await stack.api("GET", `/api/v1/sends/${p.sends[0].id}`, { key: a.key });
  assertEquals(s.body.contactId, gina);
  assertEquals(s.body.batchId, p.batchId);
  assertEquals(s.body.tags, { campaign: "gql" });
});

batchTest("a rejected batch creates nothing", async ({ stack }, t) => {
  const a = await stack.tenant();
  const b = await stack.tenant({ domain: "bshop.test" });
  const gina = await createContact(stack, a, { email: "gina@example.test", firstName: "Gina", company: "GCo" });
  const ok = (i: number) => ({ to: `fresh-${i}@example.test`, personalizations: { order_id: `F-${i}` } });
  const many = (n: number) => Array.from({ length: n }, (_, i) => ok(i));
  // Tenant a's contacts of the `fresh-` addresses: the quota step's tenant keeps its own.
  const fresh = () =>
    stack.count(`select count(*) from contacts where account_id = $1 and email like 'fresh-%'`, [a.accountId]);

  await t.step("1,001 recipients: 422 batch_too_large", async () => {
    const r = await createsNothing(stack, () => postBatch(stack, a, { recipients: many(1001) }));
    assertProblem(r, 422, "batch_too_large");
    const g = await createsNothing(stack, () =>
      stack.gql(
        `mutation($i: CreateBatchSendInput!) { createBatchSend(input: $i) { batchId } }`,
        { i: { templateId: a.templateId, recipients: many(1001) } },
        a.key,
      ));
    assertEquals(g.body.errors?.[0]?.extensions?.code, "batch_too_large", JSON.stringify(g.body).slice(0, 500));
  });

  await t.step("no recipients: 422 validation_failed at recipients", async () => {
    const r = await createsNothing(stack, () => postBatch(stack, a, { recipients: [] }));
    assertProblem(r, 422, "validation_failed", { exactly: ["recipients"] });
    const none = await createsNothing(stack, () => postBatch(stack, a, {}));
    assertProblem(none, 422, "validation_failed", { exactly: ["recipients"] });
  });

  await t.step("bad recipients at 3 and 7: each named, the good ones not", async () => {
    const rs: Json[] = many(10);
    rs[3] = { to: "not-an-email", personalizations: {} };
    rs[7] = { personalizations: { order_id: "no to" } };
    const r = await createsNothing(stack, () => postBatch(stack, a, { recipients: rs }));
    assertProblem(r, 422, "validation_failed", { exactly: ["recipients.3.to", "recipients.7.to"] });
    assertEquals(await fresh(), 0);
    const g = await createsNothing(stack, () =>
      stack.gql(
        `mutation($i: CreateBatchSendInput!) { createBatchSend(input: $i) { batchId } }`,
        { i: { templateId: a.templateId, recipients: [ok(0), { to: "nope" }] } },
        a.key,
      ));
    assertEquals(g.body.errors?.[0]?.extensions?.code, "validation_failed", JSON.stringify(g.body));
    assertEquals(g.body.errors[0].extensions.errors.map((e: Json) => e.path), ["recipients.1.to"]);
  });

  await t.step("unknown and foreign contact uuids: 422 contact_not_found naming each", async () => {
    const foreign = await createContact(stack, b, { email: "b-only@example.test" });
    const rs: Json[] = many(6);
    rs[2] = { to: crypto.randomUUID(), personalizations: {} };
    rs[4] = { to: foreign, personalizations: {} };
    const r = await createsNothing(stack, () => postBatch(stack, a, { recipients: rs }));
    assertProblem(r, 422, "contact_not_found", { exactly: ["recipients.2.to", "recipients.4.to"] });
    assertEquals(await fresh(), 0, "the new addresses' contacts were not kept");
  });

  await t.step("a repeated address (any case) or a contact named twice: 422 naming the repeat", async () => {
    const rs: Json[] = many(6);
    rs[4] = { to: "FRESH-1@Example.TEST", personalizations: {} };
    const r = await createsNothing(stack, () => postBatch(stack, a, { recipients: rs }));
    assertProblem(r, 422, "validation_failed", { exactly: ["recipients.4.to"] });
    // An existing contact's address and its uuid are the same recipient.
    const twice = await createsNothing(
      stack,
      () => postBatch(stack, a, { recipients: [ok(0), { to: "gina@example.test" }, ok(1), { to: gina }] }),
    );
    assertProblem(twice, 422, "validation_failed", { exactly: ["recipients.3.to"] });
    assertEquals(await fresh(), 0);
  });

  await t.step("one recipient's personalizations over 64 KB: 422 at recipients.N.personalizations", async () => {
    const rs: Json[] = many(8);
    rs[5] = { to: "big@example.test", personalizations: { blob: "x".repeat(70_000) } };
    const r = await createsNothing(stack, () => postBatch(stack, a, { recipients: rs }));
    assertProblem(r, 422, "validation_failed", { exactly: ["recipients.5.personalizations"] });
    // Just under the limit is accepted.
    const under = { to: "big@example.test", personalizations: { blob: "x".repeat(60_000) } };
    const okr = await postBatch(stack, a, { recipients: [under], scheduledAt: HOUR_AHEAD() });
    assertEquals(okr.status, 202, JSON.stringify(okr.body).slice(0, 500));
    const c = await stack.api("POST", `/api/v1/batches/${okr.body.batchId}/cancel`, { key: a.key });
    assertEquals(c.status, 200);
  });

  await t.step("unknown template, unverified from: 422 and nothing created", async () => {
    const r1 = await createsNothing(
      stack,
      () => postBatch(stack, a, { templateId: crypto.randomUUID(), recipients: many(3) }),
    );
    assertProblem(r1, 422, "template_not_found");
    const r2 = await createsNothing(
      stack,
      () => postBatch(stack, a, { from: "Spoof <x@unverified.test>", recipients: many(3) }),
    );
    assertProblem(r2, 422, "domain_not_verified");
    // Another tenant's template is unknown here.
    const r3 = await createsNothing(
      stack,
      () => postBatch(stack, b, { templateId: a.templateId, recipients: many(3) }),
    );
    assertProblem(r3, 422, "template_not_found");
    assertEquals(await fresh(), 0);
  });

  await t.step("the quota is checked for the whole batch", async () => {
    const q = await stack.tenant({ domain: "quota.test", monthlyLimit: 5 });
    const six = await createsNothing(stack, () => postBatch(stack, q, { recipients: many(6) }));
    assertProblem(six, 429, "quota_exceeded");
    assertEquals(await used(stack, q.key), 0);
    const five = await postBatch(stack, q, { recipients: many(5) });
    assertEquals(five.status, 202, JSON.stringify(five.body));
    assertEquals(five.body.count, 5);
    assertEquals(await used(stack, q.key), 5);
    const one = await createsNothing(
      stack,
      () => postBatch(stack, q, { recipients: [{ to: "one-more@example.test" }] }),
    );
    assertProblem(one, 429, "quota_exceeded");
    assertEquals(await used(stack, q.key), 5);
    assertEquals(await stack.count(`select count(*) from sends where account_id = $1`, [q.accountId]), 5);
  });
});

batchTest(
  "a bounced contact in a later batch is suppressed: no mail, no quota",
  async ({ stack, refuse, rcptAttempts }) => {
    const s = await stack.tenant({ domain: "supp.test", monthlyLimit: 3 });
    const bad = "bouncer@example.test";
    refuse.set(bad, { code: 550, message: "5.1.1 No such user" });
    const first = await stack.api("POST", "/api/v1/sends", {
      key: s.key,
      body: { templateId: s.templateId, to: bad },
    });
    assertEquals(first.status, 202);
    assertEquals(
      (await waitForOutcome(stack, s.key, first.body.id)).status,
      "bounced",
    );
    assertEquals(await used(stack, s.key), 1);
    const attemptsBefore = rcptAttempts.filter((x) => x === bad).length;

    // Limit 3, 1 used: two live recipients fit only if the suppressed one costs nothing.
    const r = await postBatch(stack, s, {
      recipients: [
        { to: "keen-1@example.test", personalizations: { order_id: "K-1" } },
        { to: "Bouncer@Example.test", personalizations: { order_id: "K-2" } },
        { to: "keen-3@example.test", personalizations: { order_id: "K-3" } },
      ],
    });
    assertEquals(r.status, 202, JSON.stringify(r.body));
    assertEquals(r.body.count, 3);
    assertEquals(r.body.sends.map((x: Json) => x.status), ["queued", "suppressed", "queued"]);
    assertEquals(await used(stack, s.key), 3);
    const done = await waitForBatch(stack, s.key, r.body.batchId, (x) => x.counts.delivered === 2, "2 delivered");
    assertEquals(done.counts, { delivered: 2, suppressed: 1 });
    const supp = await stack.api("GET", `/api/v1/sends/${r.body.sends[1].id}`, { key: s.key });
    assertEquals(supp.body.status, "suppressed");
    assertEquals(supp.body.events.map((e: Json) => e.type), ["suppressed"]);
    await sleep(200);
    assertEquals(rcptAttempts.filter((x) => x === bad).length, attemptsBefore, "no delivery attempt to it");
    assertEquals(mailsTo(stack, bad).length, 0);
    assertEquals(mailsTo(stack, "keen-1@example.test").map((m) => m.subject), ["Order K-1 confirmed"]);
    assertEquals(mailsTo(stack, "keen-3@example.test").map((m) => m.subject), ["Order K-3 confirmed"]);
  },
);

batchTest("scheduledAt on a batch, then cancel the batch; 404 for foreign and unknown", async ({ stack }) => {
  const b = await stack.tenant({ domain: "bshop.test" });
  const c = await stack.tenant({ domain: "cancel.test" });
  // A bounced contact: its suppressed send is not "cancelled" by the batch cancel.
  await stack.pg.query(
    `insert into contacts (account_id, email, status) values ($1, 'gone@example.test', 'bounced')`,
    [c.accountId],
  );
  const at = HOUR_AHEAD();
  const recipients = [1, 2, 3].map((i) => ({
    to: `later-${i}@example.test`,
    personalizations: { order_id: `L${i}` },
  }));
  const r = await postBatch(stack, c, {
    recipients: [...recipients, { to: "gone@example.test" }],
    scheduledAt: at,
  });
  assertEquals(r.status, 202, JSON.stringify(r.body));
  const batchId = r.body.batchId;
  assertEquals(r.body.sends.map((x: Json) => x.status), ["scheduled", "scheduled", "scheduled", "suppressed"]);
  const ids: string[] = r.body.sends.slice(0, 3).map((x: Json) => x.id);
  assertEquals(await used(stack, c.key), 3);
  assertEquals(await deliveryJobsOfBatch(stack, batchId), 3, "one delivery job per scheduled send");
  const runAts = await stack.pg.query(
    `select run_at from graphile_worker.jobs where key = any($1::text[])`,
    [ids.map((id) => `send:${id}`)],
  );
  assert(
    runAts.rows.every((x) => Math.abs(x.run_at.getTime() - Date.parse(at)) < 1000),
    "the jobs wait for scheduledAt",
  );
  const listed = await listBatchSends(stack, c.key, batchId);
  assertEquals(listed.sends.every((s: Json) => Date.parse(s.scheduledAt) === Date.parse(at)), true);
  assertEquals((await getBatch(stack, c.key, batchId)).counts, { scheduled: 3, suppressed: 1 });

  // Another tenant neither sees nor cancels it; an unknown id is the same 404.
  const unknown = crypto.randomUUID();
  assertProblem(await stack.api("GET", `/api/v1/batches/${batchId}`, { key: b.key }), 404, "not_found");
  assertProblem(await stack.api("POST", `/api/v1/batches/${batchId}/cancel`, { key: b.key }), 404, "not_found");
  assertProblem(await stack.api("GET", `/api/v1/batches/${unknown}`, { key: c.key }), 404, "not_found");
  assertProblem(await stack.api("POST", `/api/v1/batches/${unknown}/cancel`, { key: c.key }), 404, "not_found");
  assertProblem(await stack.api("GET", `/api/v1/batches/not-a-uuid`, { key: c.key }), 404, "not_found");
  assertEquals((await gql(stack, b.key, BATCH_Q, { id: batchId })).batch, null);
  const foreignList = await stack.api("GET", `/api/v1/sends?batchId=${batchId}`, { key: b.key });
  assertEquals(foreignList.status, 200);
  assertEquals(foreignList.body.data, [], "another tenant lists none of its sends");
  assertEquals((await getBatch(stack, c.key, batchId)).counts, { scheduled: 3, suppressed: 1 }, "untouched");
  assertEquals(await used(stack, c.key), 3);

  const x = await stack.api("POST", `/api/v1/batches/${batchId}/cancel`, { key: c.key });
  assertEquals(x.status, 200, JSON.stringify(x.body));
  assertEquals(x.body.id, batchId);
  assertEquals(x.body.counts, { cancelled: 3, suppressed: 1 });
  assertEquals(await deliveryJobsOfBatch(stack, batchId), 0, "their jobs are gone");
  assertEquals(await used(stack, c.key), 0, "the quota is given back");
  for (const id of ids) {
    const s = await stack.api("GET", `/api/v1/sends/${id}`, { key: c.key });
    assertEquals(s.body.status, "cancelled");
    assertEquals(s.body.events.map((e: Json) => e.type), ["queued", "cancelled"]);
  }
  const g = (await gql(stack, c.key, BATCH_Q, { id: batchId })).batch;
  assertEquals(
    [...g.counts].sort((p: Json, q: Json) => p.status.localeCompare(q.status)),
    [{ status: "CANCELLED", count: 3 }, { status: "SUPPRESSED", count: 1 }],
  );
  // Cancelling again changes nothing and gives nothing back twice.
  await stack.api("POST", "/api/v1/sends", {
    key: c.key,
    body: { templateId: c.templateId, to: "x@example.test", scheduledAt: at },
  });
  assertEquals(await used(stack, c.key), 1);
  const again = await gql(stack, c.key, `mutation($id: ID!) { cancelBatch(id: $id) { id counts { status } } }`, {
    id: batchId,
  });
  assertEquals(again.cancelBatch.id, batchId);
  assertEquals(await used(stack, c.key), 1, "no unit is given back twice");
  const foreignGql = await stack.gql(`mutation($id: ID!) { cancelBatch(id: $id) { id } }`, { id: batchId }, b.key);
  assertEquals(foreignGql.body.errors?.[0]?.extensions?.code, "not_found", JSON.stringify(foreignGql.body));
  assertEquals((await getBatch(stack, c.key, batchId)).counts, { cancelled: 3, suppressed: 1 });
  await sleep(100);
  assertEquals(recipients.flatMap((x) => mailsTo(stack, x.to)).length, 0, "nobody was mailed");
});

batchTest("a segment send over REST mails each subscribed member once", async ({ stack }) => {
  const fx = await segmentTenant(stack);
  const { seg, members, pros } = fx;
  const usedBefore = await used(stack, seg.key);
  const { response: r, batchId: segBatch, done } = await sendToPros(stack, fx, "SEG-1");
  assertEquals(Object.keys(r.body).sort(), ["batchId", "segmentId", "status"]);
  assertEquals(r.body.segmentId, pros);
  assertEquals(r.body.status, "queued");
  assertEquals(done.count, 2);
  assertEquals(done.segmentId, pros);
  assertEquals(done.counts, { delivered: 2 });
  const g = (await gql(stack, seg.key, BATCH_Q, { id: segBatch })).batch;
  assertEquals([g.status, g.count, g.segmentId], ["ACCEPTED", 2, pros]);
  const { sends } = await listBatchSends(stack, seg.key, segBatch);
  assertEquals(sends.map((s: Json) => s.to).sort(), ["ann@members.test", "bob@members.test"]);
  assertEquals(sends.map((s: Json) => s.contactId).sort(), [members.ann, members.bob].sort());
  assertEquals(await used(stack, seg.key), usedBefore + 2, "only the mailed members use quota");
  await sleep(200);
  for (const [name, n] of [["ann", 1], ["bob", 1], ["cy", 0], ["dee", 0], ["eve", 0], ["frank", 0]] as const) {
    assertEquals(mailsTo(stack, `${name}@members.test`).length, n, `${name} gets ${n} mail(s)`);
  }
  assertEquals(mailsTo(stack, "zed@members.test").length, 0, "another tenant's contact");
  const [ann] = mailsTo(stack, "ann@members.test");
  assertEquals(ann.subject, "Order SEG-1 confirmed", "the shared personalizations reach every mail");
  assertEquals(ann.html, "<p>Hi Ann  of  (ann@members.test), order SEG-1</p>");
  assertEquals(mailsTo(stack, "bob@members.test")[0].subject, "Order SEG-1 confirmed");
  assertEquals(mailsTo(stack, "bob@members.test")[0].text.trim(), "Hi Bob, order SEG-1");
});

batchTest("re-running expand_segment from the start creates no duplicates", async ({ stack }) => {
  const fx = await segmentTenant(stack);
  const { seg, other: b } = fx;
  const { batchId: segBatch } = await sendToPros(stack, fx, "SEG-1");
  const sendsBefore = await stack.count(`select count(*) from sends where batch_id = $1`, [segBatch]);
  const mailsBefore = stack.sink.messages.length;
  const usedBefore = await used(stack, seg.key);
  assertEquals(sendsBefore, 2);
  // While it is expanding, another tenant can neither see nor stop it.
  await stack.pg.query(`update batches set status = 'expanding' where id = $1`, [segBatch]);
  assertProblem(await stack.api("POST", `/api/v1/batches/${segBatch}/cancel`, { key: b.key }), 404, "not_found");
  assertEquals((await getBatch(stack, seg.key, segBatch)).status, "expanding");
  await rerunExpansion(stack, seg.key, segBatch);
  await settle(stack);
  await sleep(200);
  const after = await getBatch(stack, seg.key, segBatch);
  assertEquals(after.status, "accepted");
  assertEquals(after.count, 2, "the batch count is unchanged");
  assertEquals(after.counts, { delivered: 2 });
  assertEquals(await stack.count(`select count(*) from sends where batch_id = $1`, [segBatch]), sendsBefore);
  assertEquals(stack.sink.messages.length, mailsBefore, "no new mail");
  assertEquals(await used(stack, seg.key), usedBefore, "no quota used");
});

batchTest("a re-run at the monthly limit adds nothing and does not fail the batch", async ({ stack }) => {
  // Every member already has its send: the re-run needs no quota, so a full month must not stop it.
  const capped = await stack.tenant({ domain: "capped.test", monthlyLimit: 2 });
  for (const e of ["cap-1@example.test", "cap-2@example.test"]) {
    await createContact(stack, capped, { email: e, fields: { tier: "gold" } });
  }
  const segment = await createSegment(stack, capped, [{ field: "tier", op: "EQ", value: "gold" }]);
  const r = await stack.api("POST", "/api/v1/sends", {
    key: capped.key,
    body: { templateId: capped.templateId, segmentId: segment, personalizations: { order_id: "CAP" } },
  });
  assertEquals(r.status, 202, JSON.stringify(r.body));
  const first = await waitForBatch(
    stack,
    capped.key,
    r.body.batchId,
    (x) => x.status !== "expanding" && x.counts.delivered === 2,
    "expanded and delivered",
    15_000,
  );
  assertEquals([first.status, first.count], ["accepted", 2]);
  assertEquals(await used(stack, capped.key), 2, "the month is now full");
  await rerunExpansion(stack, capped.key, r.body.batchId);
  const after = await getBatch(stack, capped.key, r.body.batchId);
  assertEquals(
    { status: after.status, count: after.count, error: after.error },
    { status: "accepted", count: 2, error: null },
    "a re-run that creates nothing must not fail the batch",
  );
  assertEquals(await used(stack, capped.key), 2);
  assertEquals(mailsTo(stack, "cap-1@example.test").length, 1);
});

batchTest("GraphQL createSegmentSend", async ({ stack }) => {
  const fx = await segmentTenant(stack);
  const { seg, pros } = fx;
  // A REST segment send first: the GraphQL one is a new batch, and every member gets both.
  const { batchId: segBatch } = await sendToPros(stack, fx, "SEG-1");
  const r = await gql(
    stack,
    seg.key,
    `mutation($i: CreateSegmentSendInput!) { createSegmentSend(input: $i) { batchId segmentId status } }`,
    { i: { templateId: seg.templateId, segmentId: pros, personalizations: { order_id: "SEG-2" } } },
  );
  const p = r.createSegmentSend;
  assertEquals([p.segmentId, p.status], [pros, "queued"]);
  assertEquals(p.batchId === segBatch, false, "a new batch");
  await waitFor(
    async () => {
      const g = (await gql(stack, seg.key, BATCH_Q, { id: p.batchId })).batch;
      return g.status === "ACCEPTED" && g.counts.length === 1 && g.counts[0].status === "DELIVERED" &&
        g.counts[0].count === 2;
    },
    15_000,
    "the GraphQL segment send to be delivered",
  );
  await sleep(100);
  for (const name of ["ann", "bob"]) {
    assertEquals(mailsTo(stack, `${name}@members.test`).map((m) => m.subject).sort(), [
      "Order SEG-1 confirmed",
      "Order SEG-2 confirmed",
    ]);
  }
  for (const name of ["cy", "dee", "eve", "frank"]) assertEquals(mailsTo(stack, `${name}@members.test`).length, 0);
});

batchTest("segment send bad input: 422 and nothing created; an empty segment is a 0 batch", async ({ stack }) => {
  const { seg, pros, foreignSegment } = await segmentTenant(stack);
  const send = (body: Record<string, unknown>) =>
    stack.api("POST", "/api/v1/sends", { key: seg.key, body: { templateId: seg.templateId, ...body } });
  assertProblem(
    await createsNothing(stack, () => send({ segmentId: crypto.randomUUID() })),
    422,
    "segment_not_found",
  );
  assertProblem(await createsNothing(stack, () => send({ segmentId: foreignSegment })), 422, "segment_not_found");
  const both = await createsNothing(stack, () => send({ segmentId: pros, to: "ann@members.test" }));
  assertProblem(both, 422, "validation_failed");
  const neither = await createsNothing(stack, () => send({ personalizations: { order_id: "none" } }));
  assertProblem(neither, 422, "validation_failed");
  const g = await createsNothing(stack, () =>
    stack.gql(
      `mutation($i: CreateSegmentSendInput!) { createSegmentSend(input: $i) { batchId } }`,
      { i: { templateId: seg.templateId, segmentId: foreignSegment } },
      seg.key,
    ));
  assertEquals(g.body.errors?.[0]?.extensions?.code, "segment_not_found", JSON.stringify(g.body));

  const empty = await createSegment(stack, seg, [{ field: "plan", op: "EQ", value: "enterprise" }]);
  const r = await send({ segmentId: empty });
  assertEquals(r.status, 202, JSON.stringify(r.body));
  assertEquals([r.body.segmentId, r.body.status], [empty, "queued"]);
  const done = await waitForBatch(
    stack,
    seg.key,
    r.body.batchId,
    (x) => x.status !== "expanding",
    "expanded",
    10_000,
  );
  assertEquals(done.status, "accepted");
  assertEquals(done.count, 0);
  assertEquals(done.counts, {});
  assertEquals(done.error, null);
});

batchTest("a segment of 2,500 subscribed contacts expands across pages into 2,500 sends", async ({ stack }) => {
  const big = await stack.tenant({ domain: "big.test", mode: "TEST" });
  // 2,600 matching contacts, every 26th unsubscribed (100): 2,500 to mail. Plus non-members.
  await stack.pg.query(
    `insert into contacts (account_id, email, first_name, fields, status)
     select $1::uuid, 'm' || i || '@big.test', 'M' || i, jsonb_build_object('cohort', 'big'),
            case when i % 26 = 0 then 'unsubscribed' else 'subscribed' end
       from generate_series(1, 2600) as i
     union all
     select $1::uuid, 'n' || i || '@big.test', 'N' || i, jsonb_build_object('cohort', 'small'), 'subscribed'
       from generate_series(1, 50) as i`,
    [big.accountId],
  );
  const segment = await createSegment(stack, big, [{ field: "cohort", op: "EQ", value: "big" }]);
  // Scheduled an hour ahead: the sends wait, so the check is about expansion alone.
  const at = HOUR_AHEAD();
  const r = await stack.api("POST", "/api/v1/sends", {
    key: big.key,
    body: {
      templateId: big.templateId,
      segmentId: segment,
      scheduledAt: at,
      personalizations: { order_id: "BIG" },
    },
  });
  assertEquals(r.status, 202, JSON.stringify(r.body));
  const batchId = r.body.batchId;
  const done = await waitForBatch(stack, big.key, batchId, (x) => x.status !== "expanding", "expanded", 20_000);
  assertEquals(done.status, "accepted", JSON.stringify(done));
  assertEquals(done.count, 2500);
  assertEquals(done.counts, { scheduled: 2500 });
  const check = async () => {
    const q = await stack.pg.query(
      `select count(*)::int as sends, count(distinct s.contact_id)::int as contacts,
              count(*) filter (where c.status <> 'subscribed')::int as unsubscribed,
              count(*) filter (where c.fields->>'cohort' <> 'big')::int as outsiders,
              count(*) filter (where s.personalizations->>'order_id' = 'BIG')::int as personalized,
              count(*) filter (where s.to_email = c.email)::int as addressed
         from sends s join contacts c on c.id = s.contact_id where s.batch_id = $1`,
      [batchId],
    );
    return q.rows[0];
  };
  assertEquals(await check(), {
    sends: 2500,
    contacts: 2500,
    unsubscribed: 0,
    outsiders: 0,
    personalized: 2500,
    addressed: 2500,
  });
  assertEquals(await deliveryJobsOfBatch(stack, batchId), 2500);
  assertEquals(await used(stack, big.key), 2500);

  await rerunExpansion(stack, big.key, batchId);
  const again = await getBatch(stack, big.key, batchId);
  assertEquals([again.status, again.count], ["accepted", 2500]);
  assertEquals((await check()).sends, 2500, "a re-run from the start adds no send");
  assertEquals(await deliveryJobsOfBatch(stack, batchId), 2500, "and no job");
  assertEquals(await used(stack, big.key), 2500, "and uses no quota");

  const x = await stack.api("POST", `/api/v1/batches/${batchId}/cancel`, { key: big.key });
  assertEquals(x.status, 200, JSON.stringify(x.body));
  assertEquals(x.body.counts, { cancelled: 2500 });
  assertEquals(await deliveryJobsOfBatch(stack, batchId), 0);
  assertEquals(await used(stack, big.key), 0);

  // Cancel while it expands: the job is held on its first page (the account's usage row is
  // locked here), the cancel waits behind the job's lock on the batch, then both go on.
  const lock = await stack.pg.connect();
  let cancelling: Promise<JsonResponse> | null = null;
  let second = "";
  const waiting = () =>
    stack.count(
      `select count(*) from pg_stat_activity where datname = current_database() and wait_event_type = 'Lock'`,
    );
  try {
    await lock.query("begin");
    await lock.query("select used from account_usage where account_id = $1 for update", [big.accountId]);
    const r2 = await stack.api("POST", "/api/v1/sends", {
      key: big.key,
      body: { templateId: big.templateId, segmentId: segment, scheduledAt: at },
    });
    assertEquals(r2.status, 202, JSON.stringify(r2.body));
    second = r2.body.batchId;
    await waitFor(async () => (await waiting()) >= 1, 10_000, "the expansion to wait on the usage row");
    cancelling = stack.api("POST", `/api/v1/batches/${second}/cancel`, { key: big.key });
    await waitFor(async () => (await waiting()) >= 2, 10_000, "the cancel to wait on the batch");
  } finally {
    await lock.query("commit").catch(() => {});
    lock.release();
  }
  const cancelled = await cancelling!;
  assertEquals(cancelled.status, 200, JSON.stringify(cancelled.body));
  await waitFor(async () => (await jobsOf(stack, "expand_segment")) === 0, 10_000, "the expansion to stop");
  await sleep(300);
  const stopped = await getBatch(stack, big.key, second);
  const n = await stack.count(`select count(*) from sends where batch_id = $1`, [second]);
  assertEquals(stopped.status, "cancelled");
  assert(n < 2500, `the expansion stopped after the cancel (${n} sends)`);
  assertEquals(stopped.count, n);
  assertEquals(stopped.counts, n ? { cancelled: n } : {}, "every send it made is cancelled");
  assertEquals(await deliveryJobsOfBatch(stack, second), 0);
  assertEquals(await used(stack, big.key), 0, "and its quota given back");
});
