/**
 * Hostile reports (issue 11, points 4 and 5): DSNs and ARF reports built to stall the
 * parser or to multiply events, mailed to the real inbound SMTP listener and posted to the
 * signed webhooks of a running service; and reputation that counts only live sends inside
 * its window. Real SMTP both ways, real HTTP, real Postgres.
 */
import { parseReport } from "../src/inbound/parse.ts";
import { assert, assertEquals, assertMatch } from "./assert.ts";
import {
  accountState,
  ADMIN_TOKEN,
  contactStatus,
  deliverSent,
  headerBlock,
  INBOUND,
  type Json,
  opts,
  postSigned,
  report,
  sendBatchAndWait,
  type Stack,
  startStack,
  untilPaused,
  waitFor,
  waitForStatus,
  whileHealthy,
} from "./helpers.ts";

const { secret: SECRET, bounceDomain: BOUNCE_DOMAIN, env: ENV } = INBOUND;

/** One DSN recipient group (RFC 3464). */
function group(recipient: string, action = "failed", status = "5.1.1"): string {
  return [
    `Final-Recipient: rfc822; ${recipient}`,
    `Action: ${action}`,
    `Status: ${status}`,
    `Diagnostic-Code: smtp; 550 ${status} <${recipient}>: Recipient address rejected`,
  ].join("\r\n");
}

/** A DSN about one of our mails: the groups given, the returned original's headers. */
function dsn(o: {
  to: string;
  groups: string[];
  arrivalDate?: string;
  headers?: string[];
  human?: string;
  original: string;
}): string {
  return [
    "From: MAILER-DAEMON@mx.example.test",
    `To: ${o.to}`,
    "Subject: Undelivered Mail Returned to Sender",
    "Date: Mon, 01 Jan 2024 10:00:00 +0000",
    ...(o.headers ?? []),
    "MIME-Version: 1.0",
    'Content-Type: multipart/report; report-type=delivery-status; boundary="DSN-B"',
    "",
    "--DSN-B",
    "Content-Type: text/plain; charset=us-ascii",
    "",
    o.human ?? "Your message could not be delivered.",
    "",
    "--DSN-B",
    "Content-Type: message/delivery-status",
    "",
    "Reporting-MTA: dns; mx.example.test",
    `Arrival-Date: ${o.arrivalDate ?? "Mon, 01 Jan 2024 09:59:58 +0000"}`,
    "",
    o.groups.join("\r\n\r\n"),
    "",
    "--DSN-B",
    "Content-Type: text/rfc822-headers",
    "",
    o.original,
    "",
    "--DSN-B--",
    "",
  ].join("\r\n");
}

/**
 * Waits until no `record_event` or `reputation_check` job is left, due or not (every report
 * is written and judged; a check runs 2 s after the bounce or complaint that queued it).
 */
async function drained(stack: Stack): Promise<void> {
  await waitFor(
    async () =>
      (await stack.count(
        `select count(*) from graphile_worker.jobs where task_identifier in ('record_event', 'reputation_check')`,
      )) === 0,
    10_000,
    "record_event and reputation_check jobs to finish",
  );
}

/** Events of `type` recorded for a send. */
function eventsOf(stack: Stack, sendId: string, type: string): Promise<number> {
  return stack.count("select count(*) from email_events where send_id = $1 and type = $2", [sendId, type]);
}

