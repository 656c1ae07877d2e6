/**
 * Reading bounce and complaint reports that arrive by mail: delivery status notifications
 * (RFC 3464, `multipart/report; report-type=delivery-status`) and ARF feedback reports
 * (RFC 5965, `multipart/report; report-type=feedback-report`). Pure functions: no database,
 * no clock except the fallback "now" for reports without a date.
 *
 * Reports come from anyone who can reach the listener, so reading one is linear in its size
 * and bounded by {@link REPORT_LIMITS}: the raw message is scanned once, line by line (a
 * longer line is cut at `maxLine`), by two small state machines at the same time: a MIME
 * one that follows the declared boundaries, and a lenient one that, like a human, takes the
 * body after any `Content-Type: message/delivery-status` line up to the next `--boundary`
 * line (for reports whose MIME structure is broken). No regular expression here can
 * backtrack on report text: the few that remain are anchored with bounded repeats, and
 * values are capped before any of them runs. (mailparser, used before, built the whole
 * message tree and threw at its limits, after which the raw text was searched again with
 * regexes, one of which was quadratic in an `Arrival-Date` of `(`s.)
 *
 * What we need of a report is small: the top-level `Date`, the bodies of its
 * `message/(global-)delivery-status` and `message/feedback-report` parts, and the header
 * block of the returned original (`message/rfc822`, `text/rfc822-headers`, …).
 */
import { Buffer } from "node:buffer";
import { verifyToken } from "../mail/tracking.ts";

/** One outcome for one recipient, as a report states it. */
export interface InboundReport {
  /** `dsn` (RFC 3464) or `arf` (RFC 5965). */
  source: "dsn" | "arf";
  type: "delivered" | "bounced" | "complained";
  /** For `bounced`: `hard` (5.x.x, or failed without a status) or `soft` (4.x.x, delayed). */
  bounceType?: "hard" | "soft";
  /** DSN `Action` (failed, delayed, delivered, relayed, expanded). */
  action?: string;
  /** Enhanced status code, e.g. `5.1.1`. */
  status?: string;
  /** DSN `Diagnostic-Code` without its type (`smtp; `), at most 1000 characters. */
  diagnostic?: string;
  /** ARF `Feedback-Type` (abuse, fraud, virus, other). */
  feedbackType?: string;
  /** The MTA that wrote the report (`Reporting-MTA`), or the ARF `User-Agent`. */
  reporter?: string;
  /** `Remote-MTA` of a DSN, when given. */
  remoteMta?: string;
  /**
   * DSN: the recipient group's `Final-Recipient` address, lower-cased, without its type and
   * angle brackets; undefined when the group has none. ARF: undefined (feedback loops
   * usually redact the recipient).
   */
  recipient?: string;
  /** ISO 8601: the report's own date fields, else its Date header, else now. */
  occurredAt: string;
  /**
   * VERP tokens that may name the send, most trusted first: from the SMTP envelope's
   * RCPT TO, then (ARF) `Original-Mail-From`. Unverified here; see {@link resolveSend}.
   */
  verpTokens: string[];
  /** What the returned original message's headers say (unauthenticated). */
  original: { sendId?: string; messageId?: string };
}

/** How {@link resolveSend} named the send. */
export type SendRefVia = "verp" | "x-pp-send-id" | "message-id";

/** Options of {@link parseReport}. */
export interface ParseOptions {
  /** The SMTP envelope's RCPT TO addresses; `bounces+<token>@…` ones give VERP tokens. */
  envelopeTo?: string[];
  /** The fallback date for reports that carry none; default now. */
  now?: Date;
}

/**
 * What one report may hold; what lies beyond a limit is skipped (still scanned past, once),
 * never an error. Our sends have one recipient (plus at most 100 cc/bcc), so a genuine DSN
 * about one of them is far inside every limit.
 */
