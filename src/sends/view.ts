/**
 * The one outward shape of a send (API.md): REST answers it as JSON, and GraphQL's `Send`
 * type exposes its fields. A field added to a send is added here once.
 */
import type { SendStatus } from "../db/tables.ts";
import type { SendRow } from "./repo.ts";

/**
 * A send as both edges show it. Times stay `Date`s: `JSON.stringify` (REST) and the
 * `DateTime` scalar (GraphQL) both write them as ISO 8601, so neither formats twice.
 */
export interface SendView {
  id: string;
  status: SendStatus;
  to: string;
  contactId: string;
  templateId: string;
  batchId: string | null;
  /** The rendered subject once delivered, the requested one before. */
  subject: string;
  /** `Name <address>` or the address. */
  from: string;
  replyTo: string | null;
  personalizations: Record<string, unknown>;
  tags: Record<string, string>;
  trackOpens: boolean;
  trackClicks: boolean;
  sandbox: boolean;
  messageId: string;
  missingVariables: string[] | null;
  scheduledAt: Date | null;
  createdAt: Date;
  updatedAt: Date;
  sentAt: Date | null;
  deliveredAt: Date | null;
  openedAt: Date | null;
  clickedAt: Date | null;
  bouncedAt: Date | null;
  error: { code: string; message: string } | null;
}

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
    contactId: s.contact_id,
    templateId: s.template_id,
    batchId: s.batch_id,
    subject: s.rendered_subject ?? s.subject,
    from: formatFrom(s),
    replyTo: s.reply_to,
    personalizations: s.personalizations,
    tags: s.tags,
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