Deno.test("parseReport: linear time, capped fields, encoded and nested parts", async (t) => {
  const original = "Message-ID: <0190aaaa-bbbb-7ccc-8ddd-eeeeffff0000@shop.test>\r\nSubject: x";
  const fields = (recipient: string, diagnostic: string) =>
    `Reporting-MTA: dns; mx\r\n\r\nFinal-Recipient: rfc822; ${recipient}\r\nAction: failed\r\nStatus: 5.1.1\r\n` +
    `Diagnostic-Code: smtp; ${diagnostic}\r\n`;
  /** A DSN whose delivery-status part is `body` in transfer encoding `encoding`, optionally forwarded. */
  const wrapped = (body: string, encoding: string, forwarded = false) => {
    const report = [
      'Content-Type: multipart/report; report-type=delivery-status; boundary="in"',
      "",
      "--in",
      "Content-Type: message/delivery-status",
      `Content-Transfer-Encoding: ${encoding}`,
      "",
      body,
      "--in",
      "Content-Type: message/rfc822",
      "",
      original,
      "",
      "body",
      "--in--",
      "",
    ].join("\r\n");
    const date = "Date: Tue, 02 Jan 2024 10:00:00 +0000\r\n";
    if (!forwarded) return date + report;
    return `${date}Content-Type: multipart/mixed; boundary=out\r\n\r\n--out\r\n\r\nfwd\r\n--out\r\n${report}--out--\r\n`;
  };

  await t.step("base64 and quoted-printable parts, a report inside a forwarded message", async () => {
    const body = fields("<Buyer@Example.test>", "550 caf\u00e9 unknown");
    const b64 = btoa(String.fromCharCode(...new TextEncoder().encode(body))).replace(/(.{76})/g, "$1\r\n");
    const qp = body.replace("caf\u00e9", "caf=C3=A9").replace("smtp; 550", "smtp; 5=\r\n50");
    for (
      const raw of [
        wrapped(body, "7bit"),
        wrapped(b64, "base64"),
        wrapped(qp, "quoted-printable"),
        wrapped(body, "7bit", true),
      ]
    ) {
      const [r, ...rest] = await parseReport(raw);
      assertEquals(rest, []);
      assertEquals([r.type, r.bounceType, r.status, r.recipient, r.diagnostic], [
        "bounced",
        "hard",
        "5.1.1",
        "buyer@example.test",
        "550 caf\u00e9 unknown",
      ]);
      assertEquals(r.original.messageId, "<0190aaaa-bbbb-7ccc-8ddd-eeeeffff0000@shop.test>");
      assertEquals(r.occurredAt, "2024-01-02T10:00:00.000Z");
    }
  });

  await t.step("hostile fields are read in linear time and capped", async () => {
    const groups = Array.from({ length: 5000 }, () => fields("a@b.test", "550 x").split("\r\n\r\n")[1]).join("\r\n");
    for (
      const [what, raw] of [
        [
          "Arrival-Date of 300,000 '('",
          wrapped(`Arrival-Date: ${"(".repeat(300_000)}\r\n\r\n${fields("a@b", "x")}`, "7bit"),
        ],
        ["a 5 MB Diagnostic-Code", wrapped(fields("a@b", "y".repeat(5_000_000)), "7bit")],
        ["5,000 recipient groups", wrapped(`Reporting-MTA: dns; mx\r\n\r\n${groups}`, "7bit")],
        ["1,000,000 folded lines", wrapped(fields("a@b", `z${"\r\n (".repeat(1_000_000)}`), "7bit")],
        [
          "300,000 Content-Type lines",
          "Content-Type: message/delivery-status\r\n\r\nStatus: 5.1.1\r\n".repeat(300_000),
        ],
      ] as const
    ) {
      const t0 = performance.now();
      const items = await parseReport(raw);
      const ms = performance.now() - t0;
      assert(ms < 1000, `${what}: ${ms.toFixed(0)} ms`);
      assert(items.length <= 200, `${what}: ${items.length} items`);
      for (const i of items) assert((i.diagnostic?.length ?? 0) <= 1000, `${what}: diagnostic capped`);
    }
  });
});

