/**
 * Tracking tokens and the HTML rewrite. A token names a send, what it is for (open pixel,
 * click on link N, unsubscribe, bounce return-path) and carries an HMAC-SHA256 (PP_SECRET),
 * so it cannot be forged or moved to another send. A click token holds only the link's
 * index: the redirect target is the URL stored for that send, never one from the request.
 */
import { createHash, type Hash, timingSafeEqual } from "node:crypto";
import { Buffer } from "node:buffer";
import { QuoteType, Tokenizer } from "htmlparser2";

/** What a token is for. */
export type TokenKind = "open" | "click" | "unsubscribe" | "bounce";

const KIND_BYTE: Record<TokenKind, number> = { open: 1, click: 2, unsubscribe: 3, bounce: 4 };
const KIND_OF = new Map(Object.entries(KIND_BYTE).map(([k, v]) => [v, k as TokenKind]));
const MAC_BYTES = 12;

/** A verified token's contents. */
export interface TokenClaims {
  kind: TokenKind;
  sendId: string;
  /** The link index, for clicks. */
  link: number;
}

function uuidBytes(id: string): Buffer {
  return Buffer.from(id.replaceAll("-", ""), "hex");
}

function uuidString(b: Uint8Array): string {
  const h = Buffer.from(b).toString("hex");
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}

/**
 * HMAC-SHA256 (RFC 2104) with the key's inner and outer pad hashed once per secret and copied
 * per token: every delivered message needs five tokens, and this is 9 µs a token where
 * createHmac took 21 µs (Deno 2.9, this machine). Same bytes as createHmac (tested).
 */
const padHashes = new Map<string, { inner: Hash; outer: Hash }>();

function mac(secret: string, body: Uint8Array): Buffer {
  let pads = padHashes.get(secret);
  if (!pads) {
    const raw = Buffer.from(secret);
    const key: Uint8Array = raw.length > 64 ? createHash("sha256").update(raw).digest() : raw;
    const ipad = Buffer.alloc(64, 0x36);
    const opad = Buffer.alloc(64, 0x5c);
    key.forEach((b, i) => {
      ipad[i] ^= b;
      opad[i] ^= b;
    });
    pads = { inner: createHash("sha256").update(ipad), outer: createHash("sha256").update(opad) };
    padHashes.set(secret, pads);
  }
  const inner = pads.inner.copy().update(body).digest();
  return pads.outer.copy().update(inner).digest().subarray(0, MAC_BYTES);
}

/** A URL-safe token for `kind` on `sendId` (and link `link` for clicks). */
export function signToken(secret: string, kind: TokenKind, sendId: string, link = 0): string {
  const body = Buffer.alloc(19);
  body[0] = KIND_BYTE[kind];
  uuidBytes(sendId).copy(body, 1);
  body.writeUInt16BE(link, 17);
  return Buffer.concat([body, mac(secret, body)]).toString("base64url");
}

/** The claims of a genuine token of `kind`, or null for anything tampered, truncated or foreign. */
export function verifyToken(secret: string, token: string, kind: TokenKind): TokenClaims | null {
  if (!/^[A-Za-z0-9_-]{42}$/.test(token)) return null;
  const raw = Buffer.from(token, "base64url");
  // One spelling per token: base64url's spare low bits must not make a second valid token.
  if (raw.length !== 19 + MAC_BYTES || raw.toString("base64url") !== token) return null;
  const body = raw.subarray(0, 19);
  if (!timingSafeEqual(raw.subarray(19), mac(secret, body))) return null;
  if (KIND_OF.get(body[0]) !== kind) return null;
  return { kind, sendId: uuidString(body.subarray(1, 17)), link: body.readUInt16BE(17) };
}

/** The public URLs of one send's tracking endpoints. */
export function trackingUrls(publicUrl: string, secret: string, sendId: string) {
  const base = publicUrl.replace(/\/+$/, "");
  return {
    open: `${base}/t/o/${signToken(secret, "open", sendId)}`,
    click: (i: number) => `${base}/t/c/${signToken(secret, "click", sendId, i)}`,
    unsubscribe: `${base}/u/${signToken(secret, "unsubscribe", sendId)}`,
  };
}

const MAX_LINKS = 500;

