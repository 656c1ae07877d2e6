/**
 * Bounces and complaints after the SMTP conversation: DSNs (RFC 3464) and ARF reports
 * (RFC 5965) mailed to the inbound SMTP listener, the signed JSON webhook and the SES/SNS
 * adapter. Real SMTP both ways (the sink receives our mail with its VERP return path; nodemailer
 * carries the reports to the listener), real HTTP, real Postgres.
 */
import { signToken } from "../src/mail/tracking.ts";
import { parseReport, resolveSend } from "../src/inbound/parse.ts";
import { signatureHeader, signatureProblem } from "../src/inbound/webhook.ts";
import { assert, assertEquals, assertMatch } from "./assert.ts";
import {
  contactStatus,
  deliverSent,
  getSend,
  headerBlock,
  INBOUND,
  type Json,
  opts,
  postSigned,
  type ReceivedMail,
  report,
  type Stack,
  startStack,
  waitFor,
  waitForEvent,
  waitForStatus,
} from "./helpers.ts";

const { secret: SECRET, bounceDomain: BOUNCE_DOMAIN, env: ENV } = INBOUND;

// ---------------------------------------------------------------------------------------
// Report fixtures, written by hand after RFC 3464 (DSN) and RFC 5965 (ARF).

/** A DSN as Postfix writes it: human part, delivery-status part, the returned message. */
function dsn(o: {
  to: string;
  action: string;
  status: string;
  diagnostic?: string;
  original?: string;
  recipient?: string;
}): string {
  const recipient = o.recipient ?? "buyer@example.test";
  return [
    "Return-Path: <>",
    "From: MAILER-DAEMON@mx.example.test (Mail Delivery System)",
    `To: ${o.to}`,
    "Subject: Undelivered Mail Returned to Sender",
    "Date: Mon, 01 Jan 2024 10:00:00 +0000",
    "Message-ID: <20240101100000.DSN1@mx.example.test>",
    "Auto-Submitted: auto-replied",
    "MIME-Version: 1.0",
    'Content-Type: multipart/report; report-type=delivery-status; boundary="DSN-BOUNDARY"',
    "",
    "This is a MIME-encapsulated message.",
    "",
    "--DSN-BOUNDARY",
    "Content-Description: Notification",
    "Content-Type: text/plain; charset=us-ascii",
    "",
    "This is the mail system at host mx.example.test.",
    "",
    "I'm sorry to have to inform you that your message could not",
    "be delivered to one or more recipients.",
    "",
    "--DSN-BOUNDARY",
    "Content-Description: Delivery report",
    "Content-Type: message/delivery-status",
    "",
    "Reporting-MTA: dns; mx.example.test",
    "X-Postfix-Queue-ID: 4F2C71C0A2",
    "Arrival-Date: Mon, 01 Jan 2024 09:59:58 +0000",
    "",
    `Final-Recipient: rfc822; ${recipient}`,
    `Original-Recipient: rfc822;${recipient}`,
    `Action: ${o.action}`,
    `Status: ${o.status}`,
    "Remote-MTA: dns; mx2.example.test",
    `Diagnostic-Code: smtp; ${o.diagnostic ?? "550 5.1.1 <buyer@example.test>: Recipient address"}`,
    "    rejected: User unknown in virtual mailbox table",
    "Last-Attempt-Date: Mon, 01 Jan 2024 10:00:00 +0000",
    "",
    "--DSN-BOUNDARY",
    "Content-Description: Undelivered Message",
    "Content-Type: message/rfc822",
    "",
    (o.original ?? "From: someone@else.test\r\nSubject: unrelated\r\n\r\nbody\r\n").replace(/\r?\n$/, ""),
    "",
    "--DSN-BOUNDARY--",
    "",
  ].join("\r\n");
}

