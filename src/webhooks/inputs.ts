/** zod schemas for webhook endpoints (API.md "Outbound webhooks"), shared by REST and GraphQL. */
import { z } from "zod";
import { EVENT_TYPES, type EventType } from "../db/tables.ts";

/** The email event types an endpoint can subscribe to: every type a send's events have. */
export const WEBHOOK_EVENT_TYPES = EVENT_TYPES.filter((t) => t !== "resubscribed") as Exclude<
  EventType,
  "resubscribed"
>[];

/** One event type: `delivered` (GraphQL's enum value) or `email.delivered` (REST). */
const EventTypeName = z.string().transform((v) => v.toLowerCase().replace(/^email\./, "")).pipe(
  z.enum(WEBHOOK_EVENT_TYPES as [EventType, ...EventType[]], {
    error: `must be one of ${WEBHOOK_EVENT_TYPES.map((t) => `email.${t}`).join(", ")}`,
  }),
);

/** An http(s) URL without credentials, at most 2,048 characters. */
const EndpointUrl = z.string().max(2048).refine((v) => {
  try {
    const u = new URL(v);
    return (u.protocol === "https:" || u.protocol === "http:") && !u.username && !u.password;
  } catch {
    return false;
  }
}, { error: "must be an http:// or https:// URL without user or password" });

const eventTypes = z.array(EventTypeName).max(WEBHOOK_EVENT_TYPES.length * 2)
  .transform((list) => [...new Set(list)]);

export const CreateWebhookEndpointInput = z.strictObject({
  url: EndpointUrl,
  /** Empty or absent: every type. */
  eventTypes: eventTypes.nullish(),
  description: z.string().max(500).nullish(),
});
export type CreateWebhookEndpointInput = z.infer<typeof CreateWebhookEndpointInput>;

export const UpdateWebhookEndpointInput = z.strictObject({
  url: EndpointUrl.optional(),
  eventTypes: eventTypes.nullish(),
  description: z.string().max(500).nullish(),
  /** true re-enables an endpoint that was disabled after failing for 5 days. */
  enabled: z.boolean().nullish(),
});
export type UpdateWebhookEndpointInput = z.infer<typeof UpdateWebhookEndpointInput>;
