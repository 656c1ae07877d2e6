/** GraphQL for batches: `batch(id)` with progress counts, `createBatchSend`, `createSegmentSend`, `cancelBatch`. */
import { builder, upperCaseValues } from "../graphql/builder.ts";
import { BATCH_VALIDATIONS } from "./inputs.ts";
import { messageFields, sendOptionFields, SendStatus } from "../sends/schema.ts";
import { idempotentMutation } from "../idempotency/graphql.ts";
import * as service from "./service.ts";
import type { BatchAccepted, RecipientError } from "./view.ts";

type BatchView = Awaited<ReturnType<typeof service.getBatch>> & { cancelled?: number };

const BatchStatus = builder.enumType("BatchStatus", {
  description:
    "ACCEPTED: every send exists. EXPANDING: a segment send still creating its sends. FAILED: stopped (see error).",
  values: {
    EXPANDING: { value: "expanding" },
    ACCEPTED: { value: "accepted" },
    FAILED: { value: "failed" },
    CANCELLED: { value: "cancelled" },
  } as const,
});

const StatusCount = builder.objectRef<{ status: string; count: number }>("StatusCount").implement({
  fields: (t) => ({
    status: t.field({ type: SendStatus, resolve: (c) => c.status as never }),
    count: t.exposeInt("count"),
  }),
});

const BatchError = builder.objectRef<{ code: string; message: string }>("BatchError").implement({
  fields: (t) => ({ code: t.exposeString("code"), message: t.exposeString("message") }),
});

const Batch = builder.objectRef<BatchView>("Batch").implement({
  fields: (t) => ({
    id: t.exposeID("id"),
    status: t.field({ type: BatchStatus, resolve: (b) => b.status }),
    templateId: t.exposeID("template_id", {
      nullable: true,
      description: "Null for the batch of a message submitted over SMTP.",
    }),
    segmentId: t.exposeID("segment_id", { nullable: true }),
    count: t.exposeInt("count", { description: "Sends created so far." }),
    counts: t.field({
      type: [StatusCount],
      description: "Sends by status: the progress view.",
      resolve: (b) => b.counts,
    }),
    error: t.field({
      type: BatchError,
      nullable: true,
      resolve: (b) => (b.error_code ? { code: b.error_code, message: b.error_message ?? "" } : null),
    }),
    createdAt: t.field({ type: "DateTime", resolve: (b) => b.created_at }),
    updatedAt: t.field({ type: "DateTime", resolve: (b) => b.updated_at }),
  }),
});

const BatchSendItem = builder.objectRef<{ id: string; to: string; status: string }>("BatchSendItem").implement({
  fields: (t) => ({
    id: t.exposeID("id"),
    to: t.exposeString("to"),
    status: t.field({ type: SendStatus, resolve: (s) => s.status as never }),
  }),
});

const BatchValidation = builder.enumType("BatchValidation", {
  description: "STRICT (default): one bad recipient refuses the batch. PERMISSIVE: the valid ones are accepted, " +
    "the others answered in `errors`.",
  values: upperCaseValues(BATCH_VALIDATIONS),
});

const BatchRecipientError = builder.objectRef<RecipientError>("BatchRecipientError").implement({
  description: "A recipient a permissive batch left out.",
  fields: (t) => ({
    index: t.exposeInt("index", { description: "Its index in `recipients`." }),
    code: t.exposeString("code", { description: "`validation_failed` or `contact_not_found`." }),
    message: t.exposeString("message"),
    path: t.exposeString("path", { description: "e.g. `recipients.3.to`" }),
  }),
});

const BatchSendPayload = builder.objectRef<BatchAccepted>("BatchSendPayload").implement({
  fields: (t) => ({
    batchId: t.exposeID("batchId"),
    count: t.exposeInt("count"),
    sends: t.field({ type: [BatchSendItem], resolve: (b) => b.sends }),
    errors: t.field({
      type: [BatchRecipientError],
      nullable: true,
      description: "PERMISSIVE only: the recipients left out, and why.",
      resolve: (b) => b.errors ?? null,
    }),
  }),
});

const SegmentSendPayload = builder.objectRef<{ batchId: string; segmentId: string; status: "queued" }>(
  "SegmentSendPayload",
).implement({
  fields: (t) => ({
    batchId: t.exposeID("batchId"),
    segmentId: t.exposeID("segmentId"),
    status: t.exposeString("status", { description: "`queued`: the expansion job will create the sends." }),
  }),
});

const BatchRecipientInput = builder.inputType("BatchRecipientInput", {
  fields: (t) => ({
    to: t.string({ required: true, description: "An email address or a contact uuid." }),
    personalizations: t.field({ type: "JSON" }),
    headers: t.field({ type: "JSON", description: "This recipient's headers, over the batch's (by name)." }),
    cc: t.stringList({ description: "This recipient's cc, instead of the batch's." }),
    bcc: t.stringList({ description: "This recipient's bcc, instead of the batch's." }),
  }),
});

const CreateBatchSendInput = builder.inputType("CreateBatchSendInput", {
  fields: (t) => ({
    ...sendOptionFields(t),
    ...messageFields(t),
    recipients: t.field({ type: [BatchRecipientInput], required: true, description: "1 to 1,000." }),
    validation: t.field({ type: BatchValidation }),
  }),
});

const CreateSegmentSendInput = builder.inputType("CreateSegmentSendInput", {
  fields: (t) => ({
    ...sendOptionFields(t),
    segmentId: t.id({ required: true }),
    personalizations: t.field({ type: "JSON", description: "The same values for every member." }),
  }),
});

builder.queryField("batch", (t) =>
  t.field({
    type: Batch,
    nullable: true,
    args: { id: t.arg.id({ required: true }) },
    resolve: (_, a, ctx) => service.findBatch(ctx.deps, ctx.principal, String(a.id)),
  }));

builder.mutationField("createBatchSend", (t) =>
  t.field({
    type: BatchSendPayload,
    args: { input: t.arg({ type: CreateBatchSendInput, required: true }) },
    resolve: (_, a, ctx) =>
      idempotentMutation(
        ctx,
        "createBatchSend",
        a.input,
        async (input) => (await service.createBatchSend(ctx.deps, ctx.principal, input)).batch,
      ),
  }));

builder.mutationField("createSegmentSend", (t) =>
  t.field({
    type: SegmentSendPayload,
    args: { input: t.arg({ type: CreateSegmentSendInput, required: true }) },
    resolve: (_, a, ctx) =>
      idempotentMutation(
        ctx,
        "createSegmentSend",
        a.input,
        (input) => service.createSegmentSend(ctx.deps, ctx.principal, input),
      ),
  }));

builder.mutationField("rescheduleBatch", (t) =>
  t.field({
    type: Batch,
    description: "Moves every send of the batch still scheduled or queued to `scheduledAt` (past or now: due at once).",
    args: { id: t.arg.id({ required: true }), scheduledAt: t.arg({ type: "DateTime", required: true }) },
    resolve: (_, a, ctx) =>
      service.rescheduleBatch(ctx.deps, ctx.principal, String(a.id), { scheduledAt: a.scheduledAt }),
  }));

builder.mutationField("cancelBatch", (t) =>
  t.field({
    type: Batch,
    description: "Cancels every send of the batch that is still scheduled or queued.",
    args: { id: t.arg.id({ required: true }) },
    resolve: (_, a, ctx) => service.cancelBatch(ctx.deps, ctx.principal, String(a.id)),
  }));
