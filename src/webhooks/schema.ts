/** GraphQL for outbound webhooks (API.md "Outbound webhooks"). */
import { WEBHOOK_DELIVERY_STATUSES } from "../db/tables.ts";
import { EmailEventType } from "../events/schema.ts";
import { builder, upperCaseValues } from "../graphql/builder.ts";
import { connectionType, toConnection } from "../graphql/connection.ts";
import { encodeCursor } from "../pagination.ts";
import type { AttemptRow } from "./repo.ts";
import * as service from "./service.ts";
import { type DeliveryView, deliveryView, type EndpointView, endpointView } from "./view.ts";

/** GraphQL `WebhookEndpoint`. */
const WebhookEndpoint = builder.objectRef<EndpointView>("WebhookEndpoint").implement({
  fields: (t) => ({
    id: t.exposeID("id"),
    url: t.exposeString("url"),
    description: t.exposeString("description", { nullable: true }),
    eventTypes: t.field({
      type: [EmailEventType],
      description: "The event types POSTed here; empty: every type.",
      resolve: (e) => e.eventTypes,
    }),
    enabled: t.exposeBoolean("enabled"),
    disabledReason: t.exposeString("disabledReason", {
      nullable: true,
      description: "Why the endpoint was disabled (every attempt failed for 5 days), while it is.",
    }),
    createdAt: t.field({ type: "DateTime", resolve: (e) => e.createdAt }),
    updatedAt: t.field({ type: "DateTime", resolve: (e) => e.updatedAt }),
  }),
});

const WebhookDeliveryStatus = builder.enumType("WebhookDeliveryStatus", {
  values: upperCaseValues(WEBHOOK_DELIVERY_STATUSES),
});

const WebhookAttempt = builder.objectRef<AttemptRow>("WebhookAttempt").implement({
  fields: (t) => ({
    attemptedAt: t.field({ type: "DateTime", resolve: (a) => a.attempted_at }),
    responseStatus: t.exposeInt("response_status", { nullable: true }),
    responseBody: t.exposeString("response_body", { nullable: true, description: "At most 1 KB of the answer." }),
    error: t.exposeString("error", { nullable: true }),
    durationMs: t.exposeInt("duration_ms"),
  }),
});

/** GraphQL `WebhookDelivery`. */
const WebhookDelivery = builder.objectRef<DeliveryView>("WebhookDelivery").implement({
  fields: (t) => ({
    id: t.exposeID("id", { description: "Also the `webhook-id` header, as `msg_<id>`." }),
    eventType: t.exposeString("eventType", { description: "`email.delivered`, …, or `webhook.test`." }),
    status: t.field({ type: WebhookDeliveryStatus, resolve: (d) => d.status }),
    attempts: t.exposeInt("attempts"),
    responseStatus: t.exposeInt("responseStatus", { nullable: true }),
    lastAttemptAt: t.field({ type: "DateTime", nullable: true, resolve: (d) => d.lastAttemptAt }),
    nextAttemptAt: t.field({ type: "DateTime", nullable: true, resolve: (d) => d.nextAttemptAt }),
    createdAt: t.field({ type: "DateTime", resolve: (d) => d.createdAt }),
    attemptLog: t.field({
      type: [WebhookAttempt],
      description: "Every attempt, oldest first.",
      resolve: (d, _, ctx) => service.attemptsOf(ctx.deps, d.id),
    }),
  }),
});

const WebhookDeliveryConnection = connectionType("WebhookDelivery", WebhookDelivery);

/** `{ endpoint secret }`: the secret is shown here only. */
const WebhookEndpointWithSecret = builder.objectRef<{ endpoint: EndpointView; secret: string }>(
  "WebhookEndpointWithSecret",
).implement({
  fields: (t) => ({
    endpoint: t.field({ type: WebhookEndpoint, resolve: (r) => r.endpoint }),
    secret: t.exposeString("secret", { description: "`whsec_` + base64; verify deliveries with it. Shown once." }),
  }),
});