/** An ARF report as a mailbox provider's feedback loop sends it: the original headers only. */
function arf(o: { to: string; feedbackType?: string; headers: string[]; originalMailFrom?: string }): string {
  return [
    "From: <staff@isp.example.test>",
    `To: <${o.to}>`,
    "Subject: FW: Order confirmed",
    "Date: Thu, 08 Mar 2024 14:00:00 -0500",
    "Message-ID: <433689.81121.example@isp.example.test>",
    "MIME-Version: 1.0",
    'Content-Type: multipart/report; report-type=feedback-report; boundary="ARF-BOUNDARY"',
    "",
    "--ARF-BOUNDARY",
    'Content-Type: text/plain; charset="US-ASCII"',
    "Content-Transfer-Encoding: 7bit",
    "",
    "This is an email abuse report for an email message received from IP",
    "192.0.2.1 on Thu, 8 Mar 2024 14:00:00 EDT.",
    "",
    "--ARF-BOUNDARY",
    "Content-Type: message/feedback-report",
    "",
    `Feedback-Type: ${o.feedbackType ?? "abuse"}`,
    "User-Agent: SomeGenerator/1.0",
    "Version: 1",
    ...(o.originalMailFrom ? [`Original-Mail-From: <${o.originalMailFrom}>`] : []),
    "Original-Rcpt-To: <buyer@example.test>",
    "Arrival-Date: Thu, 8 Mar 2024 14:00:00 EDT",
    "Reporting-MTA: dns; mail.isp.example.test",
    "Source-IP: 192.0.2.1",
    "",
    "--ARF-BOUNDARY",
    "Content-Type: text/rfc822-headers",
    "",
    ...o.headers,
    "",
    "--ARF-BOUNDARY--",
    "",
  ].join("\r\n");
}

// ---------------------------------------------------------------------------------------
// Stack helpers.

/**
 * Mails a DSN about `mail` (our message to `recipient`) to its VERP return path, the message
 * returned in it, as the recipient's MTA would; the listener's SMTP answer.
 */
function bounceReport(
  port: number,
  mail: ReceivedMail,
  recipient: string,
  o: { action: string; status: string; diagnostic?: string },
): Promise<string> {
  return report(port, mail.from, dsn({ to: mail.from, recipient, original: mail.raw, ...o }));
}

/** Pending `record_event` jobs. */
function recordJobs(stack: Stack): Promise<number> {
  return stack.count(
    `select count(*) from graphile_worker.jobs where task_identifier = 'record_event'`,
  );
}

function eventCount(stack: Stack): Promise<number> {
  return stack.count(`select count(*) from email_events`);
}

/** Nothing is queued or recorded by what `fn` does (it finishes once the server answered). */
async function assertNothingRecorded(stack: Stack, fn: () => Promise<unknown>): Promise<void> {
  await waitFor(async () => (await recordJobs(stack)) === 0, 5000, "earlier record_event jobs to finish");
  const before = await eventCount(stack);
  await fn();
  assertEquals(await recordJobs(stack), 0, "no record_event job was queued");
  await new Promise((r) => setTimeout(r, 150));
  assertEquals(await eventCount(stack), before, "no event was recorded");
}

/** An SNS envelope around an SES notification. */
function sns(message: Record<string, unknown>): Record<string, unknown> {
  return {
    Type: "Notification",
    MessageId: crypto.randomUUID(),
    TopicArn: "arn:aws:sns:eu-west-1:123456789012:ses-events",
    Message: JSON.stringify(message),
    Timestamp: new Date().toISOString(),
    SignatureVersion: "1",
    Signature: "not-checked-here",
    SigningCertURL: "https://sns.eu-west-1.amazonaws.com/SimpleNotificationService-x.pem",
  };
}

/** The `mail` object of an SES notification for one of our mails. */
function sesMail(m: ReceivedMail, o: { sendIdHeader?: boolean; messageIdHeader?: boolean } = {}) {
  const headers = [{ name: "From", value: "Shop <orders@shop.test>" }, { name: "To", value: m.to[0] }];
  if (o.messageIdHeader !== false) headers.push({ name: "Message-ID", value: m.messageId });
  if (o.sendIdHeader !== false) headers.push({ name: "X-PP-Send-Id", value: String(m.headers.get("x-pp-send-id")) });
  return {
    timestamp: new Date().toISOString(),
    source: "orders@shop.test",
    messageId: "0102018c0c0d0e0f-11111111-2222-3333-4444-555555555555-000000",
    destination: m.to,
    headersTruncated: false,
    headers,
    commonHeaders: { from: ["Shop <orders@shop.test>"], to: m.to, messageId: m.messageId, subject: m.subject },
  };
}

// ---------------------------------------------------------------------------------------

