/**
 * Shapes of what relays report after the SMTP conversation: the documented JSON body of
 * `POST /api/v1/events/inbound`, and the parts of an SNS envelope / SES notification that
 * `POST /api/v1/events/inbound/ses` reads. What every source is turned into is
 * {@link InboundEvent}.
 */
import { z } from "zod";

/** Most events one webhook call may carry (each becomes one `record_event` job). */
export const MAX_WEBHOOK_EVENTS = 1000;

/** The event types a report may record. */
export const InboundEventType = z.enum(["delivered", "bounced", "complained"]);
export type InboundEventType = z.infer<typeof InboundEventType>;

/** An enhanced status code (RFC 3463), e.g. `5.1.1`. */
const EnhancedStatus = z.string().regex(/^[245]\.\d{1,3}\.\d{1,3}$/, "must be an enhanced status code like 5.1.1");

/** One event of the documented webhook body. `sendId` or `messageId` names the send. */
export const WebhookEvent = z.object({
  type: InboundEventType,
  sendId: z.uuid().optional(),
  /** Our Message-ID, `<sendId@from-domain>`; used when `sendId` is absent. */
  messageId: z.string().min(3).max(998).optional(),
  /** For `bounced`: default from `status` (4.x.x → soft), else `hard`. */
  bounceType: z.enum(["hard", "soft"]).optional(),
  status: EnhancedStatus.optional(),
  diagnostic: z.string().max(2000).optional(),
  /** When it happened; default: when the call arrived. */
  occurredAt: z.iso.datetime({ offset: true }).optional(),
}).refine((e) => e.sendId !== undefined || e.messageId !== undefined, {
  message: "give sendId or messageId",
  path: ["sendId"],
});
export type WebhookEvent = z.infer<typeof WebhookEvent>;

/** The documented body of `POST /api/v1/events/inbound`. */
export const WebhookBody = z.object({
  events: z.array(WebhookEvent).min(1).max(MAX_WEBHOOK_EVENTS),
});
export type WebhookBody = z.infer<typeof WebhookBody>;

/**
 * An Amazon SNS HTTP(S) envelope. `Message` is a JSON string (the SES notification) for
 * `Notification`; confirmations carry `SubscribeURL`. Other SNS fields are not read.
 */
export const SnsEnvelope = z.object({
  Type: z.string(),
  MessageId: z.string().optional(),
  TopicArn: z.string().optional(),
  Message: z.string().optional(),
  SubscribeURL: z.string().optional(),
});
export type SnsEnvelope = z.infer<typeof SnsEnvelope>;

/** A header as SES lists it in `mail.headers`. */
const SesHeader = z.object({ name: z.string(), value: z.string() });

/** A recipient line of an SES Bounce. */
const SesBouncedRecipient = z.object({
  emailAddress: z.string().optional(),
  action: z.string().optional(),
  status: z.string().optional(),
  diagnosticCode: z.string().optional(),
});

/**
 * The parts of an SES notification (identity notifications: `notificationType`; event
 * publishing through a configuration set: `eventType`) that name the send and the outcome.
 * Loose on purpose: SES adds fields over time and they are not ours to refuse.
 */
export const SesNotification = z.object({
  notificationType: z.string().optional(),
  eventType: z.string().optional(),
  mail: z.object({
    messageId: z.string().optional(),
    timestamp: z.string().optional(),
    headers: z.array(SesHeader).optional(),
    commonHeaders: z.object({ messageId: z.string().optional() }).loose().optional(),
  }).loose(),
  bounce: z.object({
    bounceType: z.string().optional(),
    bounceSubType: z.string().optional(),
    bouncedRecipients: z.array(SesBouncedRecipient).optional(),
    timestamp: z.string().optional(),
    feedbackId: z.string().optional(),
    reportingMTA: z.string().optional(),
  }).loose().optional(),
  complaint: z.object({
    complaintFeedbackType: z.string().optional(),
    complaintSubType: z.string().nullish(),
    timestamp: z.string().optional(),
    feedbackId: z.string().optional(),
    userAgent: z.string().optional(),
  }).loose().optional(),
  delivery: z.object({
    timestamp: z.string().optional(),
    smtpResponse: z.string().optional(),
    reportingMTA: z.string().optional(),
    processingTimeMillis: z.number().optional(),
  }).loose().optional(),
  deliveryDelay: z.object({
    timestamp: z.string().optional(),
    delayType: z.string().optional(),
  }).loose().optional(),
}).loose();
export type SesNotification = z.infer<typeof SesNotification>;

/**
 * One outcome a report source (DSN, ARF, webhook, SES) says happened to one send, before
 * the send is looked up. `sendId` wins over `messageId` when both are given; `data` is kept
 * on the event (`source`, `bounceType`, `status`, `diagnostic`, …).
 */
export interface InboundEvent {
  type: InboundEventType;
  sendId?: string;
  messageId?: string;
  /**
   * The recipient address the report is about (a DSN's `Final-Recipient`, SES's
   * `emailAddress`); when given, the event is recorded only if it is the send's address.
   */
  recipient?: string;
  occurredAt: string;
  data: Record<string, unknown>;
}