export const REPORT_LIMITS = {
  /** Bytes of a message that are read (the SMTP listener refuses messages over 10 MiB). */
  maxBytes: 10 * 1024 * 1024,
  /** Characters of a line that are read; the rest of a longer line is skipped (RFC 5322 allows 998). */
  maxLine: 1000,
  /** Characters of a field's value, its folded lines joined. */
  maxField: 1000,
  /** Characters of one header block: the message's, a part's, the returned original's. */
  maxHeader: 64 * 1024,
  /** Characters of one delivery-status or feedback-report part. */
  maxPart: 64 * 1024,
  /** Report parts (delivery-status and feedback-report) read per message; returned originals likewise. */
  maxParts: 20,
  /** Recipient groups read per message, over all its delivery-status parts. */
  maxGroups: 200,
  /** Nesting of multiparts followed. */
  maxDepth: 8,
  /** Characters of a boundary (RFC 2046 allows 70). */
  maxBoundary: 200,
} as const;

const UUID_RE = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
const VERP_RE = /^<?bounces\+([A-Za-z0-9_-]{1,200})@[^>\s]{1,255}>?$/i;
const MESSAGE_ID_SEND_RE = /^<?([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})@[^<>\s]{1,255}>?$/i;
const DSN_FIELD_RE =
  /^(?:Reporting-MTA|Arrival-Date|Final-Recipient|Original-Recipient|Action|Status|Remote-MTA|Diagnostic-Code|Last-Attempt-Date|Will-Retry-Until):/i;
const STATUS_RE = /^([245])\.(\d{1,3})\.(\d{1,3})\b/;
const PLAIN_STATUS_RE = /^Status:[ \t]*[245]\.\d{1,3}\.\d{1,3}/i;
const PLAIN_NAMING_RE = /^(?:Action|Final-Recipient):/i;

/** Feedback types that count as a complaint; `not-spam`, `auth-failure` and others do not. */
const COMPLAINT_TYPES = new Set(["abuse", "fraud", "virus", "other"]);

type PartKind = "dsn" | "arf" | "original";

/** The report parts we read, by content type; every other part is skipped. */
const PART_KINDS = new Map<string, PartKind>([
  ["message/delivery-status", "dsn"],
  ["message/global-delivery-status", "dsn"],
  ["message/feedback-report", "arf"],
  ["message/rfc822", "original"],
  ["text/rfc822-headers", "original"],
  ["message/rfc822-headers", "original"],
  ["message/global", "original"],
  ["message/global-headers", "original"],
]);

/**
 * Parses one inbound message into the outcomes it reports: one item per recipient group of
 * a DSN, one item per ARF complaint; `[]` for anything else (an auto-reply, spam, a
 * `not-spam` feedback report). Linear in the size of `raw` and bounded by
 * {@link REPORT_LIMITS}; never throws for bad input: what makes no sense gives `[]`.
 */
export function parseReport(raw: Uint8Array | string, opts: ParseOptions = {}): InboundReport[] {
  const text = typeof raw === "string"
    ? raw.slice(0, REPORT_LIMITS.maxBytes)
    : new TextDecoder().decode(raw.subarray(0, REPORT_LIMITS.maxBytes));
  const now = opts.now ?? new Date();
  const envelopeTokens = (opts.envelopeTo ?? []).map(verpToken).filter((t): t is string => t !== null);

  const found = scanMessage(text);
  const fallbackDate = parseDate(found.date, now) ?? now;
  const original = originalIds(found.originals);
  const out: InboundReport[] = [];
  let groupsLeft: number = REPORT_LIMITS.maxGroups;

  for (const part of found.dsn) {
    const [perMessage = new Map<string, string>(), ...perRecipient] = fieldGroups(part, groupsLeft + 1);
    groupsLeft -= perRecipient.length;
    const reportDate = parseDate(perMessage.get("arrival-date"), now) ?? fallbackDate;
    const reporter = typed(perMessage.get("reporting-mta"));
    for (const r of perRecipient) {
      const item = dsnItem(r);
      if (!item) continue;
      out.push({
        source: "dsn",
        ...item,
        reporter,
        recipient: address(r.get("final-recipient")),
        occurredAt: (parseDate(r.get("last-attempt-date"), now) ?? reportDate).toISOString(),
        verpTokens: [...envelopeTokens],
        original,
      });
    }
    if (groupsLeft <= 0) break;
  }

  for (const part of found.arf) {
    const [f = new Map<string, string>()] = fieldGroups(part, 1);
    const feedbackType = f.get("feedback-type")?.trim().toLowerCase();
    if (!feedbackType || !COMPLAINT_TYPES.has(feedbackType)) continue;
    const mailFrom = verpToken(f.get("original-mail-from") ?? "");
    out.push({
      source: "arf",
      type: "complained",
      feedbackType,
      reporter: clean(f.get("user-agent"), 200),
      occurredAt: (parseDate(f.get("arrival-date") ?? f.get("received-date"), now) ?? fallbackDate).toISOString(),
      verpTokens: mailFrom ? [...envelopeTokens, mailFrom] : [...envelopeTokens],
      original,
    });
  }
  return out;
}

