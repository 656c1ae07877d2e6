/**
 * The message builder (src/mail/mime.ts) read back by a real parser (npm mailparser): what a
 * recipient's client shows must be what we were given, whatever the text holds.
 */
import { simpleParser } from "mailparser";
import { buildMime, type MimeMessage } from "../src/mail/mime.ts";
import { dkimOptions, generateDkimKeys, signDkim } from "../src/mail/dkim.ts";
import { assert, assertEquals, assertMatch, assertNotMatch } from "./assert.ts";

/** A built message as text (it is UTF-8 bytes). */
const asText = (bytes: Uint8Array) => new TextDecoder().decode(bytes);

const base: MimeMessage = {
  from: { name: "Shop", address: "orders@brand.test" },
  to: "ann@example.test",
  subject: "Order D-1 confirmed",
  messageId: "<m1@brand.test>",
  date: new Date("2026-11-26T09:00:00Z"),
};

/** The lines of a message, without their CRLF. */
const lines = (raw: string): string[] => raw.split("\r\n");

Deno.test("mime: what mailparser reads back is what we built", async (t) => {
  await t.step("text and HTML: multipart/alternative, headers and bodies intact", async () => {
    const raw = asText(buildMime({
      ...base,
      replyTo: "help@brand.test",
      html: "<p>Hi Ann,</p>\n<p>a = b</p>",
      text: "Hi Ann,\na = b",
      headers: { "X-PP-Send-Id": "s1", "List-Unsubscribe-Post": "List-Unsubscribe=One-Click" },
    }));
    const m = await simpleParser(raw);
    assertEquals(m.subject, "Order D-1 confirmed");
    assertEquals(m.from?.value, [{ address: "orders@brand.test", name: "Shop" }]);
    assertEquals(m.replyTo?.value, [{ address: "help@brand.test", name: "" }]);
    assertEquals(m.messageId, "<m1@brand.test>");
    assertEquals(m.date?.toISOString(), "2026-11-26T09:00:00.000Z");
    assertEquals(m.html, "<p>Hi Ann,</p>\n<p>a = b</p>");
    assertEquals(m.text, "Hi Ann,\na = b");
    assertEquals(m.headers.get("x-pp-send-id"), "s1");
    assertMatch(raw, /\r\nList-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n/);
    assertMatch(raw, /\r\nContent-Type: multipart\/alternative;\r\n boundary="=_pp_[0-9a-f]{32}"\r\n/);
    assertNotMatch(raw.replaceAll("\r\n", ""), /[\r\n]/, "CRLF line endings only");
  });

  await t.step("non-ASCII names, subject and bodies come back exactly", async () => {
    const subject = "Ihre Bestellung über 10 € – bestätigt ✓, mit einem Betreff, der gefaltet werden muss";
    const name = 'Çafé "Ünïcode" Shop, Inc.';
    const html = "<p>Grüße aus München 🎉</p>" + "ü".repeat(200);
    const text = "Grüße\nZeile zwei  \n" + "y ".repeat(120).trimEnd();
    const raw = asText(buildMime({ ...base, from: { name, address: "orders@brand.test" }, subject, html, text }));
    const m = await simpleParser(raw);
    assertEquals(m.subject, subject);
    assertEquals(m.from?.value, [{ address: "orders@brand.test", name }]);
    assertEquals(m.html, html);
    assertEquals(m.text, text);
    // Every line fits SMTP's and MIME's limits: 998 octets, and 76 in quoted-printable bodies.
    for (const line of lines(raw)) assert(line.length <= 78, `a line of ${line.length}: ${line.slice(0, 40)}…`);
    assertNotMatch(raw, /[^\t\r\n\x20-\x7e]/, "7-bit clean: non-ASCII is encoded");
  });

  await t.step("ASCII specials in a name are quoted; line breaks in header values fold to spaces", async () => {
    const raw = asText(buildMime({
      ...base,
      from: { name: "A.B. Shop, Inc.", address: "orders@brand.test" },
      subject: "Hello\r\nBcc: victim@example.test",
      text: "x",
    }));
    const m = await simpleParser(raw);
    assertEquals(m.from?.value, [{ address: "orders@brand.test", name: "A.B. Shop, Inc." }]);
    assertEquals(m.subject, "Hello Bcc: victim@example.test");
    assertEquals(m.bcc, undefined, "no header was injected");
    assertMatch(raw, /^From: "A\.B\. Shop, Inc\." <orders@brand\.test>\r\n/);
  });

  await t.step("one body: a single part, not multipart", async () => {
    const onlyHtml = asText(buildMime({ ...base, html: "<p>only html</p>" }));
    assertMatch(onlyHtml, /\r\nContent-Type: text\/html; charset=utf-8\r\n/);
    assertNotMatch(onlyHtml, /multipart/);
    assertEquals((await simpleParser(onlyHtml)).html, "<p>only html</p>");
    const onlyText = asText(buildMime({ ...base, text: "only text, trailing   " }));
    assertMatch(onlyText, /\r\nContent-Type: text\/plain; charset=utf-8\r\n/);
    assertEquals((await simpleParser(onlyText)).text, "only text, trailing   ");
  });

  await t.step("bare CR and LF in a body become CRLF line breaks", async () => {
    const raw = asText(buildMime({ ...base, text: "one\rtwo\nthree\r\nfour" }));
    assertEquals((await simpleParser(raw)).text, "one\ntwo\nthree\nfour");
    assertNotMatch(raw.replaceAll("\r\n", ""), /[\r\n]/);
  });

  await t.step("a body that looks like a boundary or an encoded word stays text", async () => {
    const text = "--=_pp_00000000000000000000000000000000\n=?UTF-8?Q?x?= stays";
    const raw = asText(buildMime({ ...base, text, html: "<p>x</p>" }));
    const m = await simpleParser(raw);
    assertEquals(m.text, text);
    assertEquals(m.html, "<p>x</p>");
  });
});

Deno.test("mime: a message is encoded once; signing writes its header before it, not a copy", async () => {
  const { privateKeyPem } = await generateDkimKeys();
  const options = dkimOptions("brand.test", "s1", privateKeyPem);
  const message = buildMime({ ...base, text: "x".repeat(10_000) });
  const before = message.slice();
  const signed = await signDkim(message, options);
  // The same memory: the header went into the room buildMime left, the message was not copied.
  assert(signed.buffer === message.buffer, "signed into the built message's own buffer");
  assertEquals(signed.byteOffset + signed.byteLength, message.byteOffset + message.byteLength);
  assertEquals(signed.subarray(signed.length - message.length), before);
  assertMatch(asText(signed), /^DKIM-Signature: v=1; a=rsa-sha256;/);
  // That room is used once: signing the same message again copies, leaving the first result as it is.
  const first = signed.slice();
  const again = await signDkim(message, options);
  assert(again.buffer !== message.buffer);
  assertEquals(signed, first);
  // A caller's array is never written outside its own bytes.
  const outer = new Uint8Array(5_000).fill(0x58);
  const view = outer.subarray(3_000, 3_000 + 1_000);
  const own = new TextEncoder().encode("From: a@brand.test\r\n\r\nhi\r\n");
  view.set(own);
  const fromCaller = await signDkim(view.subarray(0, own.length), options);
  assert(outer.subarray(0, 3_000).every((b) => b === 0x58), "bytes before the caller's view untouched");
  assertMatch(asText(fromCaller), /\r\nFrom: a@brand\.test\r\n\r\nhi\r\n$/);
});