Deno.test("hostile DSN and ARF reports: linear parsing, one event per send and type", opts, async (t) => {
  const stack = await startStack({ env: ENV });
  try {
    const tenant = await stack.tenant();
    const port = stack.service.inboundSmtpPort!;

    await t.step(
      "Arrival-Date of 300,000 '(', 2 MB lines, a 2 MB header: fast, /healthz < 1 s, one bounce",
      async () => {
        const to = "hostile@example.test";
        const { send, mail } = await deliverSent(stack, tenant, to);
        const raw = dsn({
          to: mail.from,
          arrivalDate: "(".repeat(300_000),
          headers: [
            `X-Long: ${"x".repeat(2_000_000)}`,
            ...Array.from({ length: 20_000 }, (_, i) => `X-Filler-${i}: ${"(".repeat(40)} ${"y".repeat(40)}`),
            `Comments: a${"\r\n (".repeat(50_000)}`,
          ],
          human: `${"(".repeat(2_000_000)}\r\n${"-".repeat(1_000_000)}`,
          groups: [group(to)],
          original: headerBlock(mail),
        });
        assert(raw.length > 6_000_000);
        const { value: answer, ms } = await whileHealthy(stack, () => report(port, mail.from, raw));
        assertMatch(answer, /^250/);
        assert(ms < 3000, `the hostile DSN took ${ms.toFixed(0)} ms`);
        const s = await waitForStatus(stack, tenant.key, send.id, ["bounced"]);
        await drained(stack);
        assertEquals(await eventsOf(stack, send.id, "bounced"), 1);
        const ev = s.events.find((e: Json) => e.type === "bounced");
        assertEquals([ev.data.status, ev.data.bounceType, ev.data.source], ["5.1.1", "hard", "dsn"]);
        // The unreadable Arrival-Date falls back to the report's Date header.
        assertEquals(ev.occurredAt, "2024-01-01T10:00:00.000Z");
      },
    );

    await t.step("a DSN with 5,000 recipient groups naming one send records exactly one bounce", async () => {
      const to = "many-groups@example.test";
      const { send, mail } = await deliverSent(stack, tenant, to);
      const groups = Array.from(
        { length: 5000 },
        (_, i) => group(to, i % 2 ? "failed" : "delayed", i % 2 ? "5.1.1" : "4.2.2"),
      );
      const { value: answer } = await whileHealthy(
        stack,
        () => report(port, mail.from, dsn({ to: mail.from, groups, original: headerBlock(mail) })),
      );
      assertMatch(answer, /^250/);
      await waitForStatus(stack, tenant.key, send.id, ["bounced"]);
      await drained(stack);
      assertEquals(await eventsOf(stack, send.id, "bounced"), 1, "one event per (send, type)");
      const r = await stack.pg.query("select data from email_events where send_id = $1 and type = 'bounced'", [
        send.id,
      ]);
      assertEquals(r.rows[0].data.bounceType, "hard", "a hard bounce wins over the soft ones");
    });

    await t.step("a group whose Final-Recipient is not the send's address records nothing", async () => {
      const to = "owner@example.test";
      const { send, mail } = await deliverSent(stack, tenant, to);
      const before = await stack.count("select count(*) from email_events where send_id = $1", [send.id]);
      const answer = await report(
        port,
        mail.from,
        dsn({ to: mail.from, groups: [group("someone-else@example.test")], original: headerBlock(mail) }),
      );
      assertMatch(answer, /^250/);
      // A group without any Final-Recipient is not the send's either.
      const noRecipient = dsn({
        to: mail.from,
        groups: ["Action: failed\r\nStatus: 5.1.1"],
        original: headerBlock(mail),
      });
      assertMatch(await report(port, mail.from, noRecipient), /^250/);
      await new Promise((r) => setTimeout(r, 300));
      await drained(stack);
      assertEquals(await stack.count("select count(*) from email_events where send_id = $1", [send.id]), before);
      assertEquals((await waitForStatus(stack, tenant.key, send.id, ["sent"])).status, "sent");
      assertEquals(await contactStatus(stack, tenant.key, to), "SUBSCRIBED");

      // Next to a foreign group, the send's own group is what is recorded (here a soft bounce).
      await report(
        port,
        mail.from,
        dsn({
          to: mail.from,
          groups: [group("cc-person@example.test"), group(to.toUpperCase(), "delayed", "4.2.2")],
          original: headerBlock(mail),
        }),
      );
      await waitFor(async () => (await eventsOf(stack, send.id, "bounced")) === 1, 5000, "the soft bounce");
      await drained(stack);
      const r = await stack.pg.query("select data from email_events where send_id = $1 and type = 'bounced'", [
        send.id,
      ]);
      assertEquals([r.rows.length, r.rows[0].data.bounceType, r.rows[0].data.status], [1, "soft", "4.2.2"]);
      assertEquals((await waitForStatus(stack, tenant.key, send.id, ["sent"])).status, "sent");
    });

    await t.step("a hostile ARF (5,000 feedback parts, 300,000 '(') records one complaint", async () => {
      const to = "arf-target@example.test";
      const { send, mail } = await deliverSent(stack, tenant, to);
      const feedback = (arrival: string) =>
        [
          "--ARF-B",
          "Content-Type: message/feedback-report",
          "",
          "Feedback-Type: abuse",
          "User-Agent: SomeGenerator/1.0",
          "Version: 1",
          `Original-Mail-From: <${mail.from}>`,
          `Arrival-Date: ${arrival}`,
          "",
        ].join("\r\n");
      const raw = [
        "From: <staff@isp.example.test>",
        `To: <fbl@${BOUNCE_DOMAIN}>`,
        "Subject: FW: Order confirmed",
        `Date: ${"(".repeat(300_000)}`,
        "MIME-Version: 1.0",
        'Content-Type: multipart/report; report-type=feedback-report; boundary="ARF-B"',
        "",
        "--ARF-B",
        "Content-Type: text/plain",
        "",
        `An abuse report. ${"(".repeat(1_000_000)}`,
        "",
        feedback("(".repeat(300_000)),
        ...Array.from({ length: 5000 }, () => feedback("Thu, 8 Mar 2024 14:00:00 EDT")),
        "--ARF-B",
        "Content-Type: text/rfc822-headers",
        "",
        headerBlock(mail),
        "",
        "--ARF-B--",
        "",
      ].join("\r\n");
      const { value: answer, ms } = await whileHealthy(stack, () => report(port, `fbl@${BOUNCE_DOMAIN}`, raw));
      assertMatch(answer, /^250/);
      assert(ms < 3000, `the hostile ARF took ${ms.toFixed(0)} ms`);
      await waitFor(async () => (await eventsOf(stack, send.id, "complained")) > 0, 5000, "the complaint");
      await drained(stack);
      assertEquals(await eventsOf(stack, send.id, "complained"), 1);
      assertEquals(await contactStatus(stack, tenant.key, to), "COMPLAINED");
    });

    await t.step("webhooks: 100 events or 200 SES recipients naming one send are one event", async () => {
      const a = await deliverSent(stack, tenant, "hook-many@example.test");
      const events = Array.from({ length: 100 }, () => ({ type: "bounced", sendId: a.send.id, status: "5.1.1" }));
      const r = await postSigned(stack, "/api/v1/events/inbound", { events });
      assertEquals(r.status, 202, JSON.stringify(r.body));
      assertEquals(r.body, { accepted: 1, ignored: 99 });

      const b = await deliverSent(stack, tenant, "ses-many@example.test");
      const ses = (recipient: string, n: number) => ({
        notificationType: "Bounce",
        bounce: {
          bounceType: "Permanent",
          bouncedRecipients: Array.from({ length: n }, () => ({ emailAddress: recipient, status: "5.1.1" })),
          timestamp: new Date().toISOString(),
        },
        mail: { messageId: "ses-id", headers: [{ name: "X-PP-Send-Id", value: b.send.id }] },
      });
      const other = await postSigned(stack, "/api/v1/events/inbound/ses", ses("not-the-recipient@example.test", 5));
      assertEquals(other.body, { accepted: 0, ignored: 5 }, "another recipient's bounce is not this send's");
      const s = await postSigned(stack, "/api/v1/events/inbound/ses", ses("ses-many@example.test", 200));
      assertEquals(s.status, 202, JSON.stringify(s.body));
      assertEquals(s.body, { accepted: 1, ignored: 199 });
      await waitForStatus(stack, tenant.key, b.send.id, ["bounced"]);
      await drained(stack);
      assertEquals(await eventsOf(stack, a.send.id, "bounced"), 1);
      assertEquals(await eventsOf(stack, b.send.id, "bounced"), 1);
    });
  } finally {
    await stack.stop();
  }
});

