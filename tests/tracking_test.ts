/**
 * Delivery tracking end to end (issue: "Delivery tracking"), as a recipient and a caller see
 * it: the delivered mail (rewritten links, open pixel, RFC 8058 List-Unsubscribe headers),
 * the pixel and click endpoints, signed tokens that resist tampering, the unsubscribe page
 * and one-click POST, per-send tracking switches, and the events, REST and GraphQL, that
 * come out of it. Tracking URLs go to PP_PUBLIC_URL (a proxy's address, with a trailing
 * slash); the test maps them back to the service's own address to fetch them.
 */
import { createHmac } from "node:crypto";
import { Buffer } from "node:buffer";
import { signToken } from "../src/mail/tracking.ts";
import { assert, assertEquals, assertMatch, assertNotMatch } from "./assert.ts";
import {
  contactStatus,
  getSend,
  gql,
  type Json,
  opts,
  rawHeader,
  type ReceivedMail,
  send,
  sleep,
  type Stack,
  startStack,
  type TestTenant,
  waitDelivered,
  waitFor,
  waitForEvents,
} from "./helpers.ts";

const PUBLIC_URL = "https://mail.pigeon.test";
const TOKEN = "[A-Za-z0-9_-]{42}";
const CLICK_URL = new RegExp(`^${PUBLIC_URL.replaceAll(".", "\\.")}/t/c/(${TOKEN})$`);
const OPEN_URL = new RegExp(`^${PUBLIC_URL.replaceAll(".", "\\.")}/t/o/(${TOKEN})$`);
const UNSUB_URL = new RegExp(`^${PUBLIC_URL.replaceAll(".", "\\.")}/u/(${TOKEN})$`);

/** A browser's user agent (Safari on macOS): a person, once past the scanner window. */
const BROWSER_UA =
  "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4 Safari/605.1.15";
/** Apple Mail Privacy Protection's proxy fetches pixels with a bare `Mozilla/5.0`. */
const APPLE_MPP_UA = "Mozilla/5.0";
const SCANNER_UA = "Barracuda Sentinel (EE)";

/** The template: two tracked links (one with `&amp;` in its query), four that must stay as they are. */
const HTML = `<!doctype html><html><head><title>Shipped</title></head><body>
<p>Hi {{ first_name }}, order {{ order_id }} has shipped.</p>
<p><a href="https://shop.test/orders/42?utm_source=mail&amp;utm_medium=email">Track your order</a></p>
<p><a class="btn" href='http://help.shop.test/faq?q=a&b=c#returns'>Returns</a></p>
<p><a href="mailto:help@shop.test?subject=Order%2042">Write to us</a></p>
<p><a href="javascript:alert(1)">Not a link</a></p>
<p><a href="/account/orders">Your account</a></p>
<p><a href="{{ unsubscribe_url }}">Unsubscribe</a></p>
</body></html>`;
/** What the two tracked links lead to, in order (entities decoded, as a browser would follow them). */
const LINKS = [
  "https://shop.test/orders/42?utm_source=mail&utm_medium=email",
  "http://help.shop.test/faq?q=a&b=c#returns",
];
/** The hrefs that are never rewritten. */
const KEPT = ["mailto:help@shop.test?subject=Order%2042", "javascript:alert(1)", "/account/orders"];
const TEXT = "Track your order: https://shop.test/orders/42?utm_source=mail&utm_medium=email\n" +
  "Unsubscribe: {{ unsubscribe_url }}";

/** A send's events of one type, oldest first, as REST shows them. */
async function eventsOf(stack: Stack, key: string, id: string, type: string): Promise<Json[]> {
  return (await getSend(stack, key, id)).events.filter((e: Json) => e.type === type);
}

/** The one mail the sink received for `address` (waits for it). */
function mailTo(stack: Stack, address: string): Promise<ReceivedMail> {
  return waitFor(
    () => {
      const m = stack.sink.messages.filter((m) => m.to.includes(address));
      assert(m.length <= 1, `one mail to ${address}, got ${m.length}`);
      return m[0];
    },
    5000,
    `a mail to ${address}`,
  );
}