/**
 * Which send a report is about, or null: the first VERP token that verifies with
 * `secret` (kind `bounce`), else the original's `X-PP-Send-Id`, else its Message-ID
 * `<sendId@domain>`. `badToken` says a token was present and failed (forged, or an MTA
 * that rewrote the return path), for the caller's log.
 */
export function resolveSend(
  report: Pick<InboundReport, "verpTokens" | "original">,
  secret: string,
): { sendId: string | null; via: SendRefVia | null; badToken: boolean } {
  let badToken = false;
  for (const token of report.verpTokens) {
    const claims = verifyToken(secret, token, "bounce");
    if (claims) return { sendId: claims.sendId, via: "verp", badToken: false };
    badToken = true;
  }
  if (report.original.sendId) return { sendId: report.original.sendId, via: "x-pp-send-id", badToken };
  const fromMessageId = sendIdFromMessageId(report.original.messageId);
  if (fromMessageId) return { sendId: fromMessageId, via: "message-id", badToken };
  return { sendId: null, via: null, badToken };
}

/** The send id inside one of our Message-IDs (`<sendId@from-domain>`), or null. */
export function sendIdFromMessageId(messageId: string | undefined | null): string | null {
  // RFC 5322 caps a line at 998 characters; anything longer is not one of ours.
  if (!messageId || messageId.length > 998) return null;
  const m = MESSAGE_ID_SEND_RE.exec(messageId.trim());
  return m ? m[1].toLowerCase() : null;
}

/** The token of a VERP address `bounces+<token>@domain` (angle brackets allowed), or null. */
export function verpToken(address: string): string | null {
  if (address.length > 512) return null;
  return VERP_RE.exec(address.trim())?.[1] ?? null;
}

/** A uuid, lower-cased, or undefined. */
export function asUuid(v: string | undefined): string | undefined {
  const s = v?.trim();
  return s && s.length === 36 && UUID_RE.test(s) ? s.toLowerCase() : undefined;
}

/** What the scan of a message found: the raw text of the parts we read. */
interface Scanned {
  /** The top-level `Date` header. */
  date?: string;
  dsn: string[];
  arf: string[];
  /** Header blocks of returned originals. */
  originals: string[];
}

/** A part being collected: its kind, transfer encoding and lines so far (capped). */
class Part {
  readonly lines: string[] = [];
  private size = 0;
  /** An original in plain encoding: its header block ended at a blank line. */
  private ended = false;

  constructor(readonly kind: PartKind, readonly encoding: string) {}

  add(line: string): void {
    if (this.ended) return;
    if (this.kind === "original" && !isEncoded(this.encoding) && line.trim() === "") {
      this.ended = true;
      return;
    }
    const cap = this.kind === "original" ? REPORT_LIMITS.maxHeader : REPORT_LIMITS.maxPart;
    if (this.size + line.length + 1 > cap) {
      this.ended = true;
      return;
    }
    this.lines.push(line);
    this.size += line.length + 1;
  }

  /** The part's text, transfer-decoded (an encoded original cut at its header block). */
  text(): string {
    const body = decodeTransfer(this.lines, this.encoding);
    if (this.kind !== "original" || !isEncoded(this.encoding)) return body;
    const t = body.replaceAll("\r\n", "\n");
    const end = t.indexOf("\n\n");
    return end >= 0 ? t.slice(0, end) : t;
  }
}

