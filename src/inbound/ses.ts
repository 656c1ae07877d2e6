/**
 * Amazon SES notifications (Bounce, Complaint, Delivery, DeliveryDelay), as SNS delivers
 * them, turned into our inbound events. Pure: the webhook authenticates and records.
 *
 * SES's `mail.messageId` is SES's own id, not ours: the send is named by our
 * `X-PP-Send-Id` header in `mail.headers` (SES includes the headers when the notification
 * topic has "include original headers" on), else our Message-ID from the headers or
 * `mail.commonHeaders.messageId`.
 */
import type { InboundEvent, SesNotification } from "./inputs.ts";
import { asUuid } from "./parse.ts";

/** SES bounce types: `Permanent` is hard; `Transient` and `Undetermined` are soft (not suppressed). */
function bounceType(sesType: string | undefined): "hard" | "soft" {
  return sesType === "Permanent" ? "hard" : "soft";
}

/** An ISO timestamp from SES, or `now` when it is missing or unparseable. */
function when(ts: string | undefined, now: Date): string {
  const d = ts ? new Date(ts) : null;
  return d && !Number.isNaN(d.getTime()) ? d.toISOString() : now.toISOString();
}

/** What names the send: our header's send id, else our Message-ID. */
function sendRef(n: SesNotification): Pick<InboundEvent, "sendId" | "messageId"> {
  const header = (name: string) => n.mail.headers?.find((h) => h.name.toLowerCase() === name)?.value;
  const sendId = asUuid(header("x-pp-send-id"));
  if (sendId) return { sendId };
  return { messageId: header("message-id") ?? n.mail.commonHeaders?.messageId ?? n.mail.messageId };
}

const ENHANCED = /^[245]\.\d{1,3}\.\d{1,3}$/;

/**
 * The events an SES notification reports: one `bounced` per bounced recipient (our sends
 * have one; `recipient` is its address, checked against the send's by recordInbound),
 * `complained`, `delivered`, or a soft `bounced` for a DeliveryDelay. Other types (Send,
 * Reject, Open, Click, …), complaints SES made up itself (`OnAccountSuppressionList`) and
 * `not-spam` feedback give `[]`.
 */
export function sesEvents(n: SesNotification, now = new Date()): InboundEvent[] {
  const kind = n.notificationType ?? n.eventType;
  const ref = sendRef(n);
  const event = (type: InboundEvent["type"], occurredAt: string, data: Record<string, unknown>): InboundEvent => {
    for (const k of Object.keys(data)) if (data[k] === undefined) delete data[k];
    return { ...ref, type, occurredAt, data: { source: "ses", ...data } };
  };
  if (kind === "Bounce" && n.bounce) {
    const b = n.bounce;
    const recipients = b.bouncedRecipients?.length ? b.bouncedRecipients : [{}];
    return recipients.map((
      r: { emailAddress?: string; status?: string; diagnosticCode?: string; action?: string },
    ) => ({
      ...event("bounced", when(b.timestamp, now), {
        bounceType: bounceType(b.bounceType),
        sesBounceType: b.bounceType,
        sesBounceSubType: b.bounceSubType,
        action: r.action,
        status: r.status && ENHANCED.test(r.status) ? r.status : undefined,
        diagnostic: r.diagnosticCode?.slice(0, 1000),
        reporter: b.reportingMTA?.replace(/^dns;\s*/i, ""),
        feedbackId: b.feedbackId,
      }),
      recipient: r.emailAddress?.trim().toLowerCase(),
    }));
  }
  if (kind === "Complaint" && n.complaint) {
    const c = n.complaint;
    if (c.complaintSubType === "OnAccountSuppressionList" || c.complaintFeedbackType === "not-spam") return [];
    return [event("complained", when(c.timestamp, now), {
      feedbackType: c.complaintFeedbackType,
      reporter: c.userAgent,
      feedbackId: c.feedbackId,
    })];
  }
  if (kind === "Delivery" && n.delivery) {
    const d = n.delivery;
    return [event("delivered", when(d.timestamp, now), {
      response: d.smtpResponse?.slice(0, 500),
      reporter: d.reportingMTA,
    })];
  }
  if (kind === "DeliveryDelay" && n.deliveryDelay) {
    const d = n.deliveryDelay;
    return [event("bounced", when(d.timestamp, now), { bounceType: "soft", delayType: d.delayType })];
  }
  return [];
}