/** Sends with `body`, waits for delivery and returns the send and the mail as received. */
async function deliver(stack: Stack, key: string, body: Record<string, unknown>) {
  const s = await send(stack, key, body);
  assertEquals(s.status, "queued");
  const done = await waitDelivered(stack, key, s.id);
  return { send: done, mail: await mailTo(stack, body.to as string) };
}

/** Every `<a href>` of the HTML, in order, as written (entities not decoded). */
function hrefs(html: string): string[] {
  return [...html.matchAll(/<a\b[^>]*?\bhref\s*=\s*(["'])(.*?)\1/gi)].map((m) => m[2]);
}

/** The `src` of every image pointing at the open endpoint. */
function pixels(html: string): string[] {
  return [...html.matchAll(/<img\b[^>]*?\bsrc\s*=\s*(["'])(.*?)\1/gi)].map((m) => m[2]).filter((u) =>
    u.includes("/t/o/")
  );
}

/** A public tracking URL turned into the service's own address (what the proxy would do). */
function local(stack: Stack, publicUrl: string): string {
  assert(publicUrl.startsWith(PUBLIC_URL + "/"), `${publicUrl} is under PP_PUBLIC_URL`);
  return stack.url + publicUrl.slice(PUBLIC_URL.length);
}

/** A fetch that never follows redirects; the body is read (and returned) so nothing leaks. */
async function hit(url: string, init: RequestInit & { ua?: string } = {}) {
  const headers = new Headers(init.headers);
  if (init.ua) headers.set("user-agent", init.ua);
  const res = await fetch(url, { ...init, headers, redirect: "manual" });
  const body = new Uint8Array(await res.arrayBuffer());
  return { status: res.status, headers: res.headers, body, text: new TextDecoder().decode(body) };
}

/** A token with character `i` replaced by another of the alphabet (`flip` picks which bits). */
function tamper(token: string, i: number, flip = 0b100000): string {
  const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
  const v = alphabet.indexOf(token[i]);
  return token.slice(0, i) + alphabet[v ^ flip] + token.slice(i + 1);
}

/** Resolves once the 2 s scanner window after `sentAt` is over (a browser is then a person). */
async function pastScannerWindow(sentAt: number): Promise<void> {
  const wait = sentAt + 2100 - Date.now();
  if (wait > 0) await sleep(wait);
}

/** What every tracking test gets: a stack of its own with PP_PUBLIC_URL, and a shop whose template tracks. */
interface Fixture {
  stack: Stack;
  /** A tenant whose template is HTML/TEXT with opens and clicks tracked. */
  shop: TestTenant;
}

/** A test on a stack of its own (PP_PUBLIC_URL set) with the tracking shop, stopped afterwards. */
function trackingTest(name: string, fn: (f: Fixture) => Promise<void>) {
  Deno.test(name, opts, async () => {
    const stack = await startStack({ env: { PP_PUBLIC_URL: PUBLIC_URL + "/" } });
    try {
      const shop = await stack.tenant({
        template: {
          subject: "Order {{ order_id }} shipped",
          html: HTML,
          text: TEXT,
          trackOpens: true,
          trackClicks: true,
        },
      });
      await fn({ stack, shop });
    } finally {
      await stack.stop();
    }
  });
}

/** The shop's mail to `to`, delivered, with the tracking URLs it carries, as written (test 1 checks them). */
async function deliverTracked(f: Fixture, to = "reader@example.test") {
  const { send, mail } = await deliver(f.stack, f.shop.key, {
    templateId: f.shop.templateId,
    to,
    personalizations: { first_name: "Ada", order_id: "42" },
  });
  const all = hrefs(mail.html);
  return {
    send,
    mail,
    sentAt: Date.parse(send.sentAt),
    /** The two tracked links, in order. */
    clickUrls: all.slice(0, 2),
    /** The one open pixel. */
    openUrl: pixels(mail.html)[0] ?? "",
    /** {{ unsubscribe_url }}: the sixth link. */
    unsubUrl: all[5] ?? "",
  };
}

trackingTest(
  "tracking 1: the delivered mail: http(s) links rewritten, others kept, pixel, List-Unsubscribe",
  async (f) => {
    const { stack } = f;
    const { send: main, mail, clickUrls, openUrl, unsubUrl } = await deliverTracked(f);
    assertEquals(main.trackOpens, true);
    assertEquals(main.trackClicks, true);
    assertMatch(mail.html, /Hi Ada, order 42 has shipped\./, "the template is rendered around the rewrite");
    const all = hrefs(mail.html);
    assertEquals(all.length, 2 + KEPT.length + 1, `every link is still there: ${JSON.stringify(all)}`);
    assertEquals(clickUrls, all.slice(0, 2));
    for (const u of clickUrls) assertMatch(u, CLICK_URL, "an http(s) link goes through /t/c/ on PP_PUBLIC_URL");
    assert(clickUrls[0] !== clickUrls[1], "each link has its own token");
    assertEquals(all.slice(2, 5), KEPT, "mailto:, javascript: and relative links are left as they are");
    assertEquals(unsubUrl, all[5]);
    assertMatch(unsubUrl, UNSUB_URL, "{{ unsubscribe_url }} renders the unsubscribe URL, not rewritten");
    for (const l of LINKS) {
      assert(!mail.html.includes(l), `the original URL ${l} is not in the HTML any more`);
    }
    assert(!mail.html.includes("shop.test/orders"), "no trace of the first original URL in the HTML");

    const px = pixels(mail.html);
    assertEquals(px.length, 1, "exactly one open pixel");
    assertEquals(openUrl, px[0]);
    assertMatch(openUrl, OPEN_URL);
    assertMatch(mail.html, /<img src="[^"]+\/t\/o\/[^"]+"[^>]*>\s*<\/body>/, "the pixel closes the body");

    assertEquals(rawHeader(mail, "List-Unsubscribe"), [`<${unsubUrl}>`]);
    assertEquals(rawHeader(mail, "List-Unsubscribe-Post"), ["List-Unsubscribe=One-Click"]);

    assert(mail.text.includes(LINKS[0]), `the text part keeps the original link: ${mail.text}`);
    assert(mail.text.includes(`Unsubscribe: ${unsubUrl}`), "the text part has the unsubscribe URL");
    assertNotMatch(mail.text, /\/t\/[oc]\//, "the text part is not rewritten");

    const row = await stack.pg.query("select links from sends where id = $1", [main.id]);
    assertEquals(row.rows[0].links, LINKS, "the send keeps the original URLs by index");
  },
);

trackingTest("tracking 2: the open pixel: a GIF never cached, every open kept, openedAt the first", async (f) => {
  const { stack, shop } = f;
  const { send: main, sentAt, openUrl } = await deliverTracked(f);
  // Within the scanner window, from a scanner.
  const r1 = await hit(local(stack, openUrl), { ua: SCANNER_UA });
  assertEquals(r1.status, 200);
  assertEquals(r1.headers.get("content-type"), "image/gif");
  assertMatch(r1.headers.get("cache-control") ?? "", /no-store/);
  assertEquals(new TextDecoder().decode(r1.body.slice(0, 4)), "GIF8", "the body is a GIF");
  assert(r1.body.length < 100, "a 1×1 GIF");
  const [o1] = await waitForEvents(stack, shop.key, main.id, "opened", 1);
  assertEquals(o1.data.machine, true, "a scanner's open is flagged");
  assertEquals(o1.data.machineReason, "scanner");
  assertEquals(o1.data.userAgent, SCANNER_UA);
  const opened = (await getSend(stack, shop.key, main.id)).openedAt;
  assert(opened, "openedAt is set by the first open");
  assert(Date.parse(opened) >= sentAt, "openedAt is after sentAt");

  // Apple Mail Privacy Protection.
  const r2 = await hit(local(stack, openUrl), { ua: APPLE_MPP_UA });
  assertEquals(r2.status, 200);
  const evs2 = await waitForEvents(stack, shop.key, main.id, "opened", 2);
  assertEquals(evs2.length, 2, "a second fetch is a second event");
  assertEquals(evs2[1].data.machine, true);
  assertEquals(evs2[1].data.machineReason, "apple_mpp");
  assertEquals((await getSend(stack, shop.key, main.id)).openedAt, opened, "openedAt stays the first open");

  // A person, past the 2 s scanner window after sending.
  await pastScannerWindow(sentAt);
  const r3 = await hit(local(stack, openUrl), { ua: BROWSER_UA });
  assertEquals(r3.status, 200);
  const evs3 = await waitForEvents(stack, shop.key, main.id, "opened", 3);
  assertEquals(evs3.length, 3);
  assertEquals(evs3[2].data.machine, false, `a browser after the window is a person: ${JSON.stringify(evs3[2])}`);
  assertEquals(evs3[2].data.machineReason, undefined);
  assertEquals(evs3[2].data.userAgent, BROWSER_UA);
  assertEquals((await getSend(stack, shop.key, main.id)).openedAt, opened, "openedAt stays the first open");
});

trackingTest(
  "tracking 3: clicks: 302 to exactly the original URL, every click kept, clickedAt the first",
  async (f) => {
    const { stack, shop } = f;
    const { send: main, sentAt, clickUrls } = await deliverTracked(f);
    assertEquals((await getSend(stack, shop.key, main.id)).clickedAt, null, "no click before the first one");
    await pastScannerWindow(sentAt); // a person's clicks first, then a scanner's
    let clicked: string | null = null;
    for (const [i, u] of clickUrls.entries()) {
      const r = await hit(local(stack, u), { ua: BROWSER_UA });
      assertEquals(r.status, 302, `link ${i}`);
      assertEquals(r.headers.get("location"), LINKS[i], `link ${i} redirects to its own URL, & and # kept`);
      const evs = await waitForEvents(stack, shop.key, main.id, "clicked", i + 1);
      assertEquals(evs.length, i + 1);
      assertEquals(evs[i].data.url, LINKS[i]);
      assertEquals(evs[i].data.link, i);
      assertEquals(evs[i].data.machine, false);
      const s = await getSend(stack, shop.key, main.id);
      assert(s.clickedAt, "clickedAt is set");
      if (i === 0) clicked = s.clickedAt;
      assertEquals(s.clickedAt, clicked, "clickedAt stays the first click");
    }
    // The same link again: a third event, same redirect, clickedAt unchanged.
    const again = await hit(local(stack, clickUrls[0]), { ua: SCANNER_UA });
    assertEquals(again.status, 302);
    assertEquals(again.headers.get("location"), LINKS[0]);
    const evs = await waitForEvents(stack, shop.key, main.id, "clicked", 3);
    assertEquals(evs[2].data.link, 0);
    assertEquals(evs[2].data.machine, true, "a scanner's click is flagged");
    assertEquals((await getSend(stack, shop.key, main.id)).clickedAt, clicked);
  },
);

trackingTest("tracking 4: tampered, forged, misplaced and foreign tokens never redirect anywhere else", async (f) => {
  const { stack, shop } = f;
  const { send: main, clickUrls, openUrl, unsubUrl } = await deliverTracked(f);
  const clickToken = clickUrls[0].match(CLICK_URL)![1];
  const openToken = openUrl.match(OPEN_URL)![1];
  const unsubToken = unsubUrl.match(UNSUB_URL)![1];
  const base = stack.url;
  const clicksBefore = (await eventsOf(stack, shop.key, main.id, "clicked")).length;
  const opensBefore = (await eventsOf(stack, shop.key, main.id, "opened")).length;
  const notFound = async (path: string, init: RequestInit = {}, why = path) => {
    const r = await hit(base + path, init);
    assertEquals(r.status, 404, `${why} → 404`);
    assertEquals(r.headers.get("location"), null, `${why}: no redirect`);
  };

  // Every single character changed (one that changes the decoded bytes).
  await Promise.all(
    Array.from(
      { length: clickToken.length },
      (_, i) => notFound(`/t/c/${tamper(clickToken, i)}`, {}, `character ${i} changed`),
    ),
  );
  // Forged: signed with another secret, at an existing and an out-of-range link index.
  await notFound(`/t/c/${signToken("not-the-secret", "click", main.id, 0)}`, {}, "forged, link 0");
  await notFound(`/t/c/${signToken("not-the-secret", "click", main.id, 7)}`, {}, "forged, link 7");
  // Genuinely signed but for a link the send does not have.
  const secret = stack.service.deps.secrets.secret;
  await notFound(`/t/c/${signToken(secret, "click", main.id, LINKS.length)}`, {}, "link index out of range");
  await notFound(`/t/c/${signToken(secret, "click", crypto.randomUUID(), 0)}`, {}, "unknown send");
  // A token used for another purpose.
  await notFound(`/t/c/${openToken}`, {}, "open token on /t/c");
  await notFound(`/t/c/${unsubToken}`, {}, "unsubscribe token on /t/c");
  await notFound(`/t/o/${clickToken}`, {}, "click token on /t/o");
  await notFound(`/u/${clickToken}`, {}, "click token on GET /u");
  await notFound(
    `/u/${openToken}`,
    { method: "POST", body: "List-Unsubscribe=One-Click" },
    "open token on POST /u",
  );
  // Garbage.
  for (
    const g of ["x", "A".repeat(42), clickToken + "A", clickToken.slice(0, -1), `${clickToken.slice(0, -1)}.`]
  ) {
    await notFound(`/t/c/${g}`, {}, `garbage ${g}`);
    await notFound(`/t/o/${g}`, {}, `garbage pixel ${g}`);
  }

  // The target never comes from the request.
  for (const q of ["?url=https://evil.test", "?url=https%3A%2F%2Fevil.test&redirect=https://evil.test&link=1"]) {
    const r = await hit(local(stack, clickUrls[0]) + q);
    assertEquals(r.status, 302);
    assertEquals(r.headers.get("location"), LINKS[0], `query ${q} changes nothing`);
  }

  // Another tenant's send: its token leads to its own URL only, whatever is appended.
  const other = await stack.tenant({
    domain: "other.test",
    template: {
      html: `<a href="https://other.test/deal">Deal</a>`,
      trackOpens: true,
      trackClicks: true,
    },
  });
  const { send: foreign, mail: foreignMail } = await deliver(stack, other.key, {
    templateId: other.templateId,
    to: "someone@example.test",
  });
  const [foreignClick] = hrefs(foreignMail.html);
  assertMatch(foreignClick, CLICK_URL);
  for (const q of ["", `?url=${encodeURIComponent(LINKS[0])}`, "?url=https://evil.test"]) {
    const r = await hit(local(stack, foreignClick) + q);
    assertEquals(r.status, 302);
    assertEquals(r.headers.get("location"), "https://other.test/deal", `foreign token with "${q}"`);
  }
  const foreignClicks = await waitForEvents(stack, other.key, foreign.id, "clicked", 3);
  assertEquals(foreignClicks.map((e: Json) => e.data.url), Array(3).fill("https://other.test/deal"));

  // None of the refused requests recorded anything on the main send.
  await sleep(400);
  assertEquals(
    (await eventsOf(stack, shop.key, main.id, "clicked")).length,
    clicksBefore + 2,
    "only the two ?url= clicks were recorded",
  );
  assertEquals((await eventsOf(stack, shop.key, main.id, "opened")).length, opensBefore, "no opens recorded");
  assertEquals(await eventsOf(stack, shop.key, main.id, "unsubscribed"), []);
});

trackingTest("tracking 4b: a token spelled another way (non-canonical base64url) is refused too", async (f) => {
  const { stack, shop } = f;
  const { send: main, clickUrls } = await deliverTracked(f);
  // 31 bytes take 42 base64url characters; the last one carries 2 bits and 4 unused ones.
  // Changing only unused bits decodes to the same bytes; a strict decoder refuses it.
  const clickToken = clickUrls[0].match(CLICK_URL)![1];
  const other = tamper(clickToken, clickToken.length - 1, 0b000001);
  assert(other !== clickToken);
  const r = await hit(`${stack.url}/t/c/${other}`);
  assertEquals(r.status, 404, `one character changed (${clickToken} → ${other}) is not the same token`);
  assertEquals(r.headers.get("location"), null);
  await sleep(400);
  assertEquals(await eventsOf(stack, shop.key, main.id, "clicked"), [], "no click recorded");
});

trackingTest(
  "tracking 5: unsubscribe: GET only asks, one-click POST unsubscribes, later sends suppressed",
  async (f) => {
    const { stack, shop } = f;
    const reader = "reader@example.test";
    const { send: main, unsubUrl } = await deliverTracked(f, reader);
    const page = await hit(local(stack, unsubUrl), { ua: BROWSER_UA });
    assertEquals(page.status, 200);
    assertMatch(page.headers.get("content-type") ?? "", /^text\/html/);
    assertMatch(page.text, /<form\b[^>]*\bmethod=["']?post["']?/i, "the page asks to confirm with a POST form");
    await hit(local(stack, unsubUrl), { method: "HEAD", ua: SCANNER_UA }); // a prefetch changes nothing either
    await sleep(500);
    assertEquals(await eventsOf(stack, shop.key, main.id, "unsubscribed"), [], "a GET never unsubscribes");
    assertEquals(await contactStatus(stack, shop.key, reader), "SUBSCRIBED");

    // RFC 8058: what a mailbox provider sends, with no cookies or session.
    const r = await hit(local(stack, unsubUrl), {
      method: "POST",
      headers: { "content-type": "application/x-www-form-urlencoded" },
      body: "List-Unsubscribe=One-Click",
    });
    assertEquals(r.status, 200);
    const [ev] = await waitForEvents(stack, shop.key, main.id, "unsubscribed", 1);
    assertEquals(ev.data.via, "one-click");
    await waitFor(
      async () => (await contactStatus(stack, shop.key, reader)) === "UNSUBSCRIBED",
      3000,
      "UNSUBSCRIBED",
    );

    const later = await send(stack, shop.key, { templateId: shop.templateId, to: reader });
    assertEquals(later.status, "suppressed");
    await sleep(500);
    const s = await getSend(stack, shop.key, later.id);
    assertEquals(s.status, "suppressed");
    assertEquals(s.events.map((e: Json) => e.type), ["suppressed"]);
    assertEquals(stack.sink.messages.filter((m) => m.to.includes(reader)).length, 1, "no mail after unsubscribing");
  },
);

trackingTest(
  "tracking 6: trackOpens/trackClicks per send override the template's defaults",
  async ({ stack, shop }) => {
    const base = { templateId: shop.templateId, personalizations: { order_id: "6" } };
    const isOriginal = (html: string) => {
      assertEquals(hrefs(html).slice(0, 2), [
        "https://shop.test/orders/42?utm_source=mail&amp;utm_medium=email",
        LINKS[1],
      ], "links are not rewritten");
      assertNotMatch(html, /\/t\/c\//);
    };

    const off = await deliver(stack, shop.key, {
      ...base,
      to: "off@example.test",
      trackOpens: false,
      trackClicks: false,
    });
    assertEquals([off.send.trackOpens, off.send.trackClicks], [false, false]);
    isOriginal(off.mail.html);
    assertEquals(pixels(off.mail.html), [], "no pixel");
    assertNotMatch(off.mail.html, /\/t\/o\//);
    assertMatch(hrefs(off.mail.html)[5], UNSUB_URL, "the unsubscribe link is not tracking: still there");
    assertEquals(rawHeader(off.mail, "List-Unsubscribe").length, 1);

    const clicksOnly = await deliver(stack, shop.key, { ...base, to: "clicks@example.test", trackOpens: false });
    assertEquals(pixels(clicksOnly.mail.html), []);
    for (const u of hrefs(clicksOnly.mail.html).slice(0, 2)) assertMatch(u, CLICK_URL);

    const opensOnly = await deliver(stack, shop.key, { ...base, to: "opens@example.test", trackClicks: false });
    assertEquals(pixels(opensOnly.mail.html).length, 1);
    isOriginal(opensOnly.mail.html);

    // A template with tracking off by default (the harness's), and the same links.
    const quiet = await stack.tenant({ domain: "quiet.test", template: { html: HTML, text: TEXT } });
    const plain = await deliver(stack, quiet.key, { templateId: quiet.templateId, to: "plain@example.test" });
    assertEquals([plain.send.trackOpens, plain.send.trackClicks], [false, false]);
    isOriginal(plain.mail.html);
    assertEquals(pixels(plain.mail.html), []);

    const on = await deliver(stack, quiet.key, {
      templateId: quiet.templateId,
      to: "on@example.test",
      trackOpens: true,
      trackClicks: true,
    });
    assertEquals([on.send.trackOpens, on.send.trackClicks], [true, true]);
    const onLinks = hrefs(on.mail.html).slice(0, 2);
    for (const u of onLinks) assertMatch(u, CLICK_URL);
    const [px] = pixels(on.mail.html);
    assertMatch(px, OPEN_URL);

    // And it works: a browser within 2 s of sending is still taken for a link scanner.
    const since = Date.now() - Date.parse(on.send.sentAt);
    assert(since < 1500, `the pixel is fetched within the scanner window (${since} ms after sending)`);
    assertEquals((await hit(local(stack, px), { ua: BROWSER_UA })).status, 200);
    const r = await hit(local(stack, onLinks[1]), { ua: BROWSER_UA });
    assertEquals(r.status, 302);
    assertEquals(r.headers.get("location"), LINKS[1]);
    const [open] = await waitForEvents(stack, quiet.key, on.send.id, "opened", 1);
    assertEquals([open.data.machine, open.data.machineReason], [true, "scanner"]);
    const [click] = await waitForEvents(stack, quiet.key, on.send.id, "clicked", 1);
    assertEquals([click.data.url, click.data.link, click.data.machine], [LINKS[1], 1, true]);
    const s = await getSend(stack, quiet.key, on.send.id);
    assert(s.openedAt && s.clickedAt);
  },
);

trackingTest(
  "tracking 6b: opens and clicks of one send arriving together: every event kept, both first times set",
  async ({ stack, shop }) => {
    const { send, mail } = await deliver(stack, shop.key, {
      templateId: shop.templateId,
      to: "together@example.test",
      personalizations: { order_id: "6b" },
    });
    const [px] = pixels(mail.html);
    const link = hrefs(mail.html)[1];
    // Fired at once, they are written in the same groups: one statement must stamp both
    // columns of the same send row (two updates of one row in a statement keep only one).
    const answers = await Promise.all(
      Array.from({ length: 20 }, (_, i) => hit(local(stack, i % 2 ? link : px), { ua: BROWSER_UA })),
    );
    assertEquals(answers.map((r) => r.status).sort(), [...Array(10).fill(200), ...Array(10).fill(302)]);
    assertEquals((await waitForEvents(stack, shop.key, send.id, "opened", 10)).length, 10);
    assertEquals((await waitForEvents(stack, shop.key, send.id, "clicked", 10)).length, 10);
    const s = await getSend(stack, shop.key, send.id);
    assert(s.openedAt, "openedAt is set");
    assert(s.clickedAt, "clickedAt is set");
  },
);

trackingTest("tracking 7: GraphQL send(id) shows the same openedAt, clickedAt and events", async (f) => {
  const { stack, shop } = f;
  const { send: main, sentAt, clickUrls, openUrl, unsubUrl } = await deliverTracked(f);
  // Opens by a scanner and by Apple's proxy, clicks on both links, the first again by a
  // scanner and twice with a ?url= that changes nothing, a one-click unsubscribe, and, past
  // the scanner window, an open by a person.
  assertEquals((await hit(local(stack, openUrl), { ua: SCANNER_UA })).status, 200);
  await waitForEvents(stack, shop.key, main.id, "opened", 1);
  assertEquals((await hit(local(stack, openUrl), { ua: APPLE_MPP_UA })).status, 200);
  await waitForEvents(stack, shop.key, main.id, "opened", 2);
  const clicks: [string, string | undefined][] = [
    [clickUrls[0], BROWSER_UA],
    [clickUrls[1], BROWSER_UA],
    [clickUrls[0], SCANNER_UA],
    [clickUrls[0] + "?url=https://evil.test", undefined],
    [clickUrls[0] + "?url=https%3A%2F%2Fevil.test&redirect=https://evil.test&link=1", undefined],
  ];
  for (const [i, [u, ua]] of clicks.entries()) {
    assertEquals((await hit(local(stack, u), { ua })).status, 302);
    await waitForEvents(stack, shop.key, main.id, "clicked", i + 1);
  }
  const unsub = await hit(local(stack, unsubUrl), {
    method: "POST",
    headers: { "content-type": "application/x-www-form-urlencoded" },
    body: "List-Unsubscribe=One-Click",
  });
  assertEquals(unsub.status, 200);
  await waitForEvents(stack, shop.key, main.id, "unsubscribed", 1);
  await pastScannerWindow(sentAt);
  assertEquals((await hit(local(stack, openUrl), { ua: BROWSER_UA })).status, 200);
  await waitForEvents(stack, shop.key, main.id, "opened", 3);

  const rest = await getSend(stack, shop.key, main.id);
  const { send: g } = await gql(
    stack,
    shop.key,
    `query($id: ID!) { send(id: $id) { openedAt clickedAt events { type data } } }`,
    { id: main.id },
  );
  assert(g.openedAt && g.clickedAt);
  assertEquals(Date.parse(g.openedAt), Date.parse(rest.openedAt));
  assertEquals(Date.parse(g.clickedAt), Date.parse(rest.clickedAt));
  assertEquals(
    g.events.map((e: Json) => e.type),
    rest.events.map((e: Json) => e.type.toUpperCase()),
  );
  const tracked = (evs: Json[], type: string) => evs.filter((e) => e.type.toLowerCase() === type);
  assertEquals(tracked(g.events, "opened").map((e) => e.data), tracked(rest.events, "opened").map((e) => e.data));
  assertEquals(
    tracked(g.events, "clicked").map((e) => e.data),
    tracked(rest.events, "clicked").map((e) => e.data),
  );
  assertEquals(
    tracked(g.events, "opened").map((e) => [e.data.machine, e.data.machineReason ?? null]),
    [[true, "scanner"], [true, "apple_mpp"], [false, null]],
  );
  assertEquals(
    tracked(g.events, "clicked").map((e) => [e.data.url, e.data.link]),
    [[LINKS[0], 0], [LINKS[1], 1], [LINKS[0], 0], [LINKS[0], 0], [LINKS[0], 0]],
  );
  assertEquals(tracked(g.events, "unsubscribed").map((e) => e.data.via), ["one-click"]);
});

Deno.test("tracking tokens carry RFC 2104 HMAC-SHA256 (the same bytes as node:crypto's createHmac)", () => {
  for (const secret of ["short-secret-16ch", "k".repeat(64), "a-very-long-secret-".repeat(8)]) {
    for (const [kind, link] of [["open", 0], ["click", 3], ["unsubscribe", 0], ["bounce", 0]] as const) {
      const raw = Buffer.from(signToken(secret, kind, crypto.randomUUID(), link), "base64url");
      const expected = createHmac("sha256", secret).update(raw.subarray(0, 19)).digest().subarray(0, 12);
      assertEquals(
        raw.subarray(19).toString("hex"),
        expected.toString("hex"),
        `${kind} with a ${secret.length}-char secret`,
      );
    }
  }
});
