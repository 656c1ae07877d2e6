/**
 * The RFC 5322 / MIME message of one transactional email, built in one synchronous pass.
 *
 * Why not nodemailer's MailComposer: it builds a tree of stream nodes and pipes every part
 * through transforms, ~300 µs of the event loop per message here; composing was the largest
 * share of a delivery's CPU (bench/scenarios/drain.ts). Our messages have one shape (headers, then
 * text, HTML or both as multipart/alternative), so we write that shape directly and use the
 * encoders nodemailer itself is built on, as their own packages (libqp: quoted-printable;
 * libmime: RFC 2047 words, header folding) for the parts that are easy to get wrong. The
 * output parses to the same values with mailparser (tested).
 *
 * One byte representation from here to the socket: the message is encoded once into an
 * array with room before it (HEADROOM), signDkim writes its header into that room
 * (`prepend`), and the relay connection gets a view of the same memory.
 */
import libmime from "libmime";
import { encode as qpEncode, wrap as qpWrap } from "libqp";

/** What goes into a message. Header values must be single lines; line breaks are folded to spaces. */
export interface MimeMessage {
  from: { name?: string; address: string };
  to: string;
  /** Written as `Cc:` (bcc is never written: it is only in the envelope). */
  cc?: string[];
  /**
   * The `To:` and `Cc:` values as a submitted message wrote them (one line each, encoded words
   * kept), instead of `to` and `cc`: who gets the message is the envelope's business.
   */
  shown?: { to: string | null; cc: string | null };
  replyTo?: string;
  subject: string;
  html?: string;
  text?: string;
  /** With angle brackets. */
  messageId: string;
  /** More headers, in order, after the standard ones. */
  headers?: Record<string, string>;
  /** The Date header; default now. */
  date?: Date;
  /** Files after the body (multipart/mixed); those with a contentId inline beside the HTML (multipart/related). */
  attachments?: MimeAttachment[];
}

/** One file of a message, its body already encoded (attachments/service.ts caches it per process). */
export interface MimeAttachment {
  filename: string;
  contentType: string;
  /** Inline (`cid:`), without angle brackets. */
  contentId?: string | null;
  /** Base64 in lines of 76 with CRLF between them (ASCII). */
  body: Uint8Array;
}

/** A piece of a message: text, or bytes already encoded (a file's base64 body). */
type Chunk = string | Uint8Array;

/** A MIME entity: its Content-* header fields (each ending in CRLF) and its body. */
interface Entity {
  headers: string;
  body: Chunk[];
}

const CRLF = "\r\n";

/** Any line break, for normalizing bodies to CRLF and header values to one line. */
const LINE_BREAK = /\r\n|\r|\n/g;

/** A display name that can go out as is (nodemailer's rule: word characters and spaces). */
const PLAIN_NAME = /^[\w ]*$/;
/** Printable ASCII: a name with specials is quoted, anything else is an encoded word. */
const PRINTABLE_ASCII = /^[\x20-\x7e]*$/;
/** Control characters an unstructured header cannot carry as text (HT is folding whitespace). */
// deno-lint-ignore no-control-regex -- matching control characters is the point
const HEADER_CONTROL = /[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]/;

/** An RFC 5322 quoted-string: a quote or a backslash inside goes out as a quoted-pair. */
function quoteString(value: string): string {
  return `"${value.replace(/["\\]/g, "\\$&")}"`;
}

/** `Name <address>`, the name quoted or RFC 2047-encoded when it needs to be. */
function mailbox(m: { name?: string; address: string }): string {
  const name = m.name?.replace(LINE_BREAK, " ").trim();
  if (!name) return m.address;
  const shown = PLAIN_NAME.test(name)
    ? name
    : PRINTABLE_ASCII.test(name)
    ? quoteString(name)
    : libmime.encodeWord(name, "Q", 52);
  return `${shown} <${m.address}>`;
}

/** An unstructured value (Subject, custom headers): one line, encoded words where needed. */
function unstructured(value: string): string {
  // Trailing blanks would end a header line, where parsers drop them anyway.
  const line = value.replace(LINE_BREAK, " ").trimEnd();
  return HEADER_CONTROL.test(line) ? libmime.encodeWord(line, "Q", 52) : libmime.encodeWords(line, "Q", 52);
}

/** One header field, folded at 76 columns where it has whitespace to fold at. */
function field(name: string, value: string): string {
  return libmime.foldLines(`${name}: ${value}`, 76) + CRLF;
}

