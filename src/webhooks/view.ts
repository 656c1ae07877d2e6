/** Webhook endpoints and deliveries as both transports show them (API.md field names). */
import type { EventType, WebhookDeliveryStatus } from "../db/tables.ts";
import type { DeliveryRow, EndpointRow } from "./repo.ts";

/** An endpoint; `eventTypes` are the email event types (REST shows them as `email.<type>`). */
export interface EndpointView {
  id: string;
  url: string;
  description: string | null;
  eventTypes: EventType[];
  enabled: boolean;
  /** Why it was disabled (after failing for 5 days), while it is. */
  disabledReason: string | null;
  createdAt: Date;
  updatedAt: Date;
}

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