/**
 * Collects parts: at most REPORT_LIMITS.maxParts report parts (delivery-status and
 * feedback-report together) and as many returned originals, so a flood of one cannot hide
 * the other.
 */
class Found {
  readonly parts: Record<PartKind, string[]> = { dsn: [], arf: [], original: [] };
  private reports = 0;
  private originals = 0;

  /** A new part of `kind`, or null when its limit is reached (the part is then skipped). */
  open(kind: PartKind | undefined, encoding: string): Part | null {
    if (!kind) return null;
    if (kind === "original") {
      if (this.originals >= REPORT_LIMITS.maxParts) return null;
      this.originals++;
    } else {
      if (this.reports >= REPORT_LIMITS.maxParts) return null;
      this.reports++;
    }
    return new Part(kind, encoding);
  }

  close(part: Part | null): void {
    if (part) this.parts[part.kind].push(part.text());
  }
}

/**
 * The one scan of a message (see the module comment). Strict: header blocks are read
 * field by field; a part's Content-Type picks what is collected; boundaries of enclosing
 * multiparts are matched at the start of `--` lines. Lenient, on the same lines: a
 * `Content-Type:` line of a report type anywhere starts a part whose body runs from the
 * next blank line to the next `--x` line. Plain: when neither finds a report part, the
 * body's DSN field lines (`Status:` with `Action:` or `Final-Recipient:`) are one
 * delivery-status part.
 */
function scanMessage(text: string): Scanned {
  const L = REPORT_LIMITS;
  // Strict MIME state.
  const strict = new Found();
  const boundaries: string[] = [];
  let head: FieldReader | null = new FieldReader(L.maxHeader);
  let topHeaders: Map<string, string> | null = null;
  let part: Part | null = null;
  // Lenient state.
  const lenient = new Found();
  let lState: "idle" | "head" | "body" = "idle";
  let lKind: PartKind | undefined;
  let lPart: Part | null = null;
  // Plain DSN fields of the top-level body.
  const plain: string[] = [];
  let plainSize = 0;
  let plainKeeping = false;
  let plainStatus = false;
  let plainNaming = false;

  let pos = 0;
  while (pos <= text.length) {
    let end = text.indexOf("\n", pos);
    if (end < 0) end = text.length;
    let line = text.slice(pos, Math.min(end, pos + L.maxLine));
    if (line.endsWith("\r")) line = line.slice(0, -1);
    const last = end >= text.length;
    pos = end + 1;
    const blank = line.trim() === "";

    // Strict: a boundary of an enclosing multipart ends the current part or header block.
    const b = boundaries.length > 0 && line.startsWith("--") ? matchBoundary(line, boundaries) : null;
    if (b) {
      strict.close(part);
      part = null;
      boundaries.length = b.level + 1;
      if (b.close) {
        boundaries.pop();
        head = null;
      } else head = new FieldReader(L.maxHeader);
    } else if (head) {
      if (blank) {
        const headers = head.groups[0] ?? new Map<string, string>();
        head = null;
        if (topHeaders === null) topHeaders = headers;
        const ct = contentType(headers.get("content-type"));
        const encoding = (headers.get("content-transfer-encoding") ?? "7bit").trim().toLowerCase();
        if (ct.type.startsWith("multipart/")) {
          if (ct.boundary && boundaries.length < L.maxDepth) boundaries.push(ct.boundary);
        } else part = strict.open(PART_KINDS.get(ct.type), encoding);
      } else head.add(line);
    } else if (part) part.add(line);

    // Lenient: any Content-Type line of a report type, its body up to the next `--x` line.
    if (lState === "body") {
      if (line.length > 2 && line.startsWith("--") && !isSpace(line.charCodeAt(2))) {
        lenient.close(lPart);
        lPart = null;
        lState = "idle";
      } else lPart?.add(line);
    } else if (lState === "head") {
      if (blank) {
        lState = "body";
        lPart = lenient.open(lKind, "7bit");
      }
    } else if (startsWithIgnoreCase(line, "content-type:")) {
      lKind = PART_KINDS.get(contentType(line.slice("content-type:".length)).type);
      if (lKind) lState = "head";
    }

    // Plain: DSN field lines of the top-level body (after the message's header block).
    if (topHeaders !== null) {
      if (blank) {
        if (plainKeeping || plain.length > 0) pushPlain("");
        plainKeeping = false;
      } else if (isSpace(line.charCodeAt(0))) {
        if (plainKeeping) pushPlain(line);
      } else {
        plainKeeping = DSN_FIELD_RE.test(line);
        if (plainKeeping) {
          pushPlain(line);
          if (PLAIN_STATUS_RE.test(line)) plainStatus = true;
          if (PLAIN_NAMING_RE.test(line)) plainNaming = true;
        }
      }
    }
    if (last) break;
  }
  strict.close(part);
  lenient.close(lPart);

  function pushPlain(l: string) {
    if (plainSize + l.length + 1 > L.maxPart) return;
    plain.push(l);
    plainSize += l.length + 1;
  }

  const date = topHeaders?.get("date");
  const chosen = strict.parts.dsn.length + strict.parts.arf.length > 0
    ? strict.parts
    : lenient.parts.dsn.length + lenient.parts.arf.length > 0
    ? lenient.parts
    : null;
  const originals = strict.parts.original.length > 0 ? strict.parts.original : lenient.parts.original;
  if (chosen) return { date, dsn: chosen.dsn, arf: chosen.arf, originals };
  // Start with an empty per-message group: the plain fields found are all per-recipient.
  const dsn = plainStatus && plainNaming ? ["X-Scanned: raw\n\n" + plain.join("\n")] : [];
  return { date, dsn, arf: [], originals };
}