/** A body as quoted-printable with CRLF line ends and soft breaks at 76 columns. */
function quotedPrintable(body: string): string {
  const normalized = body.replace(LINE_BREAK, CRLF);
  return qpWrap(qpEncode(normalized), 76);
}

/** A text part's own header fields (the body is always UTF-8 in quoted-printable). */
function partHeaders(type: "text/plain" | "text/html"): string {
  return `Content-Type: ${type}; charset=utf-8${CRLF}Content-Transfer-Encoding: quoted-printable${CRLF}`;
}

/** RFC 5322 date-time in UTC: `Thu, 26 Nov 2026 11:58:45 +0000`. */
function rfc5322Date(d: Date): string {
  return d.toUTCString().replace(/GMT$/, "+0000");
}

/**
 * A multipart boundary that cannot occur in a quoted-printable body: in QP an `=` is always
 * followed by two hex digits or a line break, never by `_`.
 */
function boundary(): string {
  return `=_pp_${crypto.randomUUID().replaceAll("-", "")}`;
}

/** The text body: a text or HTML part, or both as multipart/alternative (text first, so clients prefer HTML). */
function textEntity(msg: MimeMessage): Entity {
  if (msg.html !== undefined && msg.text !== undefined) {
    return multipart("alternative", [
      { headers: partHeaders("text/plain"), body: [quotedPrintable(msg.text)] },
      { headers: partHeaders("text/html"), body: [quotedPrintable(msg.html)] },
    ]);
  }
  const html = msg.html !== undefined;
  // No line break of our own after the body: a reader would take it for part of the text.
  return {
    headers: partHeaders(html ? "text/html" : "text/plain"),
    body: [quotedPrintable((html ? msg.html : msg.text) ?? "")],
  };
}

/** `multipart/<subtype>` around `parts`. */
function multipart(subtype: string, parts: Entity[]): Entity {
  const b = boundary();
  const body: Chunk[] = [];
  for (const p of parts) body.push(`--${b}${CRLF}${p.headers}${CRLF}`, ...p.body, CRLF);
  body.push(`--${b}--${CRLF}`);
  return { headers: `Content-Type: multipart/${subtype};${CRLF} boundary="${b}"${CRLF}`, body };
}

/** A file's part: its type and name (RFC 2231 when not ASCII), base64, attachment or inline with its Content-ID. */
function fileEntity(a: MimeAttachment, inline: boolean): Entity {
  let headers =
    field("Content-Type", libmime.buildHeaderValue({ value: a.contentType, params: { name: a.filename } })) +
    `Content-Transfer-Encoding: base64${CRLF}` +
    field(
      "Content-Disposition",
      libmime.buildHeaderValue({ value: inline ? "inline" : "attachment", params: { filename: a.filename } }),
    );
  if (a.contentId) headers += field("Content-ID", `<${a.contentId}>`);
  return { headers, body: [a.body] };
}

/**
 * The message as bytes with CRLF line endings (what DKIM canonicalizes and SMTP carries):
 * From, To, Cc, Reply-To, Subject, Message-ID, Date, MIME-Version, the extra headers, then the
 * body: a text or HTML part, or both as multipart/alternative; with inline files
 * (`contentId`) and HTML, that body and those files as multipart/related; with other files,
 * all of it and them as multipart/mixed. Bodies are UTF-8 in quoted-printable, files base64;
 * header values with non-ASCII text are RFC 2047 encoded words, file names RFC 2231
 * parameters. A message with neither body gets an empty text part.
 */
export function buildMime(msg: MimeMessage): Uint8Array {
  const to = msg.shown ? msg.shown.to : msg.to;
  const cc = msg.shown ? msg.shown.cc : msg.cc?.length ? msg.cc.join(", ") : null;
  let head = field("From", mailbox(msg.from));
  if (to) head += field("To", to.replace(LINE_BREAK, " "));
  if (cc) head += field("Cc", cc.replace(LINE_BREAK, " "));
  if (msg.replyTo) head += field("Reply-To", msg.replyTo);
  head += field("Subject", unstructured(msg.subject)) +
    field("Message-ID", msg.messageId) +
    field("Date", rfc5322Date(msg.date ?? new Date())) +
    `MIME-Version: 1.0${CRLF}`;
  for (const [name, value] of Object.entries(msg.headers ?? {})) head += field(name, unstructured(value));

  let entity = textEntity(msg);
  const files = msg.attachments ?? [];
  // Inline files belong beside the HTML that refers to them; without HTML they are attachments.
  const inline = msg.html !== undefined ? files.filter((f) => f.contentId) : [];
  const attached = files.filter((f) => !inline.includes(f));
  if (inline.length) entity = multipart("related", [entity, ...inline.map((f) => fileEntity(f, true))]);
  if (attached.length) entity = multipart("mixed", [entity, ...attached.map((f) => fileEntity(f, false))]);
  return encodeWithHeadroom([head + entity.headers + CRLF, ...entity.body]);
}

