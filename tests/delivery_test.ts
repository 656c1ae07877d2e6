/**
 * Delivery end to end: a send accepted over REST goes through the `deliver_send` job to a
 * real SMTP server (or the outbox) and the caller sees the outcome in its status and events.
 * Covers rendering, hard bounces and suppression, 4xx retries, scheduling, cancelling,
 * sandbox keys, re-run jobs and contact auto-creation.
 */
import { assert, assertEquals, assertMatch, assertNotMatch } from "./assert.ts";
import {
  getSend,
  gql,
  headerBlock,
  type Json,
  mailsTo,
  opts,
  send,
  sleep,
  type Stack,
  startStack,
  used,
  waitDelivered,
  waitFor,
  waitForOutcome,
} from "./helpers.ts";

const types = (s: Json): string[] => s.events.map((e: { type: string }) => e.type);

async function contactByEmail(stack: Stack, key: string, email: string) {
  return (await gql(
    stack,
    key,
    `query($e: String!) { contact(email: $e) { id email status firstName } }`,
    { e: email },
  )).contact;
}

/**
 * graphile-worker's `deliver_send` jobs that may be for a send, pending or failed for good,
 * through its public `jobs` view (which shows no payload): the one with the send's job key
 * `send:<id>`, and any without a key (the service gives every delivery job its send's key,
 * so an unkeyed one is counted against whichever send is asked about).
 */
function jobsFor(stack: Stack, sendId: string): Promise<number> {
  return stack.count(
    `select count(*) from graphile_worker.jobs
      where task_identifier = 'deliver_send' and (key = $1 or key is null)`,
    [`send:${sendId}`],
  );
}

/** graphile-worker jobs with the send's job key. */
function jobsWithKey(stack: Stack, sendId: string): Promise<number> {
  return stack.count(`select count(*) from graphile_worker.jobs where key = $1`, [`send:${sendId}`]);
}

/** Runs `fn` now and keeps its outcome for a later step (no unhandled rejection meanwhile). */
function background(fn: () => Promise<void>): Promise<unknown> {
  return fn().then(() => null, (e) => e);
}

async function outcome(p: Promise<unknown>): Promise<void> {
  const err = await p;
  if (err) throw err;
}

