/**
 * The `attachments` field of single sends and batches (API.md "Message features"):
 * `[{filename, content, contentType?, contentId?}]`, `content` base64 (line breaks allowed),
 * a `contentId` makes the file inline (`cid:` in the HTML). At most 20 files and 25 MB decoded
 * per message; executable types are refused. Every violation is a 422 naming its field
 * (`attachments.2.filename`).
 */
import { z } from "zod";
import { hasControlChar } from "../validation.ts";

/** The most files one message may carry. */
export const MAX_ATTACHMENTS = 20;
/** The most their decoded bytes may add up to, per message. */
export const MAX_ATTACHMENT_BYTES = 25 * 1024 * 1024;
/** File types refused by extension: what a mail client would run when opened. */
export const EXECUTABLE_EXTENSIONS = ["exe", "bat", "cmd", "com", "js", "vbs", "scr", "msi", "jar", "ps1"] as const;
const EXECUTABLE = new RegExp(`\\.(?:${EXECUTABLE_EXTENSIONS.join("|")})$`, "i");

/**
 * Base64 with optional line breaks (as `base64` and most libraries wrap it), padded. One
 * character class: V8 runs it as a loop without a backtracking entry per character, over
 * 33 MB too.
 */
const BASE64 = /^[A-Za-z0-9+/\r\n]*={0,2}[\r\n]*$/;

/** How many CR and LF characters `s` has (native searches: one per line, not per character). */
function lineBreaks(s: string): number {
  let n = 0;
  for (const c of ["\n", "\r"]) for (let i = s.indexOf(c); i >= 0; i = s.indexOf(c, i + 1)) n++;
  return n;
}

/** Whether `content` is base64 (line breaks allowed) of whole 4-character groups. */
function isBase64(content: string): boolean {
  return BASE64.test(content) && (content.length - lineBreaks(content)) % 4 === 0;
}

/** The bytes a base64 text decodes to, from its length alone (line breaks left out). */
export function base64Size(content: string): number {
  const trimmed = content.trimEnd();
  const pad = trimmed.endsWith("==") ? 2 : trimmed.endsWith("=") ? 1 : 0;
  return Math.floor((content.length - lineBreaks(content)) * 3 / 4) - pad;
}

/** A MIME type, `type/subtype` (parameters are ours to write). */
const MIME_TYPE = /^[A-Za-z0-9][\w!#$&^.+-]{0,126}\/[A-Za-z0-9][\w!#$&^.+-]{0,126}$/;
/** A Content-ID without its angle brackets: printable ASCII but `<`, `>` and spaces. */
const CONTENT_ID = /^[\x21-\x3b\x3d\x3f-\x7e]{1,250}$/;

/** A file's name: no path, no control characters, not an executable type. */
export const FileName = z.string().trim().min(1, "is required").max(255)
  .refine((v) => !hasControlChar(v), "must not contain control characters or line breaks")
  .refine((v) => !/[\\/]/.test(v), "must be a file name, without a path")
  .refine(
    (v) => !EXECUTABLE.test(v),
    `executable files are refused (${EXECUTABLE_EXTENSIONS.map((e) => `.${e}`).join(" ")})`,
  );
/** A file's MIME type. */
export const FileType = z.string().regex(MIME_TYPE, "must be a MIME type such as application/pdf").nullish();
/** A file's Content-ID, without angle brackets. */
export const FileContentId = z.string().regex(CONTENT_ID, "must be printable ASCII without spaces or angle brackets")
  .nullish();

/** One file of a message. */
export const Attachment = z.strictObject({
  filename: FileName,
  content: z.string().min(1, "is required")
    .refine(isBase64, "must be base64")
    .describe("The file, base64-encoded."),
  contentType: FileType
    .describe("Default: from the file name's extension, else application/octet-stream."),
  contentId: FileContentId
    .describe("Makes the file inline: the HTML refers to it as `cid:<contentId>`."),
}).meta({ id: "Attachment" });
export type Attachment = z.infer<typeof Attachment>;

/**
 * The checks of a message's file list beyond each file's own: at most 25 MB decoded in all
 * (`size` of each), content ids unique. For API bodies (base64) and submitted messages alike.
 */
export function checkFileList<F extends { contentId?: string | null }>(
  files: F[],
  size: (f: F) => number,
  ctx: z.RefinementCtx,
  path: string,
): void {
  const total = files.reduce((n, f) => n + size(f), 0);
  if (total > MAX_ATTACHMENT_BYTES) {
    ctx.addIssue({ code: "custom", message: `the files add up to ${total} bytes, more than ${MAX_ATTACHMENT_BYTES}` });
  }
  const ids = new Map<string, number>();
  files.forEach((f, i) => {
    if (!f.contentId) return;
    const j = ids.get(f.contentId);
    if (j !== undefined) {
      ctx.addIssue({ code: "custom", path: [i, "contentId"], message: `repeats ${path}.${j}.contentId` });
    }
    ids.set(f.contentId, i);
  });
}

/** `attachments`: at most 20 files and 25 MB decoded, content ids unique. */
export const Attachments = z.array(Attachment).max(MAX_ATTACHMENTS, `at most ${MAX_ATTACHMENTS} files`).nullish()
  .superRefine((files, ctx) => {
    if (files) checkFileList(files, (f) => base64Size(f.content), ctx, "attachments");
  });
