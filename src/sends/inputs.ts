/**
 * Send input shapes, written once and used by REST, GraphQL and the services. A body's
 * unknown field is refused (strict objects, API.md "Message features"): a typo such as
 * `personalisations` must never mail without its data.
 */
import { z } from "zod";
import { SEND_STATUSES } from "../db/tables.ts";
import { isEmail, isUuid, noLineBreaks } from "../validation.ts";
import { Attachments } from "../attachments/inputs.ts";

/** The most a send's personalizations may weigh, as JSON. */
export const MAX_PERSONALIZATIONS_BYTES = 64 * 1024;

/** A parsed `from`: `"Name <a@b.c>"` or `a@b.c`. */
export interface Address {
  name?: string;
  address: string;
}

/** Parses `Name <a@b.c>`, `"Name" <a@b.c>` or `a@b.c`; null when it is neither. */
export function parseAddress(v: string): Address | null {
  const s = v.trim();
  const m = s.match(/^(?:"?([^"<>]*?)"?\s*)?<([^<>\s]+)>$/);
  if (m) {
    const name = m[1]?.trim();
    return isEmail(m[2]) ? { name: name || undefined, address: m[2] } : null;
  }
  return isEmail(s) ? { address: s } : null;
}

const jsonBytes = (v: unknown) => new TextEncoder().encode(JSON.stringify(v)).length;

/** Headers the service writes itself (API.md), and Reply-To (the `replyTo` field): a send may not set them. */
const RESERVED_HEADERS = new Set([
  "from",
  "to",
  "cc",
  "bcc",
  "subject",
  "date",
  "message-id",
  "mime-version",
  "dkim-signature",
  "return-path",
  "reply-to",
]);
/** Reserved by prefix: `Content-*`, `List-Unsubscribe*`, `X-PP-*`. */
const RESERVED_PREFIXES = ["content-", "list-unsubscribe", "x-pp-"];
/** Whether a header name (lower case) is one the service writes itself. */
export function isReservedHeader(lower: string): boolean {
  return RESERVED_HEADERS.has(lower) || RESERVED_PREFIXES.some((p) => lower.startsWith(p));
}

/** An RFC 5322 field name: printable ASCII but the colon. */
export const HEADER_NAME = /^[\x21-\x39\x3b-\x7e]{1,76}$/;

/**
 * `headers`: at most 50 `{name: value}`, written into the message after ours and signed by
 * DKIM. A name is printable ASCII without a colon (76 at most), not one the service writes
 * (422 naming `headers.<name>`), and not twice in another case; a value is one line of at
 * most 998 characters.
 */
export const CustomHeaders = z.record(z.string(), z.string()).nullish().superRefine((v, ctx) => {
  if (v == null) return;
  const names = Object.keys(v);
  if (names.length > 50) ctx.addIssue({ code: "custom", message: "at most 50 headers" });
  const seen = new Set<string>();
  for (const name of names) {
    const lower = name.toLowerCase();
    const bad = !HEADER_NAME.test(name)
      ? "is not a header name (printable ASCII without a colon, at most 76 characters)"
      : isReservedHeader(lower)
      ? "is written by the service and cannot be set"
      : seen.has(lower)
      ? "is given twice (header names are case-insensitive)"
      : /[\r\n]/.test(v[name])
      ? "must not contain line breaks"
      : v[name].length > 998
      ? "must be at most 998 characters"
      : null;
    seen.add(lower);
    if (bad) ctx.addIssue({ code: "custom", path: [name], message: bad });
  }
});

/** The fields a single send, a batch and a segment send share. */
export const sharedSendFields = {
  templateId: z.uuid("must be a template uuid"),
  // Whether it compiles is checked by the service, in the render sandbox (assertCompiles).
  subject: z.string().trim().min(1).max(998).refine(...noLineBreaks).nullish(),
  scheduledAt: z.iso.datetime({ offset: true, message: "must be ISO 8601 with a time zone offset" }).nullish(),
  from: z.string().max(320).refine(...noLineBreaks)
    .refine((v) => parseAddress(v) !== null, 'must be "Name <address>" or an address').nullish(),
  replyTo: z.string().trim().refine(...noLineBreaks).refine(isEmail, "must be an email address").nullish(),
  tags: z.record(z.string().min(1).max(100), z.string().max(500)).nullish()
    .refine((v) => v == null || Object.keys(v).length <= 50, "at most 50 tags"),
  trackOpens: z.boolean().nullish(),
  trackClicks: z.boolean().nullish(),
  headers: CustomHeaders,
};

/** `cc` or `bcc`: at most 50 plain addresses, none twice. */
export const CopyAddresses = z.array(
  z.string().trim().refine(isEmail, "must be an email address"),
).max(50, "at most 50 addresses").nullish().superRefine((v, ctx) => {
  const seen = new Map<string, number>();
  v?.forEach((a, i) => {
    const j = seen.get(a.toLowerCase());
    if (j !== undefined) ctx.addIssue({ code: "custom", path: [i], message: `repeats entry ${j}` });
    seen.set(a.toLowerCase(), i);
  });
});

/** What single sends and batches carry beyond the shared fields (not segment sends). */
export const messageFields = {
  attachments: Attachments,
  cc: CopyAddresses.describe("Also sent to, written as Cc:."),
  bcc: CopyAddresses.describe("Also sent to, never written into the message."),
};

/** `personalizations`: any JSON object up to 64 KB. */
export const Personalizations = z.record(z.string(), z.unknown()).nullish()
  .refine((v) => v == null || jsonBytes(v) <= MAX_PERSONALIZATIONS_BYTES, "must be at most 64 KB as JSON");

/** A recipient: an email address or a contact uuid. */
export const Recipient = z.string().trim().min(1, "is required")
  .refine((v) => isUuid(v) || isEmail(v), "must be an email address or a contact uuid");

/** Body of `POST /api/v1/sends` and `createSend`. */
export const CreateSendInput = z.strictObject({
  ...sharedSendFields,
  ...messageFields,
  to: Recipient,
  personalizations: Personalizations,
}).meta({ id: "CreateSendInput" });
export type CreateSendInput = z.infer<typeof CreateSendInput>;

/** Body of `PATCH /api/v1/sends/:id` and `rescheduleSend`/`rescheduleBatch`: the new time (past or now: due at once). */
export const RescheduleInput = z.strictObject({
  scheduledAt: sharedSendFields.scheduledAt.unwrap().unwrap(),
}).meta({ id: "RescheduleInput" });
export type RescheduleInput = z.infer<typeof RescheduleInput>;

/** Send statuses a list can filter on: every one. */
export const SendStatusFilter = z.enum(SEND_STATUSES);

/** Query of `GET /api/v1/sends` and arguments of `sends`. */
export const ListSendsInput = z.object({
  status: SendStatusFilter.nullish(),
  batchId: z.uuid().nullish(),
  limit: z.coerce.number().int().min(1).max(100).default(20),
  cursor: z.string().max(200).nullish(),
});
export type ListSendsInput = z.infer<typeof ListSendsInput>;

/** Payload of the `deliver_send` job. */
export const DeliverSendPayload = z.object({ sendId: z.uuid() });