/** Which enclosing boundary a `--` line is (innermost first), and whether it closes it. */
function matchBoundary(line: string, boundaries: string[]): { level: number; close: boolean } | null {
  for (let level = boundaries.length - 1; level >= 0; level--) {
    const b = boundaries[level];
    if (!line.startsWith(b, 2)) continue;
    const rest = line.slice(2 + b.length);
    if (rest.trim() === "") return { level, close: false };
    if (rest.startsWith("--") && rest.slice(2).trim() === "") return { level, close: true };
  }
  return null;
}

/** A Content-Type value's media type (lower-cased) and boundary parameter, read without regexes. */
function contentType(v: string | undefined): { type: string; boundary?: string } {
  if (!v) return { type: "text/plain" };
  const semi = v.indexOf(";");
  const type = (semi >= 0 ? v.slice(0, semi) : v).trim().toLowerCase();
  if (semi < 0) return { type };
  const lower = v.toLowerCase();
  let i = lower.indexOf("boundary=", semi);
  // The parameter's name must start after `;` or white space (not `xboundary=`).
  while (i >= 0 && !(lower[i - 1] === ";" || isSpace(lower.charCodeAt(i - 1)))) {
    i = lower.indexOf("boundary=", i + 1);
  }
  if (i < 0) return { type };
  let start = i + "boundary=".length;
  let stop: number;
  if (v[start] === '"') {
    start++;
    stop = v.indexOf('"', start);
    if (stop < 0) stop = v.length;
  } else {
    stop = start;
    while (stop < v.length && v[stop] !== ";" && !isSpace(v.charCodeAt(stop))) stop++;
  }
  const boundary = v.slice(start, stop);
  return boundary.length > 0 && boundary.length <= REPORT_LIMITS.maxBoundary ? { type, boundary } : { type };
}

/**
 * Header-style `Name: value` lines read one at a time (folded lines joined with a space),
 * groups separated by blank lines. Names are lower-cased; the first occurrence of a name
 * in a group wins; values stop growing at REPORT_LIMITS.maxField characters, a reader at
 * `maxChars` characters, and no group is started past `maxGroups`.
 */
class FieldReader {
  readonly groups: Map<string, string>[] = [];
  private cur: Map<string, string> | null = null;
  private last: string | null = null;
  private size = 0;

  constructor(private readonly maxChars: number, private readonly maxGroups = 1) {}

