/** GraphQL for sends: the `Send` type, `send`/`sends`, `createSend`, `cancelSend`. */
import { builder, type Types } from "../graphql/builder.ts";
import { connectionType, toConnection } from "../graphql/connection.ts";
import { EmailEvent } from "../events/schema.ts";
import { sendEvents } from "../events/service.ts";
import { idempotentMutation } from "../idempotency/graphql.ts";
import { encodeCursor } from "../pagination.ts";
import type { SendRow } from "./repo.ts";
import * as service from "./service.ts";

const STATUSES = [
  "scheduled",
  "queued",
  "sending",
  "sent",
  "delivered",
  "bounced",
  "failed",
  "cancelled",
  "suppressed",
] as const;

/** GraphQL `SendStatus`: the REST statuses upper-cased. */
export const SendStatus = builder.enumType("SendStatus", {
  values: Object.fromEntries(STATUSES.map((v) => [v.toUpperCase(), { value: v }])) as Record<
    Uppercase<typeof STATUSES[number]>,
    { value: typeof STATUSES[number] }
  >,
});

const SendError = builder.objectRef<{ code: string; message: string }>("SendError").implement({
  fields: (t) => ({ code: t.exposeString("code"), message: t.exposeString("message") }),
});

/** GraphQL `Send`. */
export const Send = builder.objectRef<SendRow>("Send").implement({
  fields: (t) => ({
    id: t.exposeID("id"),
    status: t.field({ type: SendStatus, resolve: (s) => s.status }),
    to: t.exposeString("to_email"),
    contactId: t.exposeID("contact_id"),
    templateId: t.exposeID("template_id"),
    batchId: t.exposeID("batch_id", { nullable: true }),
    subject: t.string({ resolve: (s) => s.rendered_subject ?? s.subject }),
    from: t.string({ resolve: (s) => service.formatFrom(s) }),
    replyTo: t.exposeString("reply_to", { nullable: true }),
    personalizations: t.field({ type: "JSON", resolve: (s) => s.personalizations }),
    tags: t.field({ type: "JSON", resolve: (s) => s.tags }),
    trackOpens: t.exposeBoolean("track_opens"),
    trackClicks: t.exposeBoolean("track_clicks"),
    sandbox: t.exposeBoolean("sandbox", { description: "Sent with a TEST key: delivered to the outbox only." }),
    messageId: t.exposeString("message_id"),
    missingVariables: t.stringList({ nullable: true, resolve: (s) => s.missing_variables }),
    error: t.field({
      type: SendError,
      nullable: true,
      resolve: (s) => (s.error_code ? { code: s.error_code, message: s.error_message ?? "" } : null),
    }),
    scheduledAt: t.field({ type: "DateTime", nullable: true, resolve: (s) => s.scheduled_at }),
    createdAt: t.field({ type: "DateTime", resolve: (s) => s.created_at }),
    updatedAt: t.field({ type: "DateTime", resolve: (s) => s.updated_at }),
    sentAt: t.field({ type: "DateTime", nullable: true, resolve: (s) => s.sent_at }),
    deliveredAt: t.field({ type: "DateTime", nullable: true, resolve: (s) => s.delivered_at }),
    openedAt: t.field({ type: "DateTime", nullable: true, resolve: (s) => s.opened_at }),
    clickedAt: t.field({ type: "DateTime", nullable: true, resolve: (s) => s.clicked_at }),
    bouncedAt: t.field({ type: "DateTime", nullable: true, resolve: (s) => s.bounced_at }),
    events: t.field({
      type: [EmailEvent],
      description: "Oldest first.",
      resolve: (s, _, ctx) => sendEvents(ctx.deps, ctx.principal, s.id),
    }),
  }),
});

const SendConnection = connectionType("Send", Send);

/**
 * The input fields every send mutation shares (createSend, createBatchSend,
 * createSegmentSend): the template, sender, schedule, tags, tracking and idempotency key.
 */
export const sendOptionFields = (t: PothosSchemaTypes.InputFieldBuilder<Types, "InputObject">) => ({
  templateId: t.id({ required: true }),
  subject: t.string({ description: "Overrides the template's subject." }),
  scheduledAt: t.field({ type: "DateTime" }),
  from: t.string({ description: '"Name <address>" or an address on a verified domain.' }),
  replyTo: t.string(),
  tags: t.field({ type: "JSON", description: "A string map." }),
  trackOpens: t.boolean(),
  trackClicks: t.boolean(),
  idempotencyKey: t.string({
    description: "Like the Idempotency-Key header: the same request at most once within 24 h.",
  }),
});

const CreateSendInput = builder.inputType("CreateSendInput", {
  fields: (t) => ({
    ...sendOptionFields(t),
    to: t.string({ required: true, description: "An email address or a contact uuid." }),
    personalizations: t.field({ type: "JSON", description: "Values for {{key}}; they win over contact fields." }),
  }),
});

builder.queryField("send", (t) =>
  t.field({
    type: Send,
    nullable: true,
    args: { id: t.arg.id({ required: true }) },
    resolve: (_, a, ctx) => service.findSend(ctx.deps, ctx.principal, String(a.id)),
  }));

builder.queryField("sends", (t) =>
  t.field({
    type: SendConnection,
    description: "Newest first.",
    args: { first: t.arg.int(), after: t.arg.string(), status: t.arg({ type: SendStatus }), batchId: t.arg.id() },
    resolve: async (_, a, ctx) => {
      const page = await service.listSends(ctx.deps, ctx.principal, {
        limit: a.first ?? undefined,
        cursor: a.after,
        status: a.status,
        batchId: a.batchId == null ? a.batchId : String(a.batchId),
      });
      return toConnection(page.rows, page.hasMore, encodeCursor);
    },
  }));

builder.mutationField("createSend", (t) =>
  t.field({
    type: Send,
    args: { input: t.arg({ type: CreateSendInput, required: true }) },
    resolve: (_, a, ctx) =>
      idempotentMutation(
        ctx,
        "createSend",
        a.input,
        async () => (await service.createSend(ctx.deps, ctx.principal, a.input)).send,
        (s) => ({ id: s.id }),
        (j) => service.getSend(ctx.deps, ctx.principal, (j as { id: string }).id),
      ),
  }));

builder.mutationField("cancelSend", (t) =>
  t.field({
    type: Send,
    args: { id: t.arg.id({ required: true }) },
    resolve: (_, a, ctx) => service.cancelSend(ctx.deps, ctx.principal, String(a.id)),
  }));
