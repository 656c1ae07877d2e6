/**
 * Webhook endpoints and deliveries as both transports show them (API.md field names). An
 * endpoint's shapes are zod schemas: the types (`z.infer`) and, through src/rest/openapi.ts,
 * the REST answers' schemas in openapi.json.
 */
import { z } from "zod";
import { EVENT_TYPES, type EventType, type WebhookDeliveryStatus } from "../db/tables.ts";
import { Timestamp } from "../sends/view.ts";
import type { DeliveryRow, EndpointRow } from "./repo.ts";

/** An endpoint; `eventTypes` are the email event types (REST shows them as `email.<type>`). */
export const EndpointView = z.strictObject({
  id: z.uuid(),
  url: z.string(),
  description: z.string().nullable(),
  eventTypes: z.array(z.enum(EVENT_TYPES)).describe("Empty: every type."),
  enabled: z.boolean(),
  disabledReason: z.string().nullable().describe("Why it was disabled (after failing for 5 days), while it is."),
  createdAt: Timestamp,
  updatedAt: Timestamp,
});
export type EndpointView = z.infer<typeof EndpointView>;

const EMAIL_TYPES = EVENT_TYPES.map((t) => `email.${t}` as const);

/** An endpoint as REST shows it: event types as `email.delivered`. */
export const WebhookEndpointJson = EndpointView.extend({
  eventTypes: z.array(z.enum(EMAIL_TYPES as [`email.${EventType}`, ...`email.${EventType}`[]]))
    .describe("Empty: every type."),
}).meta({ id: "WebhookEndpoint" });
export type WebhookEndpointJson = z.infer<typeof WebhookEndpointJson>;

/** `POST /api/v1/webhooks`: the new endpoint with its signing secret, shown this once. */
export const WebhookEndpointCreated = WebhookEndpointJson.extend({
  secret: z.string().startsWith("whsec_").describe("`whsec_` + base64: verify deliveries with it (Standard Webhooks)."),
}).meta({ id: "WebhookEndpointCreated" });
export type WebhookEndpointCreated = z.infer<typeof WebhookEndpointCreated>;

/** `GET /api/v1/webhooks`: the account's endpoints. */
export const WebhookEndpointList = z.strictObject({ data: z.array(WebhookEndpointJson) })
  .meta({ id: "WebhookEndpointList" });
export type WebhookEndpointList = z.infer<typeof WebhookEndpointList>;

export function endpointView(e: EndpointRow): EndpointView {
  return {
    id: e.id,
    url: e.url,
    description: e.description,
    eventTypes: e.event_types,
    enabled: e.enabled,
    disabledReason: e.disabled_reason,
    createdAt: e.created_at,
    updatedAt: e.updated_at,
  };
}

/** One delivery: an event (or a test) for one endpoint, with the outcome of its last attempt. */
export interface DeliveryView {
  id: string;
  endpointId: string;
  /** `email.delivered`, …, or `webhook.test`. */
  eventType: string;
  status: WebhookDeliveryStatus;
  attempts: number;
  responseStatus: number | null;
  lastAttemptAt: Date | null;
  nextAttemptAt: Date | null;
  createdAt: Date;
}

export function deliveryView(d: DeliveryRow): DeliveryView {
  return {
    id: d.id,
    endpointId: d.endpoint_id,
    eventType: d.event_type,
    status: d.status,
    attempts: d.attempts,
    responseStatus: d.response_status,
    lastAttemptAt: d.last_attempt_at,
    nextAttemptAt: d.status === "pending" ? d.next_attempt_at : null,
    createdAt: d.created_at,
  };
}
