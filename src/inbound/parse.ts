/**
 * Reading bounce and complaint reports that arrive by mail: delivery status notifications
 * (RFC 3464, `multipart/report; report-type=delivery-status`) and ARF feedback reports
 * (RFC 5965, `multipart/report; report-type=feedback-report`). Pure functions: no database,
 * no clock except the fallback "now" for reports without a date.
 *
 * What mailparser gives for a DSN (measured with mailparser 3.14): by default it folds the
 * `message/delivery-status` part into `text`, so we ask for `keepDeliveryStatus` and read it
 * as an attachment; `message/feedback-report`, `message/rfc822` and `text/rfc822-headers`
 * come as attachments, their content undecoded beyond the transfer encoding. When the MIME
 * structure is broken (no parts found), the raw text is scanned for the report fields.
 */
import { Buffer } from "node:buffer";
import { simpleParser } from "mailparser";
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

const UUID_RE = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
const VERP_RE = /^<?bounces\+([A-Za-z0-9_-]+)@[^>\s]+>?$/i;
const DSN_FIELD_RE =
  /^(Reporting-MTA|Arrival-Date|Final-Recipient|Original-Recipient|Action|Status|Remote-MTA|Diagnostic-Code|Last-Attempt-Date|Will-Retry-Until):/i;
const STATUS_RE = /^([245])\.(\d{1,3})\.(\d{1,3})\b/;

/** Feedback types that count as a complaint; `not-spam`, `auth-failure` and others do not. */
const COMPLAINT_TYPES = new Set(["abuse", "fraud", "virus", "other"]);

/** Parts that hold the original message or its headers (DSN and ARF both return one). */
const ORIGINAL_TYPES = new Set([
  "message/rfc822",
  "text/rfc822-headers",
  "message/rfc822-headers",
  "message/global",
  "message/global-headers",
]);

/**
 * Parses one inbound message into the outcomes it reports: one item per recipient of a
 * DSN, one item for an ARF complaint; `[]` for anything else (an auto-reply, spam, a
 * `not-spam` feedback report). Never throws for bad input: unparseable MIME falls back to
 * scanning the raw text, and what still makes no sense gives `[]`.
 */