Deno.test("a report that passes the parse time limit is dropped; the service keeps answering", opts, async (t) => {
  const stack = await startStack({ env: { ...ENV, PP_INBOUND_PARSE_TIMEOUT_MS: "50" } });
  try {
    const tenant = await stack.tenant();
    const port = stack.service.inboundSmtpPort!;
    const to = "slow@example.test";
    const { send, mail } = await deliverSent(stack, tenant, to);

    await t.step("a 9 MB report of field lines takes longer than 50 ms: 250, nothing recorded", async () => {
      // ~700,000 short lines that each look like a DSN field: linear, but more than 50 ms.
      const raw = dsn({
        to: mail.from,
        groups: [group(to)],
        original: headerBlock(mail),
        human: "Status: 5.1.1\r\n".repeat(600_000),
      });
      const { value: answer } = await whileHealthy(stack, () => report(port, mail.from, raw));
      assertMatch(answer, /^250/, "dropped, not refused: the reporter would only retry it");
      await new Promise((r) => setTimeout(r, 300));
      await drained(stack);
      assertEquals(await eventsOf(stack, send.id, "bounced"), 0);
    });

    await t.step("the next report is parsed by a fresh worker and recorded", async () => {
      const answer = await report(
        port,
        mail.from,
        dsn({ to: mail.from, groups: [group(to)], original: headerBlock(mail) }),
      );
      assertMatch(answer, /^250/);
      await waitForStatus(stack, tenant.key, send.id, ["bounced"]);
      const h = await fetch(`${stack.url}/healthz`);
      assertEquals(h.status, 200);
      await h.body?.cancel();
    });
  } finally {
    await stack.stop();
  }
});

