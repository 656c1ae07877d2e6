/** GraphQL for sends: the `Send` type, `send`/`sends`, `createSend`, `cancelSend`. */
import { builder, type Types, upperCaseValues } from "../graphql/builder.ts";
import { connectionType, toConnection } from "../graphql/connection.ts";
import { EmailEvent } from "../events/schema.ts";
import { sendEvents } from "../events/service.ts";
import { idempotentMutation } from "../idempotency/graphql.ts";
import { encodeCursor } from "../pagination.ts";
import { SEND_STATUSES } from "../db/tables.ts";
import * as service from "./service.ts";
import { type SendAttachmentView, type SendView, sendView } from "./view.ts";

/** GraphQL `SendStatus`: the REST statuses upper-cased. */
export const SendStatus = builder.enumType("SendStatus", {
  values: upperCaseValues(SEND_STATUSES),
});

const SendError = builder.objectRef<{ code: string; message: string }>("SendError").implement({
  fields: (t) => ({ code: t.exposeString("code"), message: t.exposeString("message") }),
});

const SendAttachment = builder.objectRef<SendAttachmentView>("SendAttachment").implement({
  description: "One file of a send, as it was accepted.",
  fields: (t) => ({
    filename: t.exposeString("filename"),
    contentType: t.exposeString("contentType"),
    contentId: t.exposeString("contentId", { nullable: true, description: "Set for an inline file (cid:)." }),
    size: t.exposeInt("size", { description: "Bytes, decoded." }),
  }),
});

/** GraphQL `AttachmentInput`: a file, base64 (API.md "Message features"). */
const AttachmentInput = builder.inputType("AttachmentInput", {
  fields: (t) => ({
    filename: t.string({ required: true }),
    content: t.string({ required: true, description: "The file, base64-encoded." }),
    contentType: t.string({ description: "Default: from the file name's extension." }),
    contentId: t.string({ description: "Makes the file inline: the HTML refers to it as cid:<contentId>." }),
  }),
});

/** The input fields of createSend and createBatchSend beyond sendOptionFields (not segment sends). */
export const messageFields = (t: PothosSchemaTypes.InputFieldBuilder<Types, "InputObject">) => ({
  attachments: t.field({
    type: [AttachmentInput],
    description: "At most 20 files, 25 MB decoded; executable types are refused.",
  }),
  cc: t.stringList({ description: "At most 50 addresses, also sent to and written as Cc:." }),
  bcc: t.stringList({ description: "At most 50 addresses, also sent to, never written into the message." }),
});

/** GraphQL `Send`: the send view's fields (view.ts), as REST shows them. */
export const Send = builder.objectRef<SendView>("Send").implement({
  fields: (t) => ({
    id: t.exposeID("id"),
    status: t.expose("status", { type: SendStatus }),
    to: t.exposeString("to"),
    cc: t.exposeStringList("cc", { description: "Also sent to, written as Cc:." }),
    bcc: t.exposeStringList("bcc", { description: "Also sent to, not written into the message." }),
    contactId: t.exposeID("contactId"),
    templateId: t.exposeID("templateId", { nullable: true, description: "Null for a message submitted over SMTP." }),
    batchId: t.exposeID("batchId", { nullable: true }),
    subject: t.exposeString("subject"),
    from: t.exposeString("from"),
    replyTo: t.exposeString("replyTo", { nullable: true }),
    personalizations: t.expose("personalizations", { type: "JSON" }),
    tags: t.expose("tags", { type: "JSON" }),
    headers: t.expose("headers", { type: "JSON", description: "The send's own headers ({} for none)." }),
    attachments: t.expose("attachments", { type: [SendAttachment] }),
    trackOpens: t.exposeBoolean("trackOpens"),
    trackClicks: t.exposeBoolean("trackClicks"),
    sandbox: t.exposeBoolean("sandbox", { description: "Sent with a TEST key: delivered to the outbox only." }),
    messageId: t.exposeString("messageId"),
    missingVariables: t.exposeStringList("missingVariables", { nullable: true }),
    error: t.expose("error", { type: SendError, nullable: true }),
    scheduledAt: t.expose("scheduledAt", { type: "DateTime", nullable: true }),
    createdAt: t.expose("createdAt", { type: "DateTime" }),
    updatedAt: t.expose("updatedAt", { type: "DateTime" }),
    sentAt: t.expose("sentAt", { type: "DateTime", nullable: true }),
    deliveredAt: t.expose("deliveredAt", { type: "DateTime", nullable: true }),
    openedAt: t.expose("openedAt", { type: "DateTime", nullable: true }),
    clickedAt: t.expose("clickedAt", { type: "DateTime", nullable: true }),
    bouncedAt: t.expose("bouncedAt", { type: "DateTime", nullable: true }),
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
  headers: t.field({
    type: "JSON",
    description: "Headers of your own, {name: value} (at most 50; not those the service writes), signed by DKIM.",
  }),
  trackOpens: t.boolean(),
  trackClicks: t.boolean(),
  idempotencyKey: t.string({
    description: "Like the Idempotency-Key header: the same request at most once within 24 h.",
  }),
});

const CreateSendInput = builder.inputType("CreateSendInput", {
  fields: (t) => ({
    ...sendOptionFields(t),
    ...messageFields(t),
    to: t.string({ required: true, description: "An email address or a contact uuid." }),
    personalizations: t.field({ type: "JSON", description: "Values for {{key}}; they win over contact fields." }),
  }),
});

builder.queryField("send", (t) =>
  t.field({
    type: Send,
    nullable: true,
    args: { id: t.arg.id({ required: true }) },
    resolve: async (_, a, ctx) => {
      const row = await service.findSend(ctx.deps, ctx.principal, String(a.id));
      return row && sendView(row);
    },
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
      return toConnection(
        page.rows.map(sendView),
        page.hasMore,
        (v) => encodeCursor({ created_at: v.createdAt, id: v.id }),
      );
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
        async (input) => sendView((await service.createSend(ctx.deps, ctx.principal, input)).send),
      ),
  }));

builder.mutationField("rescheduleSend", (t) =>
  t.field({
    type: Send,
    description: "Moves a scheduled or queued send to `scheduledAt` (past or now: due at once); " +
      "not_reschedulable once it is sending or finished.",
    args: { id: t.arg.id({ required: true }), scheduledAt: t.arg({ type: "DateTime", required: true }) },
    resolve: async (_, a, ctx) =>
      sendView(
        await service.rescheduleSend(ctx.deps, ctx.principal, String(a.id), { scheduledAt: a.scheduledAt }),
      ),
  }));

builder.mutationField("cancelSend", (t) =>
  t.field({
    type: Send,
    args: { id: t.arg.id({ required: true }) },
    resolve: async (_, a, ctx) => sendView(await service.cancelSend(ctx.deps, ctx.principal, String(a.id))),
  }));
