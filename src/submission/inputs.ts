/**
 * What a message submitted over SMTP says (API.md "SMTP submission"), read from its parse
 * (parse_worker.ts) and checked as an API send's fields are: the headers the service owns are
 * taken out (and `X-PP-Tags`, `X-PP-Track`, `Idempotency-Key` honoured), the rest are kept as
 * the send's own headers; the files are checked like `attachments`. A violation is a 422
 * `validation_failed` naming the header or file (`X-PP-Tags`, `attachments.2.filename`).
 */
import libmime from "libmime";
import { z } from "zod";
import { AppError, type FieldError } from "../errors.ts";
import { validKey } from "../idempotency/service.ts";
import { checkFileList, FileContentId, FileName, FileType, MAX_ATTACHMENTS } from "../attachments/inputs.ts";
import type { FileBytes } from "../attachments/service.ts";
import { MAX_PART_BYTES } from "../mail/render.ts";
import type { SubmittedContent } from "../db/tables.ts";
import { type Address, HEADER_NAME, isReservedHeader, sharedSendFields } from "../sends/inputs.ts";

/** A message as the parse worker answers it: mailparser's reading, nothing decided yet. */
export interface ParsedMessage {
  /** The first mailbox of `From`. */
  from: Address | null;
  /** The first address of `Reply-To`. */
  replyTo: string | null;
  /** Decoded. */
  subject: string;
  html: string | null;
  text: string | null;
  /** Every header field in order, its value unfolded but not decoded (encoded words kept). */
  headers: { name: string; value: string }[];
  files: {
    filename: string | null;
    contentType: string;
    contentId: string | null;
    bytes: Uint8Array;
  }[];
}

/** A submitted message as a send: every field checked. */
export interface Submission {
  from: Address | null;
  replyTo: string | null;
  subject: string;
  content: SubmittedContent;
  /** The headers kept (written after ours, signed by DKIM); null: none. */
  headers: Record<string, string> | null;
  tags: Record<string, string> | null;
  trackOpens: boolean | null;
  trackClicks: boolean | null;
  idempotencyKey: string | null;
  files: FileBytes[];
}

/**
 * Header fields removed besides those the service writes (sends/inputs.ts isReservedHeader):
 * the trace and authentication fields of the hops before us (a signature over the old body
 * would fail) and `Idempotency-Key`, ours to honour.
 */
const DROPPED = new Set(["received", "authentication-results", "idempotency-key"]);
const DROPPED_PREFIXES = ["arc-"];
/** Kept headers, at most (as for an API send). */
const MAX_HEADERS = 50;
/** A kept header's value, at most: folded on the way out, so longer than a line (References). */
const MAX_HEADER_VALUE = 4000;

const Tags = sharedSendFields.tags;

/** One file of a submitted message (its bytes checked in total by checkFileList). */
const SubmittedFile = z.object({ filename: FileName, contentType: FileType, contentId: FileContentId });
const SubmittedFiles = z.array(z.object({ ...SubmittedFile.shape, size: z.number() }))
  .max(MAX_ATTACHMENTS, `at most ${MAX_ATTACHMENTS} files`)
  .superRefine((files, ctx) => checkFileList(files, (f) => f.size, ctx, "attachments"));

/** `X-PP-Tags: k=v, k2=v2` as tags. */
function parseTags(value: string): Record<string, string> {
  const tags: Record<string, string> = {};
  for (const pair of value.split(",").map((p) => p.trim()).filter(Boolean)) {
    const eq = pair.indexOf("=");
    if (eq <= 0) throw refused("X-PP-Tags", `"${pair.slice(0, 50)}" is not key=value`);
    tags[pair.slice(0, eq).trim()] = pair.slice(eq + 1).trim();
  }
  const r = Tags.safeParse(tags);
  if (!r.success) throw refused("X-PP-Tags", r.error.issues[0].message);
  return tags;
}

/** `X-PP-Track: opens,clicks` (either, both) or `none`. */
function parseTrack(value: string): { opens: boolean; clicks: boolean } {
  const words = value.toLowerCase().split(/[\s,]+/).filter(Boolean);
  if (words.length === 1 && words[0] === "none") return { opens: false, clicks: false };
  if (!words.length || words.some((w) => w !== "opens" && w !== "clicks")) {
    throw refused("X-PP-Track", 'must be "opens", "clicks", "opens,clicks" or "none"');
  }
  return { opens: words.includes("opens"), clicks: words.includes("clicks") };
}

