/**
 * SMTP submission (API.md "SMTP submission"), submitted with nodemailer (a real SMTP client)
 * to the service's listener, and followed to the relay (the sink): one send per envelope
 * recipient, the message's own parts and files, our Message-ID, List-Unsubscribe and DKIM,
 * tracking when asked, X-PP-* and Idempotency-Key honoured and removed; each refusal's reply;
 * the test-key outbox; STARTTLS, and AUTH refused in plain text off loopback.
 */
import { Buffer } from "node:buffer";
import nodemailer from "nodemailer";
import { dkimVerify } from "mailauth/lib/dkim/verify.js";
import { assert, assertEquals, assertMatch } from "./assert.ts";
import {
  ADMIN_TOKEN,
  createsNothing,
  dnsOf,
  opts,
  randomBytes,
  rawHeader,
  type ReceivedMail,
  sha256,
  type Stack,
  startStack,
  txtResolver,
  waitFor,
  waitForStatus,
} from "./helpers.ts";

/** A nodemailer transport to the stack's submission port, authenticated with `key`. */
function client(stack: Stack, key: string, extra: Record<string, unknown> = {}) {
  return nodemailer.createTransport({
    host: "127.0.0.1",
    port: stack.service.submissionPort!,
    secure: false,
    ignoreTLS: true,
    auth: { user: "app", pass: key },
    ...extra,
  });
}

/** What a refused submission's error says: its reply code and text. */
async function refusedWith(p: Promise<unknown>): Promise<{ code: number; response: string }> {
  try {
    await p;
  } catch (err) {
    const e = err as { responseCode?: number; response?: string; message?: string };
    return { code: e.responseCode ?? 0, response: e.response ?? e.message ?? "" };
  }
  throw new Error("the submission was accepted");
}

const SUBMISSION = { PP_SUBMISSION_PORT: "0" };

