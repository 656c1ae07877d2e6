/**
 * The message builder (src/mail/mime.ts) read back by a real parser (npm mailparser): what a
 * recipient's client shows must be what we were given, whatever the text holds.
 */
import { simpleParser } from "mailparser";
import { buildMime, type MimeMessage } from "../src/mail/mime.ts";
import { assert, assertEquals, assertMatch, assertNotMatch } from "./assert.ts";

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
    const raw = buildMime({
      ...base,
      replyTo: "help@brand.test",
      html: "<p>Hi Ann,</p>\n<p>a = b</p>",
      text: "Hi Ann,\na = b",
      headers: { "X-PP-Send-Id": "s1", "List-Unsubscribe-Post": "List-Unsubscribe=One-Click" },
    }).toString();
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
    const raw = buildMime({ ...base, from: { name, address: "orders@brand.test" }, subject, html, text }).toString();
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
    const raw = buildMime({
      ...base,
      from: { name: "A.B. Shop, Inc.", address: "orders@brand.test" },
      subject: "Hello\r\nBcc: victim@example.test",
      text: "x",
    }).toString();
    const m = await simpleParser(raw);
    assertEquals(m.from?.value, [{ address: "orders@brand.test", name: "A.B. Shop, Inc." }]);
    assertEquals(m.subject, "Hello Bcc: victim@example.test");
    assertEquals(m.bcc, undefined, "no header was injected");
    assertMatch(raw, /^From: "A\.B\. Shop, Inc\." <orders@brand\.test>\r\n/);
  });

  await t.step("one body: a single part, not multipart", async () => {
    const onlyHtml = buildMime({ ...base, html: "<p>only html</p>" }).toString();
    assertMatch(onlyHtml, /\r\nContent-Type: text\/html; charset=utf-8\r\n/);
    assertNotMatch(onlyHtml, /multipart/);
    assertEquals((await simpleParser(onlyHtml)).html, "<p>only html</p>");
    const onlyText = buildMime({ ...base, text: "only text, trailing   " }).toString();
    assertMatch(onlyText, /\r\nContent-Type: text\/plain; charset=utf-8\r\n/);
    assertEquals((await simpleParser(onlyText)).text, "only text, trailing   ");
  });

  await t.step("bare CR and LF in a body become CRLF line breaks", async () => {
    const raw = buildMime({ ...base, text: "one\rtwo\nthree\r\nfour" }).toString();
    assertEquals((await simpleParser(raw)).text, "one\ntwo\nthree\nfour");
    assertNotMatch(raw.replaceAll("\r\n", ""), /[\r\n]/);
  });

  await t.step("a body that looks like a boundary or an encoded word stays text", async () => {
    const text = "--=_pp_00000000000000000000000000000000\n=?UTF-8?Q?x?= stays";
    const raw = buildMime({ ...base, text, html: "<p>x</p>" }).toString();
    const m = await simpleParser(raw);
    assertEquals(m.text, text);
    assertEquals(m.html, "<p>x</p>");
  });
});