Deno.test("parseReport reads DSNs and ARF reports", async (t) => {
  const sendId = "0190aaaa-bbbb-7ccc-8ddd-eeeeffff0000";
  const original =
    `From: Shop <orders@shop.test>\r\nMessage-ID: <${sendId}@shop.test>\r\nX-PP-Send-Id: ${sendId}\r\n\r\nHi\r\n`;
  const secret = "a-test-secret-0123456789";

  await t.step("a hard DSN: one item per recipient with action, status, diagnostic and dates", async () => {
    const token = signToken(secret, "bounce", sendId);
    const [r, ...rest] = await parseReport(
      dsn({ to: "x", action: "failed", status: "5.1.1", original }),
      { envelopeTo: [`bounces+${token}@${BOUNCE_DOMAIN}`] },
    );
    assertEquals(rest, []);
    assertEquals(r.source, "dsn");
    assertEquals(r.type, "bounced");
    assertEquals(r.bounceType, "hard");
    assertEquals(r.action, "failed");
    assertEquals(r.status, "5.1.1");
    assertEquals(
      r.diagnostic,
      "550 5.1.1 <buyer@example.test>: Recipient address rejected: User unknown in virtual mailbox table",
    );
    assertEquals(r.reporter, "mx.example.test");
    assertEquals(r.remoteMta, "mx2.example.test");
    assertEquals(r.occurredAt, "2024-01-01T10:00:00.000Z", "Last-Attempt-Date");
    assertEquals(r.original, { sendId, messageId: `<${sendId}@shop.test>` });
    assertEquals(resolveSend(r, secret), { sendId, via: "verp", badToken: false });
  });

  await t.step("a forged or foreign VERP token falls back to the returned headers", async () => {
    const forged = signToken("another-secret-0123456789", "bounce", "0190aaaa-bbbb-7ccc-8ddd-eeeeffff0001");
    const [r] = await parseReport(dsn({ to: "x", action: "failed", status: "5.1.1", original }), {
      envelopeTo: [`bounces+${forged}@${BOUNCE_DOMAIN}`],
    });
    assertEquals(resolveSend(r, secret), { sendId, via: "x-pp-send-id", badToken: true });
    const [bare] = await parseReport(dsn({ to: "x", action: "failed", status: "5.1.1" }), {
      envelopeTo: [`bounces+${forged}@${BOUNCE_DOMAIN}`],
    });
    assertEquals(resolveSend(bare, secret), { sendId: null, via: null, badToken: true });
    const onlyMessageId = original.replace(/^X-PP-Send-Id:.*\r\n/m, "");
    const [m] = await parseReport(dsn({ to: "x", action: "failed", status: "5.1.1", original: onlyMessageId }));
    assertEquals(resolveSend(m, secret), { sendId, via: "message-id", badToken: false });
  });

  await t.step("4.x.x and delayed are soft; delivered/relayed with 2.x.x are delivered", async () => {
    const soft = await parseReport(dsn({ to: "x", action: "delayed", status: "4.2.2", diagnostic: "452 4.2.2 full" }));
    assertEquals([soft[0].type, soft[0].bounceType, soft[0].status], ["bounced", "soft", "4.2.2"]);
    const failed4 = await parseReport(dsn({ to: "x", action: "failed", status: "4.4.7" }));
    assertEquals(failed4[0].bounceType, "soft");
    for (const action of ["delivered", "relayed", "expanded"]) {
      const [d] = await parseReport(dsn({ to: "x", action, status: "2.0.0", diagnostic: "250 2.0.0 Ok" }));
      assertEquals([d.type, d.bounceType], ["delivered", undefined], action);
    }
    assertEquals(await parseReport(dsn({ to: "x", action: "whatever", status: "5.1.1" })), []);
  });

  await t.step("a DSN with two recipients gives two items", async () => {
    const two = dsn({ to: "x", action: "failed", status: "5.1.1" }).replace(
      "Last-Attempt-Date: Mon, 01 Jan 2024 10:00:00 +0000\r\n",
      "Last-Attempt-Date: Mon, 01 Jan 2024 10:00:00 +0000\r\n\r\n" +
        "Final-Recipient: rfc822; other@example.test\r\nAction: delayed\r\nStatus: 4.4.1\r\n",
    );
    const items = await parseReport(two);
    assertEquals(items.map((i) => [i.type, i.bounceType, i.status]), [["bounced", "hard", "5.1.1"], [
      "bounced",
      "soft",
      "4.4.1",
    ]]);
  });

  await t.step("broken MIME (wrong boundary) is read from the raw text", async () => {
    const broken = dsn({ to: "x", action: "failed", status: "5.2.1", original }).replace(
      'boundary="DSN-BOUNDARY"',
      'boundary="SOMETHING-ELSE"',
    );
    const [r] = await parseReport(broken);
    assertEquals([r.type, r.bounceType, r.status], ["bounced", "hard", "5.2.1"]);
    assertEquals(r.original.sendId, sendId);
  });

  await t.step("ARF: abuse is a complaint, not-spam and auth-failure are not", async () => {
    const headers = [`Message-ID: <${sendId}@shop.test>`, "Subject: Order confirmed"];
    const [c] = await parseReport(arf({ to: "fbl@x", headers }));
    assertEquals([c.source, c.type, c.feedbackType], ["arf", "complained", "abuse"]);
    assertEquals(c.reporter, "SomeGenerator/1.0");
    assertEquals(resolveSend(c, secret), { sendId, via: "message-id", badToken: false });
    assertEquals(await parseReport(arf({ to: "fbl@x", headers, feedbackType: "not-spam" })), []);
    assertEquals(await parseReport(arf({ to: "fbl@x", headers, feedbackType: "auth-failure" })), []);
    const token = signToken(secret, "bounce", sendId);
    const [viaMailFrom] = await parseReport(
      arf({ to: "fbl@x", headers: ["Subject: x"], originalMailFrom: `bounces+${token}@${BOUNCE_DOMAIN}` }),
    );
    assertEquals(resolveSend(viaMailFrom, secret), { sendId, via: "verp", badToken: false });
  });

  await t.step("garbage and ordinary mail give nothing, never a throw", async () => {
    assertEquals(await parseReport(""), []);
    assertEquals(await parseReport(new Uint8Array([0xff, 0xfe, 0, 1, 2, 0x0d, 0x0a])), []);
    assertEquals(await parseReport("Subject: Out of office\r\n\r\nI am away. Status: 5.1.1\r\n"), []);
    assertEquals(
      await parseReport('Content-Type: multipart/report; report-type=delivery-status; boundary="x"\r\n\r\n--x\r\n'),
      [],
    );
  });
});