const CreateWebhookEndpointInput = builder.inputType("CreateWebhookEndpointInput", {
  fields: (t) => ({
    url: t.string({ required: true }),
    eventTypes: t.field({ type: [EmailEventType], description: "Empty or absent: every type." }),
    description: t.string(),
  }),
});

const UpdateWebhookEndpointInput = builder.inputType("UpdateWebhookEndpointInput", {
  fields: (t) => ({
    url: t.string(),
    eventTypes: t.field({ type: [EmailEventType] }),
    description: t.string(),
    enabled: t.boolean({ description: "true re-enables an endpoint disabled after failing for 5 days." }),
  }),
});

const withSecret = async (r: Promise<{ endpoint: Parameters<typeof endpointView>[0]; secret: string }>) => {
  const { endpoint, secret } = await r;
  return { endpoint: endpointView(endpoint), secret };
};

builder.queryField("webhookEndpoints", (t) =>
  t.field({
    type: [WebhookEndpoint],
    resolve: async (_, __, ctx) => (await service.listEndpoints(ctx.deps, ctx.principal)).map(endpointView),
  }));

builder.queryField("webhookDeliveries", (t) =>
  t.field({
    type: WebhookDeliveryConnection,
    description: "An endpoint's deliveries, newest first.",
    args: { endpointId: t.arg.id({ required: true }), first: t.arg.int(), after: t.arg.string() },
    resolve: async (_, a, ctx) => {
      const { rows, hasMore } = await service.listDeliveries(ctx.deps, ctx.principal, String(a.endpointId), a);
      return toConnection(rows.map(deliveryView), hasMore, (d) => encodeCursor({ created_at: d.createdAt, id: d.id }));
    },
  }));

builder.mutationField("createWebhookEndpoint", (t) =>
  t.field({
    type: WebhookEndpointWithSecret,
    args: { input: t.arg({ type: CreateWebhookEndpointInput, required: true }) },
    resolve: (_, a, ctx) => withSecret(service.createEndpoint(ctx.deps, ctx.principal, a.input)),
  }));

builder.mutationField("updateWebhookEndpoint", (t) =>
  t.field({
    type: WebhookEndpoint,
    args: { id: t.arg.id({ required: true }), input: t.arg({ type: UpdateWebhookEndpointInput, required: true }) },
    resolve: async (_, a, ctx) =>
      endpointView(await service.updateEndpoint(ctx.deps, ctx.principal, String(a.id), a.input)),
  }));

builder.mutationField("deleteWebhookEndpoint", (t) =>
  t.field({
    type: "ID",
    args: { id: t.arg.id({ required: true }) },
    resolve: (_, a, ctx) => service.deleteEndpoint(ctx.deps, ctx.principal, String(a.id)),
  }));

builder.mutationField("rotateWebhookSecret", (t) =>
  t.field({
    type: WebhookEndpointWithSecret,
    description: "A new secret; for a day deliveries carry signatures with both the new and the old one.",
    args: { id: t.arg.id({ required: true }) },
    resolve: (_, a, ctx) => withSecret(service.rotateSecret(ctx.deps, ctx.principal, String(a.id))),
  }));

builder.mutationField("sendTestWebhook", (t) =>
  t.field({
    type: WebhookDelivery,
    description: "Queues a `webhook.test` delivery to the endpoint.",
    args: { id: t.arg.id({ required: true }) },
    resolve: async (_, a, ctx) => deliveryView(await service.sendTest(ctx.deps, ctx.principal, String(a.id))),
  }));

builder.mutationField("redeliverWebhook", (t) =>
  t.field({
    type: WebhookDelivery,
    description: "Sends a delivery again now, with the same webhook-id.",
    args: { deliveryId: t.arg.id({ required: true }) },
    resolve: async (_, a, ctx) => deliveryView(await service.redeliver(ctx.deps, ctx.principal, String(a.deliveryId))),
  }));