  add(line: string): void {
    this.size += line.length + 1;
    if (this.size > this.maxChars) return;
    if (line.trim() === "") {
      this.cur = null;
      this.last = null;
      return;
    }
    if (isSpace(line.charCodeAt(0))) {
      if (!this.cur || this.last === null) return;
      const prev = this.cur.get(this.last)!;
      if (prev.length < REPORT_LIMITS.maxField) {
        this.cur.set(this.last, `${prev} ${line.trim()}`.slice(0, REPORT_LIMITS.maxField));
      }
      return;
    }
    const i = line.indexOf(":");
    if (i <= 0) return;
    if (!this.cur) {
      if (this.groups.length >= this.maxGroups) return;
      this.cur = new Map();
      this.groups.push(this.cur);
    }
    const name = line.slice(0, i).trim().toLowerCase();
    if (this.cur.has(name)) {
      this.last = null;
      return;
    }
    this.cur.set(name, line.slice(i + 1).trim().slice(0, REPORT_LIMITS.maxField));
    this.last = name;
  }
}

/** The field groups of a `message/delivery-status` or `message/feedback-report` body. */
function fieldGroups(body: string, maxGroups: number): Map<string, string>[] {
  const reader = new FieldReader(REPORT_LIMITS.maxPart, maxGroups);
  let pos = 0;
  while (pos <= body.length) {
    let end = body.indexOf("\n", pos);
    if (end < 0) end = body.length;
    let line = body.slice(pos, Math.min(end, pos + REPORT_LIMITS.maxLine));
    if (line.endsWith("\r")) line = line.slice(0, -1);
    reader.add(line);
    pos = end + 1;
  }
  return reader.groups;
}

/** Outcome of one DSN per-recipient group, or null when it states none we record. */
function dsnItem(
  r: Map<string, string>,
): Pick<InboundReport, "type" | "bounceType" | "action" | "status" | "diagnostic" | "remoteMta"> | null {
  const action = firstWord(r.get("action"))?.toLowerCase();
  const diagnostic = clean(typed(r.get("diagnostic-code")), 1000);
  // A missing Status is allowed by nothing, but sent by some MTAs: take the class from the
  // diagnostic (`550 5.1.1 …` or a bare `550`).
  const status = STATUS_RE.exec(r.get("status")?.trim() ?? "")?.[0] ?? statusFromDiagnostic(diagnostic);
  const klass = status?.[0];
  const remoteMta = typed(r.get("remote-mta"));
  const base = { action, status, diagnostic, remoteMta };
  switch (action) {
    case "failed":
      return { type: "bounced", bounceType: klass === "4" ? "soft" : "hard", ...base };
    case "delayed":
      return { type: "bounced", bounceType: "soft", ...base };
    case "delivered":
    case "relayed":
    case "expanded":
      return klass === undefined || klass === "2" ? { type: "delivered", ...base } : null;
    case undefined:
      if (klass === "5") return { type: "bounced", bounceType: "hard", ...base };
      if (klass === "4") return { type: "bounced", bounceType: "soft", ...base };
      if (klass === "2") return { type: "delivered", ...base };
      return null;
    default:
      return null;
  }
}

/** The first white-space separated word of `v`, or undefined. */
function firstWord(v: string | undefined): string | undefined {
  const s = v?.trim();
  if (!s) return undefined;
  let i = 0;
  while (i < s.length && !isSpace(s.charCodeAt(i))) i++;
  return s.slice(0, i);
}

function statusFromDiagnostic(diagnostic: string | undefined): string | undefined {
  if (!diagnostic) return undefined;
  // `diagnostic` is at most 1000 characters; both patterns have bounded repeats only.
  const enhanced = /\b([245]\.\d{1,3}\.\d{1,3})\b/.exec(diagnostic);
  if (enhanced) return enhanced[1];
  const basic = /^\s*([245])\d\d\b/.exec(diagnostic);
  return basic ? `${basic[1]}.0.0` : undefined;
}

/** `dns; mx.example.com` → `mx.example.com` (the value of a typed DSN field). */
function typed(v: string | undefined): string | undefined {
  if (v === undefined) return undefined;
  const i = v.indexOf(";");
  return clean(i >= 0 ? v.slice(i + 1) : v, 1000);
}