Deno.test("webhook signatures: Stripe-style t=…,v1=… over the raw body, 5 minutes", () => {
  const body = new TextEncoder().encode('{"events":[]}');
  const now = 1_700_000_000_000;
  const good = signatureHeader(SECRET, body, now / 1000);
  assertEquals(signatureProblem(SECRET, good, body, now), null);
  assertEquals(signatureProblem(SECRET, `${good},v1=${"0".repeat(64)}`, body, now), null, "any v1 may match");
  assertEquals(signatureProblem(SECRET, good, body, now + 299_000), null);
  assertMatch(signatureProblem(SECRET, good, body, now + 301_000)!, /5 minutes/);
  assertMatch(signatureProblem(SECRET, good, body, now - 301_000)!, /5 minutes/);
  assertMatch(signatureProblem(SECRET, good, new TextEncoder().encode('{"events":[1]}'), now)!, /does not match/);
  assertMatch(signatureProblem("another-secret-0123", good, body, now)!, /does not match/);
  assertMatch(signatureProblem(SECRET, null, body, now)!, /missing/);
  assertMatch(signatureProblem(SECRET, "v1=abc", body, now)!, /malformed/);
  assertMatch(signatureProblem(undefined, good, body, now)!, /PP_INBOUND_SECRET/);
});