Deno.test("delivery through SMTP_URL: mail, rendering, bounces, retries, schedules, cancel", opts, async (t) => {
  const stack = await startStack();
  const fewRetries = await startStack({ env: { PP_SMTP_MAX_ATTEMPTS: "2" } });
  // Per-recipient SMTP answers; everything else is accepted.
  const refuse = new Map<string, (attempt: number) => { code: number; message: string } | null>();
  stack.sink.reply = (rcpt, n) => refuse.get(rcpt.toLowerCase())?.(n) ?? null;
  fewRetries.sink.reply = (rcpt) =>
    rcpt === "greylisted@example.test" ? { code: 451, message: "4.7.1 Try again later" } : null;
  try {
    // The slow cases (graphile-worker's first retry waits e^1 ≈ 2.7 s, a schedule waits 2 s)
    // start now and run while the fast steps below do; their steps at the end await them.

    // 4. A 4xx, then a 250: the send waits queued with the reason, then is delivered once.
    const retried = background(async () => {
      const to = "retry-later@example.test";
      refuse.set(to, (n) => n === 1 ? { code: 451, message: "4.7.1 Greylisted, try again later" } : null);
      const tn = await stack.tenant();
      const s = await send(stack, tn.key, { templateId: tn.templateId, to, personalizations: { order_id: "R-1" } });
      assertEquals(s.status, "queued");
      const deferred = await waitFor(
        async () => {
          const g = await getSend(stack, tn.key, s.id);
          return g.error ? g : null;
        },
        2500,
        "the deferred send to show its error",
      );
      assertEquals(deferred.status, "queued", "a deferred send is queued again while it waits");
      assertEquals(deferred.error.code, "smtp_451");
      assertEquals(mailsTo(stack, to).length, 0);
      const done = await waitDelivered(stack, tn.key, s.id, 7000);
      assertEquals(types(done), ["queued", "sent", "delivered"], "no failed event for a retried send");
      assertEquals(done.error, null, "the temporary error is cleared once delivered");
      const mails = mailsTo(stack, to);
      assertEquals(mails.length, 1);
      assertEquals(mails[0].messageId, s.messageId);
      assertEquals(mails[0].subject, "Order R-1 confirmed");
    });

    // 5. 4xx on every attempt with PP_SMTP_MAX_ATTEMPTS=2: failed after the second.
    const exhausted = background(async () => {
      const to = "greylisted@example.test";
      const tn = await fewRetries.tenant();
      const s = await send(fewRetries, tn.key, { templateId: tn.templateId, to });
      const done = await waitForOutcome(fewRetries, tn.key, s.id, 7000);
      assertEquals(done.status, "failed");
      assertEquals(types(done), ["queued", "failed"]);
      assertEquals(done.error?.code, "smtp_451");
      assertEquals(done.deliveredAt, null);
      assertEquals(done.sentAt, null);
      assertEquals(mailsTo(fewRetries, to).length, 0);
      assertEquals(await jobsFor(fewRetries, s.id), 0, "no job is left to retry a failed send");
    });

    // 8. scheduledAt 2 s ahead: nothing before, delivered soon after.
    const scheduled = background(async () => {
      const to = "later@example.test";
      const tn = await stack.tenant();
      const at = Date.now() + 2000;
      const s = await send(stack, tn.key, {
        templateId: tn.templateId,
        to,
        personalizations: { order_id: "S-1" },
        scheduledAt: new Date(at).toISOString(),
      });
      assertEquals(s.status, "scheduled");
      assertEquals(Date.parse(s.scheduledAt), at);
      await sleep(1000);
      assertEquals(mailsTo(stack, to).length, 0, "no mail 1 s before the time");
      assertEquals((await getSend(stack, tn.key, s.id)).status, "scheduled");
      await sleep(Math.max(0, at - 300 - Date.now()));
      assertEquals(mailsTo(stack, to).length, 0, "no mail 0.3 s before the time");
      const done = await waitDelivered(stack, tn.key, s.id, 5000);
      assertEquals(mailsTo(stack, to).length, 1);
      const deliveredAt = Date.parse(done.deliveredAt);
      assert(Date.parse(done.sentAt) >= at, `sent at ${done.sentAt}, before ${s.scheduledAt}`);
      assert(deliveredAt >= at, `delivered at ${done.deliveredAt}, before ${s.scheduledAt}`);
      assert(deliveredAt <= at + 2000, `delivered at ${done.deliveredAt}, > 2 s after ${s.scheduledAt}`);
      assertEquals(types(done), ["queued", "sent", "delivered"]);
    });

    const tenant = await stack.tenant();

    await t.step("1. a LIVE key's send reaches the SMTP server once and becomes delivered", async () => {
      const to = "buyer@example.test";
      const s = await send(stack, tenant.key, {
        templateId: tenant.templateId,
        to,
        personalizations: { order_id: "ORD-1", first_name: "Ann", last_name: "Lee", company: "Acme" },
      });
      assertEquals(s.status, "queued");
      assertMatch(s.messageId, /^<[^<>@\s]+@shop\.test>$/);
      const done = await waitDelivered(stack, tenant.key, s.id);
      assert(done.sentAt && done.deliveredAt, "sentAt and deliveredAt are set");
      assert(Date.parse(done.deliveredAt) >= Date.parse(done.sentAt));
      assert(Date.parse(done.sentAt) >= Date.parse(done.createdAt));
      assertEquals(done.error, null);
      assertEquals(done.bouncedAt, null);
      assertEquals(done.subject, "Order ORD-1 confirmed");
      assertEquals(done.missingVariables ?? [], []);
      assertEquals(types(done), ["queued", "sent", "delivered"]);
      const at = done.events.map((e: { occurredAt: string }) => Date.parse(e.occurredAt));
      assertEquals(at, [...at].sort((a: number, b: number) => a - b), "events oldest first");

      const mails = mailsTo(stack, to);
      assertEquals(mails.length, 1, "exactly one mail");
      const m = mails[0];
      assertEquals(m.from, "orders@shop.test", "envelope sender");
      assertEquals(m.to, [to], "envelope recipients");
      assertMatch(m.raw, /^From: Shop <orders@shop\.test>\r?$/m);
      assertMatch(m.raw, /^To: buyer@example\.test\r?$/m);
      assertEquals(m.messageId, s.messageId);
      assertEquals(m.subject, "Order ORD-1 confirmed");
      assertEquals(m.html, "<p>Hi Ann Lee of Acme (buyer@example.test), order ORD-1</p>");
      assertEquals(m.text.trim(), "Hi Ann, order ORD-1");
    });

    await t.step("2. rendering: HTML autoescaped, subject not, headers folded, missing variables", async (t) => {
      const tn = await stack.tenant({
        template: {
          subject: "Hello {{ who }}",
          html: "<p>{{ note }}</p><p>{{ who }}</p>",
          text: "{{ note }} / {{ who }}",
        },
      });
      await t.step("HTML is escaped, subject and text are not", async () => {
        const to = "escape@example.test";
        const s = await send(stack, tn.key, {
          templateId: tn.templateId,
          to,
          personalizations: { who: "Tom & Jerry", note: "<script>alert(1)</script>" },
        });
        const done = await waitDelivered(stack, tn.key, s.id);
        assertEquals(done.subject, "Hello Tom & Jerry");
        const [m] = mailsTo(stack, to);
        assertEquals(m.subject, "Hello Tom & Jerry");
        assertEquals(m.html, "<p>&lt;script&gt;alert(1)&lt;/script&gt;</p><p>Tom &amp; Jerry</p>");
        assertNotMatch(m.html, /<script>/);
        assertEquals(m.text.trim(), "<script>alert(1)</script> / Tom & Jerry");
      });

      await t.step("CR/LF in a subject value is folded: no extra header", async () => {
        const to = "inject@example.test";
        const s = await send(stack, tn.key, {
          templateId: tn.templateId,
          to,
          personalizations: { who: "Ann\r\nBcc: thief@evil.test\nX-Injected: yes", note: "n" },
        });
        const done = await waitDelivered(stack, tn.key, s.id);
        const mails = mailsTo(stack, to);
        assertEquals(mails.length, 1);
        const m = mails[0];
        assertEquals(m.to, [to], "no extra envelope recipient");
        assertEquals(mailsTo(stack, "thief@evil.test").length, 0);
        assertEquals(m.headers.has("bcc"), false);
        assertEquals(m.headers.has("x-injected"), false);
        const head = headerBlock(m);
        assertNotMatch(head, /^(Bcc|X-Injected):/im);
        assertMatch(head, /^Subject: Hello Ann Bcc: thief@evil\.test X-Injected: yes\r?$/m);
        assertMatch(m.subject, /^Hello Ann\s+Bcc: thief@evil\.test\s+X-Injected: yes$/);
        assertNotMatch(done.subject, /[\r\n]/);
      });

      await t.step("missing variables render empty and are listed, sorted", async () => {
        const to = "nobody-knows@example.test";
        // The default template uses first_name, last_name, company, email and order_id.
        const s = await send(stack, tenant.key, { templateId: tenant.templateId, to });
        const done = await waitDelivered(stack, tenant.key, s.id);
        assertEquals(done.missingVariables, ["company", "first_name", "last_name", "order_id"]);
        const [m] = mailsTo(stack, to);
        assertEquals(m.subject, "Order  confirmed");
        assertEquals(m.html, "<p>Hi   of  (nobody-knows@example.test), order </p>");
        assertNotMatch(m.html + m.text + m.subject, /undefined|null|\{\{/);
      });

      await t.step("personalizations win over contact fields; custom fields are variables", async () => {
        const tc = await stack.tenant({
          template: {
            subject: "Welcome {{ first_name }}",
            html: "<p>{{ first_name }} {{ last_name }} of {{ company }} ({{ email }}) on {{ plan }}</p>",
            text: "{{ first_name }} {{ last_name }} on {{ plan }}",
          },
        });
        const to = "jane@example.test";
        const { createContact } = await gql(
          stack,
          tc.key,
          `mutation($i: CreateContactInput!) { createContact(input: $i) { id email } }`,
          { i: { email: to, firstName: "Jane", lastName: "Doe", company: "Initech", fields: { plan: "Pro" } } },
        );
        assert(createContact.id);
        const s = await send(stack, tc.key, {
          templateId: tc.templateId,
          to,
          personalizations: { first_name: "Dr. Jane" },
        });
        assertEquals(s.contactId, createContact.id, "the existing contact is used");
        const done = await waitDelivered(stack, tc.key, s.id);
        assertEquals(done.missingVariables ?? [], []);
        const [m] = mailsTo(stack, to);
        assertEquals(m.subject, "Welcome Dr. Jane");
        assertEquals(m.html, "<p>Dr. Jane Doe of Initech (jane@example.test) on Pro</p>");
        assertEquals(m.text.trim(), "Dr. Jane Doe on Pro");
      });
    });

    await t.step("3. a 5xx is a hard bounce; the address is then suppressed", async () => {
      const to = "no-such-user@example.test";
      refuse.set(to, () => ({ code: 550, message: "5.1.1 No such user" }));
      const tn = await stack.tenant();
      const s = await send(stack, tn.key, { templateId: tn.templateId, to, personalizations: { order_id: "B-1" } });
      assertEquals(s.status, "queued");
      const done = await waitForOutcome(stack, tn.key, s.id);
      assertEquals(done.status, "bounced");
      assert(done.bouncedAt, "bouncedAt is set");
      assertEquals(done.deliveredAt, null);
      assertEquals(done.error?.code, "smtp_550");
      assertMatch(done.error.message, /No such user/);
      assertEquals(types(done), ["queued", "bounced"]);
      assertEquals(done.events[1].data.bounceType, "hard");
      assertEquals(mailsTo(stack, to).length, 0);
      assertEquals((await contactByEmail(stack, tn.key, to)).status, "BOUNCED");

      const before = await used(stack, tn.key);
      assertEquals(before, 1, "the bounced send used one unit");
      const again = await send(stack, tn.key, { templateId: tn.templateId, to });
      assertEquals(again.status, "suppressed");
      assertEquals(again.contactId, done.contactId);
      assertEquals(await jobsFor(stack, again.id), 0, "no delivery job for a suppressed send");
      assertEquals(await used(stack, tn.key), before, "no quota unit for a suppressed send");
      await sleep(300);
      const later = await getSend(stack, tn.key, again.id);
      assertEquals(later.status, "suppressed");
      assertEquals(types(later), ["suppressed"]);
      assertEquals(mailsTo(stack, to).length, 0);
    });

    await t.step("7. a delivery job run again mails nothing and records nothing", async () => {
      const tn = await stack.tenant();
      const s = await send(stack, tn.key, { templateId: tn.templateId, to: "rerun@example.test" });
      const firstSend = await waitDelivered(stack, tn.key, s.id);
      const id = firstSend.id;
      const mailsBefore = stack.sink.messages.filter((m) => m.messageId === firstSend.messageId).length;
      assertEquals(mailsBefore, 1);
      await stack.pg.query(
        `select graphile_worker.add_job('deliver_send', json_build_object('sendId', $1::text))`,
        [id],
      );
      await waitFor(async () => (await jobsFor(stack, id)) === 0, 3000, "the re-added job to run");
      await sleep(200); // a second mail would be on its way by now
      assertEquals(stack.sink.messages.filter((m) => m.messageId === firstSend.messageId).length, 1);
      const after = await getSend(stack, tn.key, id);
      assertEquals(after.status, "delivered");
      assertEquals(after.events, firstSend.events, "no new events");
      assertEquals(after.sentAt, firstSend.sentAt);
      assertEquals(after.deliveredAt, firstSend.deliveredAt);
    });

    await t.step("9. cancel a scheduled send over REST and GraphQL: job removed, quota given back", async () => {
      const tn = await stack.tenant();
      const later = new Date(Date.now() + 60_000).toISOString();
      const a = await send(stack, tn.key, {
        templateId: tn.templateId,
        to: "cancel-a@example.test",
        scheduledAt: later,
      });
      const b = await send(stack, tn.key, {
        templateId: tn.templateId,
        to: "cancel-b@example.test",
        scheduledAt: later,
      });
      assertEquals([a.status, b.status], ["scheduled", "scheduled"]);
      assertEquals(await jobsWithKey(stack, a.id), 1, "the scheduled send has its job");
      assertEquals(await jobsWithKey(stack, b.id), 1);
      assertEquals(await jobsFor(stack, a.id), 1, "jobsFor sees a pending job");
      assertEquals(await used(stack, tn.key), 2);

      const r = await stack.api("POST", `/api/v1/sends/${a.id}/cancel`, { key: tn.key });
      assertEquals(r.status, 200, JSON.stringify(r.body));
      assertEquals(r.body.id, a.id);
      assertEquals(r.body.status, "cancelled");
      assertEquals(await jobsWithKey(stack, a.id), 0, "the job is gone");
      assertEquals(await used(stack, tn.key), 1, "the unit is given back");
      const ga = await getSend(stack, tn.key, a.id);
      assertEquals(ga.status, "cancelled");
      assertEquals(types(ga), ["queued", "cancelled"]);
      const twice = await stack.api("POST", `/api/v1/sends/${a.id}/cancel`, { key: tn.key });
      assertEquals(twice.status, 409);
      assertEquals(twice.body.code, "not_cancellable");

      const { cancelSend } = await gql(
        stack,
        tn.key,
        `mutation($id: ID!) { cancelSend(id: $id) { id status events { type } } }`,
        { id: b.id },
      );
      assertEquals(cancelSend.id, b.id);
      assertEquals(cancelSend.status, "CANCELLED");
      assertEquals(cancelSend.events.map((e: { type: string }) => e.type), ["QUEUED", "CANCELLED"]);
      assertEquals(await jobsWithKey(stack, b.id), 0);
      assertEquals(await used(stack, tn.key), 0);
      assertEquals((await getSend(stack, tn.key, b.id)).status, "cancelled");
      assertEquals(mailsTo(stack, "cancel-a@example.test").length + mailsTo(stack, "cancel-b@example.test").length, 0);
    });

    await t.step(
      "10. sends create SUBSCRIBED contacts, reused case-insensitively, or address a contact id",
      async () => {
        const tn = await stack.tenant();
        assertEquals(await contactByEmail(stack, tn.key, "new-buyer@example.test"), null);
        const s = await send(stack, tn.key, { templateId: tn.templateId, to: "new-buyer@example.test" });
        const c = await contactByEmail(stack, tn.key, "new-buyer@example.test");
        assertEquals(c.status, "SUBSCRIBED");
        assertEquals(c.id, s.contactId);

        const mixed = await send(stack, tn.key, { templateId: tn.templateId, to: "Mixed@Example.Test" });
        const lower = await send(stack, tn.key, { templateId: tn.templateId, to: "mixed@example.test" });
        assertEquals(lower.contactId, mixed.contactId, "one contact for both spellings");
        assertEquals(lower.to.toLowerCase(), "mixed@example.test");
        assertEquals((await contactByEmail(stack, tn.key, "MIXED@example.test")).id, mixed.contactId);
        assertEquals(
          await stack.count(`select count(*) from contacts where account_id = $1 and lower(email) = $2`, [
            tn.accountId,
            "mixed@example.test",
          ]),
          1,
        );
        const { contacts } = await gql(stack, tn.key, `{ contacts(first: 100) { nodes { email } } }`);
        assertEquals(contacts.nodes.length, 2, JSON.stringify(contacts.nodes));

        const { createContact } = await gql(
          stack,
          tn.key,
          `mutation($i: CreateContactInput!) { createContact(input: $i) { id } }`,
          { i: { email: "by-id@example.test", firstName: "Ida" } },
        );
        const byId = await send(stack, tn.key, {
          templateId: tn.templateId,
          to: createContact.id,
          personalizations: { order_id: "ID-1" },
        });
        assertEquals(byId.to, "by-id@example.test");
        assertEquals(byId.contactId, createContact.id);
        await waitDelivered(stack, tn.key, byId.id);
        const mails = mailsTo(stack, "by-id@example.test");
        assertEquals(mails.length, 1);
        assertEquals(mails[0].to, ["by-id@example.test"]);
        assertMatch(mails[0].html, /Hi Ida /);
      },
    );

    await t.step("6b. a TEST key's mail goes to the outbox even with SMTP_URL set", async () => {
      const tn = await stack.tenant({ mode: "TEST" });
      const to = "sandboxed@example.test";
      const s = await send(stack, tn.key, { templateId: tn.templateId, to, personalizations: { order_id: "T-1" } });
      const done = await waitDelivered(stack, tn.key, s.id);
      assertEquals(done.sandbox, true);
      assertEquals(types(done), ["queued", "sent", "delivered"]);
      const eml = await Deno.readTextFile(`${stack.dataDir}/outbox/${s.id}.eml`);
      assertMatch(eml, /^Subject: Order T-1 confirmed\r?$/m);
      assertMatch(eml, /^To: sandboxed@example\.test\r?$/m);
      assertMatch(eml, /order T-1/);
      await sleep(200);
      assertEquals(mailsTo(stack, to).length, 0, "nothing reached the SMTP server");
    });

    await t.step("8b. a scheduledAt in the past is sent now", async () => {
      const tn = await stack.tenant();
      const past = new Date(Date.now() - 60_000).toISOString();
      const s = await send(stack, tn.key, { templateId: tn.templateId, to: "past@example.test", scheduledAt: past });
      assertEquals(s.status, "queued");
      await waitDelivered(stack, tn.key, s.id, 2000);
      assertEquals(mailsTo(stack, "past@example.test").length, 1);
    });

    await t.step("4. a 4xx is retried with backoff, then delivered once", () => outcome(retried));
    await t.step("5. 4xx on every attempt (PP_SMTP_MAX_ATTEMPTS=2): failed, no mail", () => outcome(exhausted));
    await t.step("8. scheduledAt 2 s ahead: nothing before, delivered just after", () => outcome(scheduled));
  } finally {
    await Promise.all([stack.stop(), fewRetries.stop()]);
  }
});

Deno.test(
  "sends scheduled beyond the horizon wait without a job, get it in time, and go out on time",
  opts,
  async (t) => {
    // A 2 s horizon: promote_scheduled then runs every second.
    const stack = await startStack({ env: { PP_SCHEDULE_HORIZON_S: "2" } });
    try {
      const tn = await stack.tenant();
      const at = Date.now() + 4500;
      const scheduledAt = new Date(at).toISOString();
      const deferred = (id: string) => stack.count(`select count(*) from sends where id = $1 and job_deferred`, [id]);
      const a = await send(stack, tn.key, { templateId: tn.templateId, to: "far-a@example.test", scheduledAt });
      const b = await send(stack, tn.key, { templateId: tn.templateId, to: "far-b@example.test", scheduledAt });

      await t.step("accepted as scheduled, with no delivery job yet", async () => {
        assertEquals([a.status, b.status], ["scheduled", "scheduled"]);
        assertEquals([await jobsWithKey(stack, a.id), await deferred(a.id)], [0, 1]);
      });

      await t.step("a deferred send can be cancelled: no job, no mail, quota given back", async () => {
        const r = await stack.api("POST", `/api/v1/sends/${b.id}/cancel`, { key: tn.key });
        assertEquals([r.status, r.body.status], [200, "cancelled"]);
        assertEquals(await used(stack, tn.key), 1);
      });

      await t.step("its job appears before its time, with run_at = scheduledAt", async () => {
        await waitFor(async () => await jobsWithKey(stack, a.id) === 1, 5000, "the promoted job");
        assert(Date.now() < at, "the job exists before the send's time");
        assertEquals(
          await stack.count(
            `select count(*) from graphile_worker.jobs where key = $1 and run_at = $2::timestamptz`,
            [`send:${a.id}`, scheduledAt],
          ),
          1,
        );
        assertEquals(await deferred(a.id), 0);
      });

      await t.step("delivered at its time, not before; the cancelled one never", async () => {
        assertEquals(mailsTo(stack, "far-a@example.test").length, 0, "nothing before the time");
        const done = await waitDelivered(stack, tn.key, a.id, 8000);
        assert(Date.parse(done.sentAt) >= at, `sent at ${done.sentAt}, before ${scheduledAt}`);
        assert(Date.parse(done.deliveredAt) <= at + 2000, `delivered at ${done.deliveredAt}, > 2 s late`);
        assertEquals(mailsTo(stack, "far-a@example.test").length, 1);
        await sleep(500);
        assertEquals(mailsTo(stack, "far-b@example.test").length, 0);
        assertEquals([await jobsWithKey(stack, b.id), await deferred(b.id)], [0, 0], "the cancelled send is unmarked");
        assertEquals((await getSend(stack, tn.key, b.id)).status, "cancelled");
      });
    } finally {
      await stack.stop();
    }
  },
);

Deno.test("delivery without SMTP_URL: LIVE mail is written to the outbox", opts, async (t) => {
  const stack = await startStack({ smtp: false });
  try {
    await t.step("6. the .eml holds the personalized message; the sink gets nothing", async () => {
      const tn = await stack.tenant();
      const to = "outbox-buyer@example.test";
      const s = await send(stack, tn.key, {
        templateId: tn.templateId,
        to,
        personalizations: { order_id: "OB-7", first_name: "Olga" },
      });
      assertEquals(s.sandbox, false);
      const done = await waitDelivered(stack, tn.key, s.id);
      assertEquals(types(done), ["queued", "sent", "delivered"]);
      const eml = await Deno.readTextFile(`${stack.dataDir}/outbox/${s.id}.eml`);
      assertMatch(eml, /^Subject: Order OB-7 confirmed\r?$/m);
      assertMatch(eml, /^To: outbox-buyer@example\.test\r?$/m);
      assertMatch(eml, /^From: Shop <orders@shop\.test>\r?$/m);
      assertMatch(eml, new RegExp(`^Message-ID: ${s.messageId.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")}\\r?$`, "m"));
      assertMatch(eml, /Hi Olga, order OB-7/);
      assertEquals(stack.sink.messages.length, 0);
    });
  } finally {
    await stack.stop();
  }
});

Deno.test("a relay refusing the sender (5xx to MAIL FROM) fails the send, not the contact", opts, async () => {
  const stack = await startStack();
  try {
    const tenant = await stack.tenant();
    stack.sink.replyMailFrom = () => ({ code: 553, message: "5.7.1 Sender address rejected: not owned by user" });
    const accepted = await send(stack, tenant.key, { templateId: tenant.templateId, to: "innocent@example.test" });
    const s = await waitForOutcome(stack, tenant.key, accepted.id);
    assertEquals(s.status, "failed");
    assertEquals(s.error.code, "smtp_553");
    assertEquals(types(s), ["queued", "failed"]);
    assertEquals((await contactByEmail(stack, tenant.key, "innocent@example.test")).status, "SUBSCRIBED");
    assertEquals(stack.sink.messages.length, 0);
  } finally {
    await stack.stop();
  }
});