/** `rfc822; <Buyer@Example.test>` → `buyer@example.test`, or undefined. */
function address(v: string | undefined): string | undefined {
  let s = typed(v);
  if (!s) return undefined;
  if (s.startsWith("<") && s.endsWith(">")) s = s.slice(1, -1).trim();
  return s ? s.toLowerCase() : undefined;
}

/**
 * Text safe to keep in a jsonb event: no control characters (Postgres refuses NUL in
 * jsonb), well-formed Unicode, trimmed, at most `max` characters; undefined when empty.
 */
function clean(v: string | undefined, max: number): string | undefined {
  if (v === undefined) return undefined;
  // deno-lint-ignore no-control-regex
  const s = v.slice(0, max * 2).replace(/[\u0000-\u0008\u000b-\u001f\u007f]/g, " ").toWellFormed().trim()
    .slice(0, max);
  return s || undefined;
}

/** `X-PP-Send-Id` and Message-ID of the first returned original that has either. */
function originalIds(originals: string[]): InboundReport["original"] {
  for (const o of originals) {
    const h = fieldGroups(o, 1)[0] ?? new Map<string, string>();
    const sendId = asUuid(h.get("x-pp-send-id"));
    const messageId = clean(h.get("message-id"), 998);
    if (sendId || messageId) return { sendId, messageId };
  }
  return {};
}

/**
 * A date field's value as a Date, or undefined when absent, unparseable or far ahead. V8's
 * date parser skips RFC 5322 comments (`… +0000 (UTC)`) itself, in linear time; values are
 * capped at REPORT_LIMITS.maxField characters before they get here.
 */
function parseDate(v: string | undefined, now: Date): Date | undefined {
  if (!v || v.length > 200) return undefined;
  const d = new Date(v.trim());
  if (Number.isNaN(d.getTime())) return undefined;
  // A report cannot come from the future; a wrong clock on the reporter's side falls back.
  if (d.getTime() > now.getTime() + 24 * 3600_000) return undefined;
  return d;
}

function isEncoded(encoding: string): boolean {
  return encoding === "base64" || encoding === "quoted-printable";
}

/** A part's lines, transfer-decoded (base64, quoted-printable; others as they are), as UTF-8. */
function decodeTransfer(lines: string[], encoding: string): string {
  if (encoding === "base64") {
    return new TextDecoder().decode(Buffer.from(lines.join(""), "base64"));
  }
  if (encoding !== "quoted-printable") return lines.join("\n");
  // One pass: `=XX` is a byte, `=` at the end of a line joins it with the next.
  const utf8 = new TextEncoder();
  const bytes: number[] = [];
  for (let n = 0; n < lines.length; n++) {
    const l = lines[n].trimEnd();
    let soft = false;
    for (let i = 0; i < l.length; i++) {
      const c = l.charCodeAt(i);
      if (c === 61 /* = */) {
        if (i === l.length - 1) {
          soft = true;
          break;
        }
        const hi = hexValue(l.charCodeAt(i + 1));
        const lo = hexValue(l.charCodeAt(i + 2));
        if (hi >= 0 && lo >= 0) {
          bytes.push(hi * 16 + lo);
          i += 2;
          continue;
        }
      }
      if (c < 128) bytes.push(c);
      else {
        const cp = l.codePointAt(i)!;
        if (cp > 0xffff) i++;
        for (const byte of utf8.encode(String.fromCodePoint(cp))) bytes.push(byte);
      }
    }
    if (!soft && n < lines.length - 1) bytes.push(10);
  }
  return new TextDecoder().decode(new Uint8Array(bytes));
}

/** The value of a hex digit's char code, or -1. */
function hexValue(c: number): number {
  if (c >= 48 && c <= 57) return c - 48;
  if (c >= 65 && c <= 70) return c - 55;
  if (c >= 97 && c <= 102) return c - 87;
  return -1;
}

function isSpace(c: number): boolean {
  return c === 32 || c === 9 || c === 10 || c === 13;
}

function startsWithIgnoreCase(s: string, prefix: string): boolean {
  return s.length >= prefix.length && s.slice(0, prefix.length).toLowerCase() === prefix;
}