Deno.test("bounces and complaints after the SMTP conversation", opts, async (t) => {
  const stack = await startStack({ env: ENV });
  const plain = await startStack(); // no inbound settings at all
  try {
    const tenant = await stack.tenant();
    const port = stack.service.inboundSmtpPort!;
    assert(port > 0, "the listener reports its real port");

    await t.step("outgoing mail carries the VERP return path", async () => {
      const { mail, send } = await deliverSent(stack, tenant, "verp-check@example.test");
      assertMatch(mail.from, /^bounces\+[A-Za-z0-9_-]{42}@bounces\.shop\.test$/);
      assertEquals(mail.headers.get("x-pp-send-id"), send.id);
    });

    await t.step("DSN 5.1.1 to the VERP address: hard bounce, contact BOUNCED", async () => {
      const to = "gone@example.test";
      const { send, mail } = await deliverSent(stack, tenant, to);
      const answer = await bounceReport(port, mail, to, { action: "failed", status: "5.1.1" });
      assertMatch(answer, /^250/);
      const s = await waitForStatus(stack, tenant.key, send.id, ["bounced"]);
      assert(s.bouncedAt);
      assertEquals(s.events.map((e: Json) => e.type), ["queued", "sent", "bounced"]);
      const ev = s.events[2].data;
      assertEquals(ev.bounceType, "hard");
      assertEquals(ev.source, "dsn");
      assertEquals(ev.via, "verp");
      assertEquals(ev.status, "5.1.1");
      assertEquals(ev.action, "failed");
      assertMatch(ev.diagnostic, /User unknown/);
      assertEquals(await contactStatus(stack, tenant.key, to), "BOUNCED");
      const again = await stack.api("POST", "/api/v1/sends", {
        key: tenant.key,
        body: { templateId: tenant.templateId, to },
      });
      assertEquals(again.body.status, "suppressed", "a bounced address is not mailed again");
    });

    await t.step("DSN 4.2.2 (delayed): soft bounce event, send and contact unchanged", async () => {
      const to = "full-mailbox@example.test";
      const { send, mail } = await deliverSent(stack, tenant, to);
      await bounceReport(port, mail, to, { action: "delayed", status: "4.2.2", diagnostic: "452 4.2.2 Mailbox full" });
      const s = await waitForEvent(stack, tenant.key, send.id, "bounced");
      assertEquals(s.status, "sent");
      assertEquals(s.bouncedAt, null);
      const ev = s.events.find((e: Json) => e.type === "bounced").data;
      assertEquals([ev.bounceType, ev.status, ev.source], ["soft", "4.2.2", "dsn"]);
      assertEquals(await contactStatus(stack, tenant.key, to), "SUBSCRIBED");
    });

    await t.step("DSN 2.0.0 (delivered): the sent send becomes delivered", async () => {
      const { send, mail } = await deliverSent(stack, tenant, "happy@example.test");
      await bounceReport(port, mail, "happy@example.test", {
        action: "delivered",
        status: "2.0.0",
        diagnostic: "250 2.0.0 Ok: queued",
      });
      const s = await waitForStatus(stack, tenant.key, send.id, ["delivered"]);
      assertEquals(s.deliveredAt, "2024-01-01T10:00:00.000Z", "the report's date");
      assertEquals(s.events.map((e: Json) => e.type), ["queued", "sent", "delivered"]);
      assertEquals(s.events[2].data.source, "dsn");
    });

    await t.step("ARF abuse report with the original headers (no VERP): complained, contact COMPLAINED", async () => {
      const to = "annoyed@example.test";
      const { send, mail } = await deliverSent(stack, tenant, to);
      const answer = await report(
        port,
        `fbl@${BOUNCE_DOMAIN}`,
        arf({ to: `fbl@${BOUNCE_DOMAIN}`, headers: headerBlock(mail).split(/\r?\n/) }),
      );
      assertMatch(answer, /^250/);
      const s = await waitForEvent(stack, tenant.key, send.id, "complained");
      const ev = s.events.find((e: Json) => e.type === "complained").data;
      assertEquals([ev.source, ev.feedbackType, ev.via], ["arf", "abuse", "x-pp-send-id"]);
      assertEquals(await contactStatus(stack, tenant.key, to), "COMPLAINED");
    });

    await t.step("ARF naming the send by Message-ID only", async () => {
      const { send, mail } = await deliverSent(stack, tenant, "annoyed-2@example.test");
      const headers = headerBlock(mail).split(/\r?\n/).filter((h) => !/^X-PP-Send-Id:/i.test(h));
      await report(port, `abuse@${BOUNCE_DOMAIN}`, arf({ to: `abuse@${BOUNCE_DOMAIN}`, headers }));
      const s = await waitForEvent(stack, tenant.key, send.id, "complained");
      assertEquals(s.events.find((e: Json) => e.type === "complained").data.via, "message-id");
    });

    await t.step("a tampered VERP token with no usable headers: dropped", async () => {
      const { mail } = await deliverSent(stack, tenant, "tamper@example.test");
      const token = mail.from.slice("bounces+".length, mail.from.indexOf("@"));
      // A middle character: the last one of a 42-character token also holds 4 padding bits,
      // so some edits there decode to the same bytes (and still verify).
      const tampered = `bounces+${token.slice(0, 10)}${token[10] === "A" ? "B" : "A"}${
        token.slice(11)
      }@${BOUNCE_DOMAIN}`;
      await assertNothingRecorded(stack, async () => {
        const answer = await report(port, tampered, dsn({ to: tampered, action: "failed", status: "5.1.1" }));
        assertMatch(answer, /^250/, "accepted and dropped");
      });
    });

    await t.step("malformed messages and unknown sends: 250, nothing recorded, the listener goes on", async () => {
      const verp = `bounces+${
        signToken(stack.service.deps.secrets.secret, "bounce", crypto.randomUUID())
      }@${BOUNCE_DOMAIN}`;
      await assertNothingRecorded(stack, async () => {
        assertMatch(await report(port, verp, "this is not a message at all\r\n\u0000\u0001\r\n"), /^250/);
        assertMatch(
          await report(
            port,
            verp,
            'Content-Type: multipart/report; report-type=delivery-status; boundary="b"\r\n\r\n--b\r\n',
          ),
          /^250/,
        );
        assertMatch(await report(port, verp, "Subject: Out of office\r\n\r\nBack on Monday.\r\n"), /^250/);
        // A genuine token for a send that does not exist, and headers naming an unknown send.
        assertMatch(await report(port, verp, dsn({ to: verp, action: "failed", status: "5.1.1" })), /^250/);
        const unknown = crypto.randomUUID();
        assertMatch(
          await report(
            port,
            `fbl@${BOUNCE_DOMAIN}`,
            arf({ to: "fbl", headers: [`X-PP-Send-Id: ${unknown}`, `Message-ID: <${unknown}@shop.test>`] }),
          ),
          /^250/,
        );
      });
      // Still listening and still right.
      const { send, mail } = await deliverSent(stack, tenant, "after-garbage@example.test");
      await bounceReport(port, mail, "after-garbage@example.test", { action: "failed", status: "5.7.1" });
      assertEquals((await waitForStatus(stack, tenant.key, send.id, ["bounced"])).status, "bounced");
    });

    await t.step("recipients outside the bounce domain are refused (no relaying)", async () => {
      let err: Json = null;
      await report(port, "someone@elsewhere.test", "Subject: x\r\n\r\ny\r\n").catch((e) => err = e);
      assert(err, "refused");
      assertEquals(err.responseCode, 550);
    });

    await t.step("webhook: a signed batch is recorded; unknown send ids are counted as ignored", async () => {
      const a = await deliverSent(stack, tenant, "hook-bounce@example.test");
      const b = await deliverSent(stack, tenant, "hook-delivered@example.test");
      const c = await deliverSent(stack, tenant, "hook-soft@example.test");
      const r = await postSigned(stack, "/api/v1/events/inbound", {
        events: [
          { type: "bounced", sendId: a.send.id, status: "5.1.1", diagnostic: "550 5.1.1 no such user" },
          { type: "delivered", messageId: b.send.messageId, occurredAt: "2024-02-02T12:00:00+01:00" },
          { type: "bounced", sendId: c.send.id, status: "4.2.2" },
          { type: "complained", sendId: crypto.randomUUID() },
          { type: "delivered", messageId: "<not-one-of-ours@elsewhere.test>" },
        ],
      });
      assertEquals(r.status, 202, JSON.stringify(r.body));
      assertEquals(r.body, { accepted: 3, ignored: 2 });
      const sa = await waitForStatus(stack, tenant.key, a.send.id, ["bounced"]);
      const ea = sa.events.find((e: Json) => e.type === "bounced").data;
      assertEquals([ea.source, ea.bounceType, ea.status, ea.diagnostic], [
        "webhook",
        "hard",
        "5.1.1",
        "550 5.1.1 no such user",
      ]);
      assertEquals(await contactStatus(stack, tenant.key, "hook-bounce@example.test"), "BOUNCED");
      const sb = await waitForStatus(stack, tenant.key, b.send.id, ["delivered"]);
      assertEquals(sb.deliveredAt, "2024-02-02T11:00:00.000Z");
      const sc = await waitForEvent(stack, tenant.key, c.send.id, "bounced");
      assertEquals(sc.status, "sent");
      assertEquals(sc.events.find((e: Json) => e.type === "bounced").data.bounceType, "soft", "4.x.x → soft");
    });

    await t.step("webhook: bad, old or missing signature → 401, nothing recorded", async () => {
      const { send } = await deliverSent(stack, tenant, "hook-refused@example.test");
      const body = { events: [{ type: "bounced", sendId: send.id }] };
      await assertNothingRecorded(stack, async () => {
        for (
          const [what, o] of [
            ["wrong secret", { secret: "not-the-inbound-secret" }],
            ["6 minutes old", { t: Math.floor(Date.now() / 1000) - 360 }],
            ["missing", { header: null }],
            ["garbage", { header: "t=abc,v1=xyz" }],
          ] as const
        ) {
          const r = await postSigned(stack, "/api/v1/events/inbound", body, o);
          assertEquals(r.status, 401, what);
          assertEquals(r.body.code, "unauthorized", what);
          assertMatch(r.headers.get("content-type") ?? "", /problem\+json/);
        }
        // Tampering with a signed body.
        const sig = signatureHeader(SECRET, JSON.stringify(body));
        const r = await stack.api("POST", "/api/v1/events/inbound", {
          raw: JSON.stringify({ events: [{ type: "complained", sendId: send.id }] }),
          headers: { "x-pp-signature": sig },
        });
        assertEquals(r.status, 401);
        // Authentication comes before parsing: unsigned garbage is a 401, not a 400.
        const g = await stack.api("POST", "/api/v1/events/inbound", { raw: "{nope" });
        assertEquals(g.status, 401);
      });
      assertEquals((await getSend(stack, tenant.key, send.id)).status, "sent");
    });

    await t.step("webhook: bad JSON → 400, bad shape → 422 naming the fields, GET → 405", async () => {
      await assertNothingRecorded(stack, async () => {
        const j = await postSigned(stack, "/api/v1/events/inbound", null, { raw: "{not json" });
        assertEquals(j.status, 400);
        assertEquals(j.body.code, "invalid_json");
        const v = await postSigned(stack, "/api/v1/events/inbound", {
          events: [
            { type: "exploded", sendId: crypto.randomUUID() },
            { type: "bounced" },
            { type: "bounced", sendId: "not-a-uuid", status: "5.1" },
          ],
        });
        assertEquals(v.status, 422);
        assertEquals(v.body.code, "validation_failed");
        const paths = v.body.errors.map((e: Json) => e.path).sort();
        assertEquals(paths, ["events.0.type", "events.1.sendId", "events.2.sendId", "events.2.status"]);
        const empty = await postSigned(stack, "/api/v1/events/inbound", { events: [] });
        assertEquals(empty.status, 422);
        const g = await stack.api("GET", "/api/v1/events/inbound");
        assertEquals(g.status, 405);
        assertEquals(g.headers.get("allow"), "POST");
      });
    });

    await t.step("SES through SNS: Bounce, Complaint, Delivery, DeliveryDelay are recorded", async () => {
      const hard = await deliverSent(stack, tenant, "ses-hard@example.test");
      const soft = await deliverSent(stack, tenant, "ses-soft@example.test");
      const compl = await deliverSent(stack, tenant, "ses-complaint@example.test");
      const deliv = await deliverSent(stack, tenant, "ses-delivered@example.test");
      const ses = "/api/v1/events/inbound/ses";
      const bounce = (m: ReceivedMail, bounceType: string, status: string) => ({
        notificationType: "Bounce",
        bounce: {
          bounceType,
          bounceSubType: bounceType === "Permanent" ? "General" : "MailboxFull",
          bouncedRecipients: [{
            emailAddress: m.to[0],
            action: "failed",
            status,
            diagnosticCode: `smtp; 550 ${status}`,
          }],
          timestamp: "2024-03-01T10:00:00.000Z",
          feedbackId: "0102018c-feedback",
          reportingMTA: "dsn; a1-2.smtp-out.eu-west-1.amazonses.com",
        },
        mail: sesMail(m),
      });
      let r = await postSigned(stack, ses, sns(bounce(hard.mail, "Permanent", "5.1.1")));
      assertEquals(r.status, 202, JSON.stringify(r.body));
      assertEquals(r.body, { accepted: 1, ignored: 0 });
      // Configuration-set event publishing says eventType instead of notificationType.
      const { notificationType: _, ...transient } = bounce(soft.mail, "Transient", "4.2.2");
      r = await postSigned(stack, ses, sns({ eventType: "Bounce", ...transient }));
      assertEquals(r.body, { accepted: 1, ignored: 0 });
      // Named by our Message-ID only (no X-PP-Send-Id header).
      r = await postSigned(
        stack,
        ses,
        sns({
          notificationType: "Complaint",
          complaint: {
            complainedRecipients: [{ emailAddress: compl.mail.to[0] }],
            timestamp: "2024-03-01T11:00:00.000Z",
            feedbackId: "0102018c-complaint",
            complaintFeedbackType: "abuse",
            userAgent: "Yahoo!-Mail-Feedback/2.0",
          },
          mail: sesMail(compl.mail, { sendIdHeader: false }),
        }),
      );
      assertEquals(r.body, { accepted: 1, ignored: 0 });
      // Raw message delivery: the SES notification without the SNS envelope, headers left out.
      const m = sesMail(deliv.mail);
      r = await postSigned(stack, ses, {
        notificationType: "Delivery",
        delivery: {
          timestamp: "2024-03-01T12:00:00.000Z",
          processingTimeMillis: 546,
          recipients: deliv.mail.to,
          smtpResponse: "250 ok dirdel",
          reportingMTA: "a8-70.smtp-out.amazonses.com",
        },
        mail: { ...m, headers: undefined },
      });
      assertEquals(r.body, { accepted: 1, ignored: 0 });

      const sh = await waitForStatus(stack, tenant.key, hard.send.id, ["bounced"]);
      const eh = sh.events.find((e: Json) => e.type === "bounced").data;
      assertEquals([eh.source, eh.bounceType, eh.status, eh.sesBounceType], ["ses", "hard", "5.1.1", "Permanent"]);
      assertEquals(sh.bouncedAt, "2024-03-01T10:00:00.000Z");
      assertEquals(await contactStatus(stack, tenant.key, "ses-hard@example.test"), "BOUNCED");
      const ss = await waitForEvent(stack, tenant.key, soft.send.id, "bounced");
      assertEquals(ss.status, "sent");
      assertEquals(ss.events.find((e: Json) => e.type === "bounced").data.bounceType, "soft");
      r = await postSigned(
        stack,
        ses,
        sns({
          eventType: "DeliveryDelay",
          deliveryDelay: { timestamp: new Date().toISOString(), delayType: "MailboxFull" },
          mail: sesMail(soft.mail),
        }),
      );
      assertEquals(r.body, { accepted: 1, ignored: 0 });
      const delayed = await waitForEvent(stack, tenant.key, soft.send.id, "bounced", 2);
      assertEquals(delayed.status, "sent", "a delay is a soft bounce");
      assertEquals(delayed.events.filter((e: Json) => e.type === "bounced")[1].data.delayType, "MailboxFull");
      assertEquals(await contactStatus(stack, tenant.key, "ses-soft@example.test"), "SUBSCRIBED");
      await waitForEvent(stack, tenant.key, compl.send.id, "complained");
      assertEquals(await contactStatus(stack, tenant.key, "ses-complaint@example.test"), "COMPLAINED");
      const sd = await waitForStatus(stack, tenant.key, deliv.send.id, ["delivered"]);
      assertEquals(sd.events.find((e: Json) => e.type === "delivered").data.response, "250 ok dirdel");
    });

    await t.step(
      "SES: SubscriptionConfirmation → 200, nothing done; unknown sends ignored; unsigned → 401",
      async () => {
        const ses = "/api/v1/events/inbound/ses";
        const { mail } = await deliverSent(stack, tenant, "ses-other@example.test");
        await assertNothingRecorded(stack, async () => {
          const c = await postSigned(stack, ses, {
            Type: "SubscriptionConfirmation",
            MessageId: crypto.randomUUID(),
            Token: "2336412f37fb687f5d51e6e2425c464de",
            TopicArn: "arn:aws:sns:eu-west-1:123456789012:ses-events",
            Message: "You have chosen to subscribe to the topic …",
            SubscribeURL: "https://sns.eu-west-1.amazonaws.com/?Action=ConfirmSubscription&Token=2336412f37",
          });
          assertEquals(c.status, 200);
          assertEquals(c.body, { status: "ignored", type: "SubscriptionConfirmation" });
          const unknownMail = { ...mail, messageId: `<${crypto.randomUUID()}@shop.test>` };
          const u = await postSigned(
            stack,
            ses,
            sns({
              notificationType: "Delivery",
              delivery: { timestamp: new Date().toISOString() },
              mail: sesMail(unknownMail, { sendIdHeader: false }),
            }),
          );
          assertEquals(u.body, { accepted: 0, ignored: 1 });
          const open = await postSigned(stack, ses, sns({ eventType: "Open", open: {}, mail: sesMail(mail) }));
          assertEquals(open.status, 202);
          assertEquals(open.body, { accepted: 0, ignored: 0 });
          const unsigned = await stack.api("POST", ses, {
            body: sns({ notificationType: "Delivery", mail: sesMail(mail) }),
          });
          assertEquals(unsigned.status, 401);
          const badMessage = await postSigned(stack, ses, { Type: "Notification", Message: "{not json" });
          assertEquals(badMessage.status, 422);
          assertEquals(badMessage.body.errors[0].path, "Message");
        });
      },
    );

    await t.step("without PP_INBOUND_SECRET and PP_INBOUND_SMTP_PORT: 401, no listener", async () => {
      assertEquals(plain.service.inboundSmtpPort, undefined);
      const body = JSON.stringify({ events: [{ type: "delivered", sendId: crypto.randomUUID() }] });
      const r = await plain.api("POST", "/api/v1/events/inbound", {
        raw: body,
        headers: { "x-pp-signature": signatureHeader(SECRET, body) },
      });
      assertEquals(r.status, 401);
      assertEquals(r.body.code, "unauthorized");
    });
  } finally {
    await Promise.all([stack.stop(), plain.stop()]);
  }
});