// ---------------------------------------------------------------------------------------
// Reputation.

Deno.test("reputation counts live sends inside the window only", opts, async (t) => {
  const stack = await startStack({ env: { PP_INBOUND_SECRET: SECRET } });
  stack.sink.reply = (rcpt) => rcpt.startsWith("bad-") ? { code: 550, message: "5.1.1 No such user" } : null;
  try {
    await t.step("a complaint about a send older than 7 days does not count", async () => {
      const tenant = await stack.tenant({ domain: "window.test" });
      const [old] = await sendBatchAndWait(stack, tenant.key, tenant.templateId, "old", 1);
      // Eight days ago (the clock of the rows is moved, nothing waits).
      await stack.pg.query(
        `update sends set created_at = created_at - interval '8 days', sent_at = sent_at - interval '8 days'
         where id = $1`,
        [old],
      );
      const recent = await sendBatchAndWait(stack, tenant.key, tenant.templateId, "reader", 100);
      const r = await postSigned(stack, "/api/v1/events/inbound", { events: [{ type: "complained", sendId: old }] });
      assertEquals(r.body, { accepted: 1, ignored: 0 });
      await waitFor(async () => (await eventsOf(stack, old, "complained")) === 1, 5000, "the complaint");
      await drained(stack);
      const a = await accountState(stack, tenant.key);
      assertEquals(a.reputation.sends, 100);
      assertEquals(a.reputation.complaints, 0, "the complained send is outside the window");
      assertEquals(a.sendingEnabled, true);

      // The same complaint about a send inside the window: 1 in 100, paused.
      await postSigned(stack, "/api/v1/events/inbound", { events: [{ type: "complained", sendId: recent[3] }] });
      const paused = await untilPaused(stack, tenant.key);
      assertEquals(paused.reputation.complaints, 1);
      assertEquals(paused.pausedBy, "reputation");
    });

    await t.step("1,000 sandbox sends do not dilute 10 bounces in 100 live sends: paused", async () => {
      const tenant = await stack.tenant({ domain: "sandboxed.test" });
      const test = await stack.gql(
        `mutation($i: CreateApiKeyInput!) { createApiKey(input: $i) { key } }`,
        { i: { accountId: tenant.accountId, mode: "TEST" } },
        ADMIN_TOKEN,
      );
      const testKey = test.body.data.createApiKey.key;
      assertMatch(testKey, /^pp_test_/);
      await sendBatchAndWait(stack, testKey, tenant.templateId, "sandbox", 1000);
      assertEquals(
        await stack.count(
          "select count(*) from sends where account_id = $1 and sandbox and status in ('sent', 'delivered')",
          [
            tenant.accountId,
          ],
        ),
        1000,
      );
      await sendBatchAndWait(stack, tenant.key, tenant.templateId, "fine", 90);
      await sendBatchAndWait(stack, tenant.key, tenant.templateId, "bad", 10);
      const a = await untilPaused(stack, tenant.key);
      assertEquals([a.reputation.sends, a.reputation.bounces, a.reputation.bounceRate], [100, 10, 0.1]);
      assertEquals(a.pausedBy, "reputation");
    });
  } finally {
    await stack.stop();
  }
});
