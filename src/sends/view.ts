/**
 * The one outward shape of a send (API.md): REST answers it as JSON, and GraphQL's `Send`
 * type exposes its fields. A field added to a send is added here once: the zod schema is the
 * type (`z.infer`) and, through src/rest/openapi.ts, the answer's schema in openapi.json.
 */
import { z } from "zod";
import { EVENT_TYPES, SEND_STATUSES } from "../db/tables.ts";
import type { SendRow } from "./repo.ts";

/**
 * A point in time: a `Date` in the services and both edges, ISO 8601 in UTC on the wire
 * (`JSON.stringify` writes a Date so). Its JSON Schema (openapi.json) is the wire side.
 */
export const Timestamp = z.codec(z.iso.datetime(), z.date(), {
  decode: (s) => new Date(s),
  encode: (d) => d.toISOString(),
});

/** A send's or a batch's error: a code (`render_failed`, a relay's bounce, …) and why. */
export const ErrorView = z.strictObject({ code: z.string(), message: z.string() });

/** One file of a send, as it was accepted (the content is not shown again). */
export const SendAttachmentView = z.strictObject({
  filename: z.string(),
  contentType: z.string(),
  contentId: z.string().nullable().describe("Set for an inline file (`cid:`)."),
  size: z.number().int().describe("Bytes, decoded."),
}).meta({ id: "SendAttachment" });
export type SendAttachmentView = z.infer<typeof SendAttachmentView>;

/**
 * A send as both edges show it. Times stay `Date`s: `JSON.stringify` (REST) and the
 * `DateTime` scalar (GraphQL) both write them as ISO 8601, so neither formats twice.
 */
export const SendView = z.strictObject({
  id: z.uuid(),
  status: z.enum(SEND_STATUSES),
  to: z.string().describe("The recipient's address."),
  cc: z.array(z.string()).describe("Also sent to, written as Cc: ([] for none)."),
  bcc: z.array(z.string()).describe("Also sent to, not written into the message ([] for none)."),
  contactId: z.uuid(),
  templateId: z.uuid().nullable().describe("Null for a message submitted over SMTP."),
  batchId: z.uuid().nullable(),
  subject: z.string().describe("The rendered subject once delivered, the requested one before."),
  from: z.string().describe("`Name <address>` or the address."),
  replyTo: z.string().nullable(),
  personalizations: z.record(z.string(), z.unknown()),
  tags: z.record(z.string(), z.string()),
  headers: z.record(z.string(), z.string()).describe("The send's own headers ({} for none)."),
  attachments: z.array(SendAttachmentView).describe("The send's files ([] for none)."),
  trackOpens: z.boolean(),
  trackClicks: z.boolean(),
  sandbox: z.boolean().describe("Sent with a `pp_test_` key: delivered to the outbox only."),
  messageId: z.string(),
  missingVariables: z.array(z.string()).nullable()
    .describe("Template variables that rendered empty; null until rendered."),
  scheduledAt: Timestamp.nullable(),
  createdAt: Timestamp,
  updatedAt: Timestamp,
  sentAt: Timestamp.nullable(),
  deliveredAt: Timestamp.nullable(),
  openedAt: Timestamp.nullable(),
  clickedAt: Timestamp.nullable(),
  bouncedAt: Timestamp.nullable(),
  error: ErrorView.nullable(),
}).meta({ id: "Send", description: "A send (API.md): one email to one recipient, and where it is now." });
export type SendView = z.infer<typeof SendView>;

/** One event of a send, as REST lists it. */
export const SendEventView = z.strictObject({
  type: z.enum(EVENT_TYPES),
  occurredAt: Timestamp,
  data: z.record(z.string(), z.unknown()),
}).meta({ id: "SendEvent" });
export type SendEventView = z.infer<typeof SendEventView>;

/** `GET /api/v1/sends/:id`: the send with its events, oldest first. */
export const SendWithEvents = SendView.extend({ events: z.array(SendEventView) })
  .meta({ id: "SendWithEvents", description: "A send with its events, oldest first." });
export type SendWithEvents = z.infer<typeof SendWithEvents>;

/** `GET /api/v1/sends`: a page of sends, newest first; `nextCursor` null on the last page. */
export const SendPage = z.strictObject({ data: z.array(SendView), nextCursor: z.string().nullable() })
  .meta({ id: "SendPage" });
export type SendPage = z.infer<typeof SendPage>;

/** `Name <address>`, or the bare address when the send has no sender name. */
export function formatFrom(s: { from_name: string | null; from_email: string }): string {
  return s.from_name ? `${s.from_name} <${s.from_email}>` : s.from_email;
}

/** Maps a send row to its view (camelCase, API.md). */
export function sendView(s: SendRow): SendView {
  return {
    id: s.id,
    status: s.status,
    to: s.to_email,
    cc: s.cc ?? [],
    bcc: s.bcc ?? [],
    contactId: s.contact_id,
    templateId: s.template_id,
    batchId: s.batch_id,
    subject: s.rendered_subject ?? s.subject,
    from: formatFrom(s),
    replyTo: s.reply_to,
    personalizations: s.personalizations,
    tags: s.tags,
    headers: s.headers ?? {},
    attachments: (s.attachments ?? []).map((a) => ({
      filename: a.filename,
      contentType: a.contentType,
      contentId: a.contentId,
      size: a.size,
    })),
    trackOpens: s.track_opens,
    trackClicks: s.track_clicks,
    sandbox: s.sandbox,
    messageId: s.message_id,
    missingVariables: s.missing_variables,
    scheduledAt: s.scheduled_at,
    createdAt: s.created_at,
    updatedAt: s.updated_at,
    sentAt: s.sent_at,
    deliveredAt: s.delivered_at,
    openedAt: s.opened_at,
    clickedAt: s.clicked_at,
    bouncedAt: s.bounced_at,
    error: s.error_code ? { code: s.error_code, message: s.error_message ?? "" } : null,
  };
}