Deno.test(
  "submission: a message becomes one send per recipient, delivered with its own parts, signed and tracked as asked",
  opts,
  async (t) => {
    const stack = await startStack({ env: SUBMISSION });
    try {
      const a = await stack.tenant();
      const records = await dnsOf(stack, a.key);
      const pdf = randomBytes(200_000);
      const logo = randomBytes(3_000);
      const message = {
        from: '"Shop Support" <support@shop.test>',
        to: "Buyer Bee <buyer@example.test>",
        cc: "copy@example.test",
        bcc: "hidden@example.test",
        replyTo: "help@shop.test",
        subject: "Ticket #42 – ready {{ subject }}",
        text: "Your ticket is ready. {{ not_a_template }}",
        html: '<p>Ticket <a href="https://shop.test/t/42">42</a> {{ not_a_template }}</p><img src="cid:logo@shop">',
        attachments: [
          { filename: "Ticket 42 – März.pdf", content: Buffer.from(pdf), contentType: "application/pdf" },
          { filename: "logo.png", content: Buffer.from(logo), cid: "logo@shop" },
        ],
        headers: {
          "X-PP-Tags": "ticket=42, kind=support",
          "X-PP-Track": "clicks",
          "Idempotency-Key": "ticket-42",
          "X-Ticket": "42",
          "In-Reply-To": "<question-42@customer.test>",
        },
      };
      let batchId = "";
      let sends: { id: string; to: string; messageId: string }[] = [];

      await t.step("250 once durable: three sends in one batch, no template", async () => {
        const info = await client(stack, a.key).sendMail(message);
        assertMatch(info.response, /^250 2\.0\.0 Accepted: batch [0-9a-f-]{36}, 3 sends$/);
        batchId = info.response.match(/batch ([0-9a-f-]{36})/)![1];
        const list = await stack.api("GET", `/api/v1/sends?batchId=${batchId}`, { key: a.key });
        assertEquals(list.status, 200);
        sends = list.body.data;
        assertEquals(sends.map((s) => s.to).sort(), ["buyer@example.test", "copy@example.test", "hidden@example.test"]);
        for (const s of list.body.data) {
          assertEquals(s.templateId, null);
          assertEquals(s.tags, { ticket: "42", kind: "support" });
          assertEquals([s.trackOpens, s.trackClicks], [false, true]);
          assertEquals(s.from, "Shop Support <support@shop.test>");
          assertEquals(s.replyTo, "help@shop.test");
          assertEquals(s.headers, { "X-Ticket": "42", "In-Reply-To": "<question-42@customer.test>" });
          // In the order the message holds them: the inline image beside the HTML first.
          assertEquals(s.attachments.map((f: { filename: string }) => f.filename).sort(), [
            "Ticket 42 – März.pdf",
            "logo.png",
          ]);
        }
        const batch = await stack.api("GET", `/api/v1/batches/${batchId}`, { key: a.key });
        assertEquals([batch.body.templateId, batch.body.count], [null, 3]);
        const g = await stack.gql(
          `query($id: ID!) { send(id: $id) { templateId subject } }`,
          { id: sends[0].id },
          a.key,
        );
        assertEquals(g.body.data.send, { templateId: null, subject: "Ticket #42 – ready {{ subject }}" });
      });

      await t.step("each recipient gets the message as written: parts, files, To and Cc, no Bcc", async () => {
        for (const s of sends) await waitForStatus(stack, a.key, s.id, ["delivered"]);
        const mails = sends.map((s) => stack.sink.messages.find((m) => m.messageId === s.messageId)!);
        for (const [i, mail] of mails.entries()) {
          assertEquals(mail.to, [sends[i].to], "the envelope names its own recipient only");
          assertEquals(mail.subject, "Ticket #42 – ready {{ subject }}", "not rendered as a template");
          assertMatch(mail.text, /Your ticket is ready\. \{\{ not_a_template \}\}/);
          assertEquals(rawHeader(mail, "To"), ["Buyer Bee <buyer@example.test>"]);
          assertEquals(rawHeader(mail, "Cc"), ["copy@example.test"]);
          assert(!mail.raw.includes("hidden@example.test"), "the bcc address is nowhere in the message");
          assertEquals(rawHeader(mail, "Message-ID"), [sends[i].messageId], "our Message-ID");
          assertEquals(rawHeader(mail, "X-PP-Send-Id"), [sends[i].id]);
          assertEquals(rawHeader(mail, "X-Ticket"), ["42"]);
          assertEquals(rawHeader(mail, "In-Reply-To"), ["<question-42@customer.test>"]);
          for (const gone of ["X-PP-Tags", "X-PP-Track", "Idempotency-Key"]) assertEquals(rawHeader(mail, gone), []);
          assertEquals(rawHeader(mail, "List-Unsubscribe").length, 1);
          const file = mail.attachments.find((x) => x.contentType === "application/pdf")!;
          assertEquals(file.filename, "Ticket 42 – März.pdf");
          assertEquals(await sha256(file.content), await sha256(pdf));
          const inline = mail.attachments.find((x) => x.contentType === "image/png")!;
          assertEquals([inline.contentId, inline.related], ["<logo@shop>", true]);
          assertEquals(await sha256(inline.content), await sha256(logo));
          // Clicks tracked, opens not (X-PP-Track: clicks).
          assertMatch(mail.html, /href="http[^"]+\/t\/c\/[^"]+"/);
          assert(!/\/t\/o\//.test(mail.html), "no open pixel");
          assertMatch(mail.html, /cid:logo@shop|data:image\/png/);
          const dkim = await dkimVerify(mail.raw, { resolver: txtResolver(records) });
          assertEquals(dkim.results[0].status.result, "pass", JSON.stringify(dkim.results[0].status));
          assertMatch(String(dkim.results[0].signingHeaders?.keys), /x-ticket/i, "its own headers are signed too");
        }
      });

      await t.step("the same message with its Idempotency-Key again: 250, nothing new", async () => {
        const before = await stack.count(`select count(*) from sends`);
        const info = await client(stack, a.key).sendMail(message);
        assertMatch(info.response, new RegExp(`^250 2\\.0\\.0 Accepted: batch ${batchId}, 3 sends$`));
        assertEquals(await stack.count(`select count(*) from sends`), before);
      });

      await t.step("a message to one recipient is one send, no batch; tracking defaults on", async () => {
        const info = await client(stack, a.key).sendMail({
          from: "support@shop.test",
          to: "single@example.test",
          subject: "Plain",
          html: '<p><a href="https://shop.test/x">x</a></p>',
        });
        const id = info.response.match(/^250 2\.0\.0 Accepted: send ([0-9a-f-]{36})$/)![1];
        const s = await waitForStatus(stack, a.key, id, ["delivered"]);
        assertEquals([s.batchId, s.trackOpens, s.trackClicks], [null, true, true]);
        const mail = stack.sink.messages.find((m) => m.messageId === s.messageId)!;
        assertMatch(mail.html, /\/t\/o\//, "the open pixel");
        assert(!/^Content-Type: text\/plain/m.test(mail.raw), "no text part made up from the HTML");
      });
    } finally {
      await stack.stop();
    }
  },
);

Deno.test("submission: each refusal has its reply, and creates nothing", opts, async (t) => {
  const stack = await startStack({ env: SUBMISSION });
  try {
    const a = await stack.tenant();
    const mail = (over: Record<string, unknown> = {}) => ({
      from: "orders@shop.test",
      to: "buyer@example.test",
      subject: "Hello",
      text: "Hello",
      ...over,
    });

    await t.step("a bad key: 535 5.7.8", async () => {
      const r = await createsNothing(
        stack,
        () => refusedWith(client(stack, "pp_live_" + "x".repeat(40)).sendMail(mail())),
      );
      assertEquals(r.code, 535);
      assertMatch(r.response, /^535 5\.7\.8 /);
      const admin = await refusedWith(client(stack, ADMIN_TOKEN).sendMail(mail()));
      assertEquals(admin.code, 535, "the admin token is no sending key");
    });

    await t.step("a from address off the verified domains: 550 5.7.1", async () => {
      const r = await createsNothing(
        stack,
        () => refusedWith(client(stack, a.key).sendMail(mail({ from: "x@other.test" }))),
      );
      assertMatch(r.response, /^550 5\.7\.1 other\.test is not a verified domain/);
    });

    await t.step("a bad X-PP-Track, a bad X-PP-Tags, an executable file: 550 5.6.0 naming them", async () => {
      const track = await createsNothing(
        stack,
        () => refusedWith(client(stack, a.key).sendMail(mail({ headers: { "X-PP-Track": "everything" } }))),
      );
      assertMatch(track.response, /^550 5\.6\.0 X-PP-Track: /);
      const tags = await refusedWith(client(stack, a.key).sendMail(mail({ headers: { "X-PP-Tags": "justaword" } })));
      assertMatch(tags.response, /^550 5\.6\.0 X-PP-Tags: /);
      const exe = await createsNothing(
        stack,
        () =>
          refusedWith(
            client(stack, a.key).sendMail(mail({ attachments: [{ filename: "setup.exe", content: "MZ" }] })),
          ),
      );
      assertMatch(exe.response, /^550 5\.6\.0 attachments\.0\.filename: executable files are refused/);
    });

    await t.step("large messages take a large-body slot and give it back; past 40 MiB: 552 5.3.4", async () => {
      // More large messages one after another than there are slots: a slot not given back would hang the fourth.
      const file = Buffer.from(randomBytes(5 * 1024 * 1024));
      for (let i = 0; i < 4; i++) {
        // A client that waits for a slot never given back times out (20 s) instead of hanging the test.
        const info = await client(stack, a.key, { socketTimeout: 20_000 }).sendMail(
          mail({ to: `large${i}@example.test`, attachments: [{ filename: "big.bin", content: file }] }),
        );
        assertMatch(info.response, /^250 2\.0\.0 Accepted: send /);
      }
      const huge = Buffer.from(randomBytes(31 * 1024 * 1024)); // 41+ MiB in base64
      const r = await createsNothing(
        stack,
        () =>
          refusedWith(client(stack, a.key).sendMail(mail({ attachments: [{ filename: "huge.bin", content: huge }] }))),
      );
      assertEquals(r.code, 552);
      assertMatch(r.response, /^552 5\.3\.4 Message too large/);
    });

    await t.step("an HTML part over 2 MB, a subject over 998 characters: 550 5.6.0 naming them", async () => {
      const big = await createsNothing(
        stack,
        () => refusedWith(client(stack, a.key).sendMail(mail({ html: `<p>${"x".repeat(2.5 * 1024 * 1024)}</p>` }))),
      );
      assertMatch(big.response, /^550 5\.6\.0 html: the html part is over 2 MB/);
      const subject = await refusedWith(client(stack, a.key).sendMail(mail({ subject: "s".repeat(1200) })));
      assertMatch(subject.response, /^550 5\.6\.0 Subject: must be at most 998 characters/);
    });

    await t.step("at most 100 recipients: the 101st is refused with 452 4.5.3", async () => {
      const to = Array.from({ length: 101 }, (_, i) => `many${i}@example.test`);
      const info = await client(stack, a.key).sendMail(mail({ to }));
      assertEquals(info.rejected, ["many100@example.test"]);
      assertMatch(String(info.rejectedErrors?.[0]?.response), /^452 4\.5\.3 /);
      assertMatch(info.response, /^250 2\.0\.0 Accepted: batch [0-9a-f-]{36}, 100 sends$/);
    });

    await t.step("quota reached: 550 5.7.0", async () => {
      const b = await stack.tenant({ domain: "quota.test", monthlyLimit: 1 });
      await client(stack, b.key).sendMail(mail({ from: "a@quota.test" }));
      const r = await createsNothing(
        stack,
        () => refusedWith(client(stack, b.key).sendMail(mail({ from: "a@quota.test", to: "second@example.test" }))),
      );
      assertMatch(r.response, /^550 5\.7\.0 the monthly email limit/);
    });

    await t.step("sending paused: 550 5.7.0", async () => {
      const c = await stack.tenant({ domain: "paused.test" });
      const paused = await stack.gql(
        `mutation($id: ID!) { setAccountSending(accountId: $id, enabled: false) { id } }`,
        { id: c.accountId },
        ADMIN_TOKEN,
      );
      assertEquals(paused.body.errors, undefined);
      const r = await createsNothing(
        stack,
        () => refusedWith(client(stack, c.key).sendMail(mail({ from: "a@paused.test" }))),
      );
      assertMatch(r.response, /^550 5\.7\.0 sending is paused/);
    });

    await t.step("a SENDING key limited to one domain, from another verified one: 550 5.7.1", async () => {
      const d = await stack.gql(`mutation { addDomain(name: "second.test") { id } }`, {}, a.key);
      await stack.gql(
        `mutation($id: ID!) { markDomainVerified(id: $id) { id } }`,
        { id: d.body.data.addDomain.id },
        ADMIN_TOKEN,
      );
      const k = await stack.gql(
        `mutation($i: CreateApiKeyInput!) { createApiKey(input: $i) { key } }`,
        { i: { accountId: a.accountId, mode: "LIVE", scope: "SENDING", domains: ["shop.test"] } },
        ADMIN_TOKEN,
      );
      const key = k.body.data.createApiKey.key;
      const ok = await client(stack, key).sendMail(mail({ from: "a@shop.test", to: "scoped@example.test" }));
      assertMatch(ok.response, /^250 /);
      const r = await createsNothing(
        stack,
        () => refusedWith(client(stack, key).sendMail(mail({ from: "a@second.test", to: "scoped2@example.test" }))),
      );
      assertMatch(r.response, /^550 5\.7\.1 this key may send from shop\.test only/);
    });

    await t.step("a suppressed recipient: 250, its send suppressed and never mailed, no quota", async () => {
      await stack.pg.query(
        `insert into contacts (account_id, email, status, updated_at) values ($1, 'left@example.test', 'unsubscribed', now())`,
        [a.accountId],
      );
      const before = await stack.count(`select coalesce(sum(used), 0) from account_usage where account_id = $1`, [
        a.accountId,
      ]);
      const info = await client(stack, a.key).sendMail(mail({ to: "left@example.test" }));
      const id = info.response.match(/send ([0-9a-f-]{36})$/)![1];
      const s = await stack.api("GET", `/api/v1/sends/${id}`, { key: a.key });
      assertEquals(s.body.status, "suppressed");
      assertEquals(
        await stack.count(`select coalesce(sum(used), 0) from account_usage where account_id = $1`, [a.accountId]),
        before,
      );
      assert(!stack.sink.messages.some((m) => m.to.includes("left@example.test")));
    });

    await t.step("a pp_test_ key: accepted and written to the outbox, never to the relay", async () => {
      const tk = await stack.tenant({ domain: "sandbox.test", mode: "TEST" });
      const info = await client(stack, tk.key).sendMail(mail({ from: "a@sandbox.test", to: "sandboxed@example.test" }));
      const id = info.response.match(/send ([0-9a-f-]{36})$/)![1];
      const s = await waitForStatus(stack, tk.key, id, ["delivered"]);
      assertEquals(s.sandbox, true);
      const eml = await Deno.readTextFile(`${stack.dataDir}/outbox/${id}.eml`);
      assertMatch(eml, /^Subject: Hello\r$/m);
      assert(!stack.sink.messages.some((m: ReceivedMail) => m.to.includes("sandboxed@example.test")));
    });
  } finally {
    await stack.stop();
  }
});

Deno.test("submission: the rate limit is the key's, shared with HTTP: 451 4.7.0", opts, async () => {
  const stack = await startStack({ env: { ...SUBMISSION, PP_RATE_LIMIT: "1:2" } });
  try {
    const a = await stack.tenant();
    // Two HTTP requests take the burst; the message's MAIL FROM finds the bucket empty.
    await stack.api("GET", "/api/v1/sends", { key: a.key });
    await stack.api("GET", "/api/v1/sends", { key: a.key });
    const r = await createsNothing(
      stack,
      () =>
        refusedWith(
          client(stack, a.key).sendMail({ from: "o@shop.test", to: "b@example.test", subject: "x", text: "x" }),
        ),
    );
    assertEquals(r.code, 451);
    assertMatch(r.response, /^451 4\.7\.0 Rate limited/);
  } finally {
    await stack.stop();
  }
});

Deno.test(
  "submission: STARTTLS with PP_TLS_CERT/PP_TLS_KEY; AUTH in plain text only from loopback",
  opts,
  async (t) => {
    const fixtures = new URL("./fixtures/", import.meta.url);
    const stack = await startStack({
      env: {
        ...SUBMISSION,
        HOST: "0.0.0.0",
        PP_TLS_CERT: new URL("submission-tls.crt", fixtures).pathname,
        PP_TLS_KEY: new URL("submission-tls.key", fixtures).pathname,
      },
    });
    try {
      const a = await stack.tenant();
      const message = { from: "o@shop.test", to: "tls@example.test", subject: "Over TLS", text: "x" };
      // An address of this machine that is not loopback: what a remote client connects from.
      const outside = Deno.networkInterfaces().find((i) => i.family === "IPv4" && !i.address.startsWith("127."));
      assert(outside, "this machine has a non-loopback IPv4 address");

      await t.step("STARTTLS, then AUTH: accepted and delivered", async () => {
        const info = await client(stack, a.key, {
          host: outside.address,
          ignoreTLS: false,
          requireTLS: true,
          tls: { rejectUnauthorized: false },
        }).sendMail(message);
        const id = info.response.match(/send ([0-9a-f-]{36})$/)![1];
        await waitForStatus(stack, a.key, id, ["delivered"]);
      });

      await t.step("AUTH in plain text from off loopback: 538, nothing created", async () => {
        const r = await createsNothing(
          stack,
          () => refusedWith(client(stack, a.key, { host: outside.address }).sendMail(message)),
        );
        assertEquals(r.code, 538);
        assertMatch(r.response, /5\.7\.11 Encryption required/);
      });

      await t.step("from loopback, plain text AUTH is allowed", async () => {
        const info = await client(stack, a.key).sendMail({ ...message, to: "loopback@example.test" });
        assertMatch(info.response, /^250 /);
        await waitFor(() => stack.sink.messages.some((m) => m.to.includes("loopback@example.test")), 5000, "delivery");
      });
    } finally {
      await stack.stop();
    }
  },
);

Deno.test(
  "submission: a large message still arriving at its slot's deadline is refused, 451 4.4.2",
  opts,
  async () => {
    const stack = await startStack({ env: { ...SUBMISSION, PP_LARGE_BODY_TIMEOUT_MS: "1000" } });
    const conn = await Deno.connect({ hostname: "127.0.0.1", port: stack.service.submissionPort! });
    try {
      const a = await stack.tenant();
      const enc = new TextEncoder();
      const dec = new TextDecoder();
      let pending = "";
      /** The next complete reply (its last line has a space after the code). */
      const reply = async (): Promise<string> => {
        const buf = new Uint8Array(4096);
        while (!/^\d{3} .*\r\n/m.test(pending)) {
          const n = await conn.read(buf);
          if (n === null) throw new Error(`closed after ${JSON.stringify(pending)}`);
          pending += dec.decode(buf.subarray(0, n));
        }
        const end = pending.search(/^\d{3} .*\r\n/m);
        const lineEnd = pending.indexOf("\r\n", end) + 2;
        const r = pending.slice(0, lineEnd);
        pending = pending.slice(lineEnd);
        return r;
      };
      const write = async (bytes: Uint8Array) => {
        for (let at = 0; at < bytes.length;) at += await conn.write(bytes.subarray(at));
      };
      const say = async (line: string) => {
        await write(enc.encode(line + "\r\n"));
        return await reply();
      };
      assertMatch(await reply(), /^220 /);
      assertMatch(await say("EHLO client.test"), /^250 /m);
      assertMatch(await say(`AUTH PLAIN ${btoa(`\0app\0${a.key}`)}`), /^235 /);
      assertMatch(await say("MAIL FROM:<orders@shop.test>"), /^250 /);
      assertMatch(await say("RCPT TO:<slow@example.test>"), /^250 /);
      assertMatch(await say("DATA"), /^354 /);
      // 5 MiB (past the large-body mark, so it holds a slot), then nothing for 3 s, then the end.
      await write(enc.encode("From: orders@shop.test\r\nTo: slow@example.test\r\nSubject: Slow\r\n\r\n"));
      await write(enc.encode(("x".repeat(998) + "\r\n").repeat(5 * 1024 + 300)));
      await new Promise((r) => setTimeout(r, 3_000));
      await write(enc.encode(".\r\n"));
      assertMatch(await reply(), /^451 4\.4\.2 The message did not arrive within 1000 ms/);
      assertEquals(await stack.count("select count(*) from sends"), 0);
    } finally {
      conn.close();
      await stack.stop();
    }
  },
);