function refused(path: string, message: string): AppError {
  return new AppError("validation_failed", `${path}: ${message}`, [{ path, message }]);
}

/** A file's name: its own, else `attachment-N` with its type's extension. */
function nameOf(f: ParsedMessage["files"][number], i: number): string {
  return f.filename ?? `attachment-${i + 1}.${libmime.detectExtension(f.contentType)}`;
}

/**
 * Reads a parsed message as a send. Throws validation_failed naming every bad header or
 * file; never looks at the database.
 */
export function readSubmission(m: ParsedMessage): Submission {
  const errors: FieldError[] = [];
  let tags: Record<string, string> | null = null;
  let track: { opens: boolean; clicks: boolean } | null = null;
  let idempotencyKey: string | null = null;
  let to: string | null = null;
  let cc: string | null = null;
  const kept: Record<string, string> = {};
  const seen = new Set<string>();
  const attempt = (f: () => void) => {
    try {
      f();
    } catch (err) {
      if (!(err instanceof AppError && err.errors)) throw err;
      errors.push(...err.errors);
    }
  };
  for (const { name, value } of m.headers) {
    const lower = name.toLowerCase();
    if (lower === "to") to ??= value;
    else if (lower === "cc") cc ??= value;
    else if (lower === "x-pp-tags") attempt(() => tags = parseTags(libmime.decodeWords(value)));
    else if (lower === "x-pp-track") attempt(() => track = parseTrack(value));
    else if (lower === "idempotency-key") attempt(() => idempotencyKey = validKey(value, "Idempotency-Key"));
    if (isReservedHeader(lower) || DROPPED.has(lower) || DROPPED_PREFIXES.some((p) => lower.startsWith(p))) continue;
    // One value per name, as for an API send: the first of a repeated field is kept.
    if (seen.has(lower)) continue;
    seen.add(lower);
    if (!HEADER_NAME.test(name)) {
      errors.push({
        path: name.slice(0, 80),
        message: "is not a header name (printable ASCII, at most 76 characters)",
      });
    } else if (value.length > MAX_HEADER_VALUE) {
      errors.push({ path: name, message: `must be at most ${MAX_HEADER_VALUE} characters` });
    }
    kept[name] = value;
  }
  // As a rendered part may be: delivery rewrites the HTML for tracking, on the worker's loop.
  for (const [path, part] of [["html", m.html], ["text", m.text]] as const) {
    if (part && part.length * 3 > MAX_PART_BYTES && new TextEncoder().encode(part).length > MAX_PART_BYTES) {
      errors.push({ path, message: `the ${path} part is over ${MAX_PART_BYTES / 1024 / 1024} MB` });
    }
  }
  if (m.subject.length > 998) errors.push({ path: "Subject", message: "must be at most 998 characters" });
  if (seen.size > MAX_HEADERS) {
    errors.push({ path: "headers", message: `at most ${MAX_HEADERS} headers besides the service's own` });
  }
  const files = m.files.map((f, i) => ({
    filename: nameOf(f, i),
    contentType: f.contentType.toLowerCase(),
    // A file shown inline without a Content-ID cannot be referred to: it is attached.
    contentId: f.contentId,
    size: f.bytes.byteLength,
  }));
  const checked = SubmittedFiles.safeParse(files);
  if (!checked.success) {
    for (const issue of checked.error.issues) {
      errors.push({ path: ["attachments", ...issue.path].join("."), message: issue.message });
    }
  }
  if (errors.length) {
    throw new AppError("validation_failed", errors.map((e) => `${e.path}: ${e.message}`).join("; "), errors);
  }
  const t = track as { opens: boolean; clicks: boolean } | null;
  return {
    from: m.from,
    replyTo: m.replyTo,
    subject: m.subject,
    content: { html: m.html, text: m.text, to, cc },
    headers: seen.size ? kept : null,
    tags,
    trackOpens: t?.opens ?? null,
    trackClicks: t?.clicks ?? null,
    idempotencyKey,
    files: m.files.map((f, i) => ({
      filename: files[i].filename,
      contentType: files[i].contentType,
      contentId: f.contentId,
      bytes: f.bytes,
    })),
  };
}