export async function parseReport(raw: Uint8Array | string, opts: ParseOptions = {}): Promise<InboundReport[]> {
  const text = typeof raw === "string" ? raw : new TextDecoder().decode(raw);
  const now = opts.now ?? new Date();
  const envelopeTokens = (opts.envelopeTo ?? []).map(verpToken).filter((t): t is string => t !== null);

  let dsnParts: string[] = [];
  let arfParts: string[] = [];
  let originals: string[] = [];
  let headerDate: Date | undefined;
  try {
    const mail = await simpleParser(typeof raw === "string" ? raw : Buffer.from(raw), {
      keepDeliveryStatus: true,
      skipHtmlToText: true,
      skipTextToHtml: true,
      skipImageLinks: true,
    });
    headerDate = mail.date;
    for (const a of mail.attachments) {
      const type = a.contentType.toLowerCase();
      const body = () => new TextDecoder().decode(a.content);
      if (type === "message/delivery-status" || type === "message/global-delivery-status") dsnParts.push(body());
      else if (type === "message/feedback-report") arfParts.push(body());
      else if (ORIGINAL_TYPES.has(type)) originals.push(body());
    }
  } catch {
    // mailparser gave up on the structure; the raw scan below may still find the fields.
  }
  if (dsnParts.length === 0 && arfParts.length === 0) {
    const scanned = scanRaw(text);
    dsnParts = scanned.dsn;
    arfParts = scanned.arf;
    if (originals.length === 0) originals = scanned.originals;
  }

  const original = originalIds(originals);
  const fallbackDate = validDate(headerDate, now) ?? now;
  const out: InboundReport[] = [];

  for (const part of dsnParts) {
    const [perMessage = new Map<string, string>(), ...perRecipient] = fieldGroups(part);
    const reportDate = parseDate(perMessage.get("arrival-date"), now) ?? fallbackDate;
    const reporter = typed(perMessage.get("reporting-mta"));
    for (const r of perRecipient) {
      const item = dsnItem(r);
      if (!item) continue;
      out.push({
        source: "dsn",
        ...item,
        reporter,
        occurredAt: (parseDate(r.get("last-attempt-date"), now) ?? reportDate).toISOString(),
        verpTokens: [...envelopeTokens],
        original,
      });
    }
  }

  for (const part of arfParts) {
    const [f = new Map<string, string>()] = fieldGroups(part);
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
  const m = /^\s*<?([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})@[^<>\s]+>?\s*$/i.exec(
    messageId ?? "",
  );
  return m ? m[1].toLowerCase() : null;
}

/** The token of a VERP address `bounces+<token>@domain` (angle brackets allowed), or null. */
export function verpToken(address: string): string | null {
  return VERP_RE.exec(address.trim())?.[1] ?? null;
}

/** A uuid, lower-cased, or undefined. */
export function asUuid(v: string | undefined): string | undefined {
  const s = v?.trim();
  return s && UUID_RE.test(s) ? s.toLowerCase() : undefined;
}

/** Outcome of one DSN per-recipient group, or null when it states none we record. */
function dsnItem(
  r: Map<string, string>,
): Pick<InboundReport, "type" | "bounceType" | "action" | "status" | "diagnostic" | "remoteMta"> | null {
  const action = r.get("action")?.trim().toLowerCase().split(/\s/)[0] || undefined;
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

function statusFromDiagnostic(diagnostic: string | undefined): string | undefined {
  if (!diagnostic) return undefined;
  const enhanced = /\b([245]\.\d{1,3}\.\d{1,3})\b/.exec(diagnostic);
  if (enhanced) return enhanced[1];
  const basic = /^\s*([245])\d\d\b/.exec(diagnostic);
  return basic ? `${basic[1]}.0.0` : undefined;
}

/**
 * The field groups of a `message/delivery-status` or `message/feedback-report` body: header
 * style `Name: value` lines (folded lines joined), groups separated by blank lines. Names
 * are lower-cased; the first occurrence of a name in a group wins.
 */
function fieldGroups(body: string): Map<string, string>[] {
  const groups: Map<string, string>[] = [];
  let cur: Map<string, string> | null = null;
  let last: string | null = null;
  for (const line of body.replace(/\r\n?/g, "\n").split("\n")) {
    if (line.trim() === "") {
      cur = null;
      last = null;
      continue;
    }
    if (/^[ \t]/.test(line)) {
      if (cur && last !== null) cur.set(last, `${cur.get(last)} ${line.trim()}`);
      continue;
    }
    const i = line.indexOf(":");
    if (i <= 0) continue;
    if (!cur) {
      cur = new Map();
      groups.push(cur);
    }
    const name = line.slice(0, i).trim().toLowerCase();
    if (cur.has(name)) {
      last = null;
      continue;
    }
    cur.set(name, line.slice(i + 1).trim());
    last = name;
  }
  return groups;
}

/** `dns; mx.example.com` → `mx.example.com` (the value of a typed DSN field). */
function typed(v: string | undefined): string | undefined {
  if (v === undefined) return undefined;
  const i = v.indexOf(";");
  return clean(i >= 0 ? v.slice(i + 1) : v, 1000);
}

/**
 * Text safe to keep in a jsonb event: no control characters (Postgres refuses NUL in
 * jsonb), well-formed Unicode, trimmed, at most `max` characters; undefined when empty.
 */
function clean(v: string | undefined, max: number): string | undefined {
  if (v === undefined) return undefined;
  // deno-lint-ignore no-control-regex
  const s = v.replace(/[\u0000-\u0008\u000b-\u001f\u007f]/g, " ").toWellFormed().trim().slice(0, max);
  return s || undefined;
}

/** The header block of a message or headers part (up to the first blank line), unfolded. */
function headerBlock(message: string): Map<string, string> {
  const head = message.replace(/\r\n?/g, "\n").split(/\n\n/, 1)[0];
  return fieldGroups(head)[0] ?? new Map();
}

/** `X-PP-Send-Id` and Message-ID of the first returned original that has either. */
function originalIds(originals: string[]): InboundReport["original"] {
  for (const o of originals) {
    const h = headerBlock(o);
    const sendId = asUuid(h.get("x-pp-send-id"));
    const messageId = clean(h.get("message-id"), 998);
    if (sendId || messageId) return { sendId, messageId };
  }
  return {};
}

/** A date field's value as a Date, or undefined when absent, unparseable or far ahead. */
function parseDate(v: string | undefined, now: Date): Date | undefined {
  if (!v) return undefined;
  // RFC 5322 dates may carry a trailing comment: `… +0000 (UTC)`.
  return validDate(new Date(v.replace(/\([^)]*\)\s*$/, "").trim()), now);
}

function validDate(d: Date | undefined, now: Date): Date | undefined {
  if (!d || Number.isNaN(d.getTime())) return undefined;
  // A report cannot come from the future; a wrong clock on the reporter's side falls back.
  if (d.getTime() > now.getTime() + 24 * 3600_000) return undefined;
  return d;
}

/**
 * The fallback for a message mailparser could not split: the body of each
 * `Content-Type: message/(global-)delivery-status` / `message/feedback-report` part up to
 * the next boundary line, and the part after a `message/rfc822` / `text/rfc822-headers`
 * header. Without such headers, a body that plainly holds DSN fields (`Status:` and
 * `Action:` or `Final-Recipient:`) is read as one delivery-status part.
 */
function scanRaw(text: string): { dsn: string[]; arf: string[]; originals: string[] } {
  const t = text.replace(/\r\n?/g, "\n");
  const parts = (re: RegExp) => {
    const found: string[] = [];
    for (const m of t.matchAll(re)) {
      const rest = t.slice(m.index! + m[0].length);
      const bodyStart = rest.indexOf("\n\n");
      if (bodyStart < 0) continue;
      const body = rest.slice(bodyStart + 2);
      const end = body.search(/^--\S/m);
      found.push(end >= 0 ? body.slice(0, end) : body);
    }
    return found;
  };
  const dsn = parts(/^Content-Type:[ \t]*message\/(?:global-)?delivery-status\b.*$/gim);
  const arf = parts(/^Content-Type:[ \t]*message\/feedback-report\b.*$/gim);
  const originals = parts(
    /^Content-Type:[ \t]*(?:message\/rfc822|text\/rfc822-headers|message\/rfc822-headers|message\/global(?:-headers)?)\b.*$/gim,
  );
  if (dsn.length === 0 && arf.length === 0) {
    const bodyStart = t.indexOf("\n\n");
    const body = bodyStart >= 0 ? t.slice(bodyStart + 2) : "";
    if (/^Status:[ \t]*[245]\.\d{1,3}\.\d{1,3}/im.test(body) && /^(Action|Final-Recipient):/im.test(body)) {
      // Only the lines that are DSN fields (and their folded continuations), so a human
      // preamble does not become a group.
      const fields: string[] = [];
      let keeping = false;
      for (const l of body.split("\n")) {
        if (l.trim() === "") fields.push("");
        else if (/^[ \t]/.test(l)) {
          if (keeping) fields.push(l);
        } else {
          keeping = DSN_FIELD_RE.test(l);
          if (keeping) fields.push(l);
        }
      }
      // Start with an empty per-message group: the fields found are all per-recipient.
      dsn.push("X-Scanned: raw\n\n" + fields.join("\n"));
    }
  }
  return { dsn, arf, originals };
}