function decodeEntities(v: string): string {
  return v.replace(
    /&(amp|quot|#39|#x27|lt|gt);/g,
    (_, e: string) => ({ amp: "&", quot: '"', "#39": "'", "#x27": "'", lt: "<", gt: ">" })[e]!,
  );
}

/** Where the rewrite edits an HTML document: found in one tokenizer pass. */
interface HtmlMarks {
  /** The first valued `href` of each `<a>` tag, in document order: its value as written, and its span with quotes. */
  hrefs: { start: number; end: number; value: string }[];
  /** Where the first `</body>` begins, or -1. */
  bodyClose: number;
}

/**
 * Finds the `<a href>` values and the first `</body>` with htmlparser2's tokenizer: a state
 * machine that reads each character once (no regex, no backtracking), so any input costs
 * linear time. Entities are left as written (`decodeEntities: false`) so that spans are
 * exact offsets into `html`; comments, scripts and attribute values are not mistaken for tags.
 */
function markHtml(html: string): HtmlMarks {
  const marks: HtmlMarks = { hrefs: [], bodyClose: -1 };
  let inAnchor = false; // inside an `<a …>` open tag
  let anchorHasHref = false; // its first valued href is taken (browsers use the first)
  let isHref = false; // the attribute being read is `href`
  let valueStart = -1;
  let valueEnd = -1;
  const noop = () => {};
  const tokenizer = new Tokenizer({ decodeEntities: false }, {
    onopentagname(start, end) {
      inAnchor = end - start === 1 && (html.charCodeAt(start) | 0x20) === 0x61; // "a" or "A"
      anchorHasHref = false;
    },
    onattribname(start, end) {
      isHref = inAnchor && !anchorHasHref && end - start === 4 && html.slice(start, end).toLowerCase() === "href";
      valueStart = -1;
    },
    onattribdata(start, end) {
      // A value may come in more than one piece (at the end of the input); keep its whole span.
      if (!isHref) return;
      if (valueStart < 0) valueStart = start;
      valueEnd = end;
    },
    onattribend(quote, end) {
      if (!isHref) return;
      isHref = false;
      if (quote === QuoteType.NoValue || valueStart < 0) return;
      anchorHasHref = true;
      const quoted = quote === QuoteType.Double || quote === QuoteType.Single;
      marks.hrefs.push({
        start: quoted ? valueStart - 1 : valueStart,
        end: quoted ? end : valueEnd,
        value: html.slice(valueStart, valueEnd),
      });
    },
    onopentagend() {
      inAnchor = false;
    },
    onselfclosingtag() {
      inAnchor = false;
    },
    onclosetag(start, end) {
      inAnchor = false;
      if (marks.bodyClose < 0 && end - start === 4 && html.slice(start, end).toLowerCase() === "body") {
        marks.bodyClose = html.lastIndexOf("<", start);
      }
    },
    onattribentity: noop,
    oncdata: noop,
    oncomment: noop,
    ondeclaration: noop,
    onend: noop,
    onprocessinginstruction: noop,
    ontext: noop,
    ontextentity: noop,
  });
  tokenizer.write(html);
  tokenizer.end();
  return marks;
}

/**
 * Rewrites every absolute http(s) link of `<a href>` through the click endpoint and adds
 * the open pixel before the first `</body>` (at the end when there is none). Other schemes
 * (mailto:, tel:, javascript:) and relative URLs are left as they are; so is the unsubscribe
 * link; past MAX_LINKS links the rest stay as written. Returns the HTML and the original
 * URLs (entities decoded, as a browser follows them), by index. Linear in the HTML's length.
 */
export function rewriteHtml(
  html: string,
  opts: { trackClicks: boolean; trackOpens: boolean; urls: ReturnType<typeof trackingUrls> },
): { html: string; links: string[] } {
  const links: string[] = [];
  if (!opts.trackClicks && !opts.trackOpens) return { html, links };
  const marks = markHtml(html);
  // The edits, in document order: each replaces html[start, end) with text.
  const edits: { start: number; end: number; text: string }[] = [];
  if (opts.trackClicks) {
    for (const href of marks.hrefs) {
      const url = decodeEntities(href.value.trim());
      if (!/^https?:\/\//i.test(url) || url === opts.urls.unsubscribe || links.length >= MAX_LINKS) continue;
      links.push(url);
      edits.push({ start: href.start, end: href.end, text: `"${opts.urls.click(links.length - 1)}"` });
    }
  }
  if (opts.trackOpens) {
    const pixel = `<img src="${opts.urls.open}" width="1" height="1" alt="" style="display:none" />`;
    const at = marks.bodyClose >= 0 ? marks.bodyClose : html.length;
    // A link after </body> is rare but possible: the pixel goes in its place among the edits.
    let i = edits.length;
    while (i > 0 && edits[i - 1].start >= at) i--;
    edits.splice(i, 0, { start: at, end: at, text: pixel });
  }
  const parts: string[] = [];
  let at = 0;
  for (const e of edits) {
    parts.push(html.slice(at, e.start), e.text);
    at = e.end;
  }
  parts.push(html.slice(at));
  return { html: parts.join(""), links };
}