/** Bytes kept free before a built message for the DKIM-Signature header (≈ 700 bytes with a 2048-bit key). */
const HEADROOM = 2048;
const encoder = new TextEncoder();
/**
 * Where buildMime put file bodies, by the memory of the message (offsets in its ArrayBuffer,
 * end exclusive): any view of that memory finds them, such as the signed message (dkim.ts
 * prepend) or the Buffer nodemailer hands its dot-stuffing transform (dot_stuff.ts).
 */
const base64Spans = new WeakMap<ArrayBufferLike, [number, number][]>();

/**
 * The byte ranges of `view` (offsets in it, end exclusive, in order) that hold base64 file
 * bodies buildMime wrote (lines of base64 characters and CRLF, nothing else; clipped to the
 * view); [] for an array over any other memory. Such bytes are their own DKIM relaxed form,
 * and SMTP transparency leaves them alone (no dot, no bare CR or LF): the signer (dkim.ts) and
 * the dot-stuffing loop (dot_stuff.ts) pass over them.
 */
export function knownBase64(view: Uint8Array): readonly [number, number][] {
  const spans = base64Spans.get(view.buffer);
  if (!spans) return [];
  const from = view.byteOffset, to = from + view.byteLength;
  const out: [number, number][] = [];
  for (const [s, e] of spans) {
    if (e > from && s < to) out.push([Math.max(s, from) - from, Math.min(e, to) - from]);
  }
  return out;
}

/** Messages whose room before them is still free: only buildMime's own, never a caller's array. */
const roomy = new WeakSet<Uint8Array>();

/** The chunks as UTF-8 in one new array with HEADROOM free bytes before it. */
function encodeWithHeadroom(chunks: Chunk[]): Uint8Array {
  if (chunks.every((c) => typeof c === "string")) return encodeTextWithHeadroom(chunks.join(""));
  const parts = chunks.map((c) => typeof c === "string" ? encoder.encode(c) : c);
  const size = parts.reduce((n, p) => n + p.byteLength, 0);
  const buf = new Uint8Array(HEADROOM + size);
  const spans: [number, number][] = [];
  let at = HEADROOM;
  for (let i = 0; i < parts.length; i++) {
    buf.set(parts[i], at);
    // The bytes chunks are file bodies: base64 lines, no blanks.
    if (typeof chunks[i] !== "string") spans.push([at, at + parts[i].byteLength]);
    at += parts[i].byteLength;
  }
  const message = buf.subarray(HEADROOM);
  roomy.add(message);
  base64Spans.set(buf.buffer, spans);
  return message;
}

/** `text` as UTF-8 in a new array with HEADROOM free bytes before it, encoded in place (one copy). */
function encodeTextWithHeadroom(text: string): Uint8Array {
  // Nearly every message is ASCII (bodies are quoted-printable, headers encoded words): one
  // byte per unit; an address with non-ASCII text needs the 3-bytes-per-unit bound.
  for (const perUnit of [1, 3]) {
    const buf = new Uint8Array(HEADROOM + text.length * perUnit);
    const { read, written } = encoder.encodeInto(text, buf.subarray(HEADROOM));
    if (read === text.length) {
      const message = buf.subarray(HEADROOM, HEADROOM + written);
      roomy.add(message);
      return message;
    }
  }
  throw new Error("unreachable: UTF-8 needs at most 3 bytes per UTF-16 unit");
}

/**
 * `head` followed by `message`, as one array: written into the room before a message of
 * buildMime's (no copy of the message; that room is then used up), else a new array.
 */
export function prepend(head: Uint8Array, message: Uint8Array): Uint8Array {
  if (roomy.has(message) && head.length <= HEADROOM) {
    roomy.delete(message);
    const out = new Uint8Array(message.buffer, message.byteOffset - head.length, head.length + message.byteLength);
    out.set(head, 0);
    return out;
  }
  const out = new Uint8Array(head.length + message.byteLength);
  out.set(head, 0);
  out.set(message, head.length);
  return out;
}
