/**
 * The outward shapes of batches (API.md), as zod schemas: the types the services and REST
 * answer (`z.infer`), and through src/rest/openapi.ts the answers' schemas in openapi.json.
 */
import { z } from "zod";
import { type BatchStatus, SEND_STATUSES } from "../db/tables.ts";
import { ErrorView, Timestamp } from "../sends/view.ts";

/** A batch's status (tables.ts `BatchStatus`; the answers' types keep the two equal). */
const BatchStatusView = z.enum(["expanding", "accepted", "failed", "cancelled"]) satisfies z.ZodType<BatchStatus>;

/** `POST /api/v1/sends/batch` (and `createBatchSend`): the batch and each send it made, in order. */
export const BatchAccepted = z.strictObject({
  batchId: z.uuid(),
  count: z.int().nonnegative(),
  sends: z.array(z.strictObject({ id: z.uuid(), to: z.string(), status: z.enum(SEND_STATUSES) })),
  errors: z.array(z.strictObject({
    index: z.int().nonnegative().describe("The recipient's index in `recipients`."),
    code: z.enum(["validation_failed", "contact_not_found"]),
    message: z.string(),
    path: z.string().describe("The field, e.g. `recipients.3.to`."),
  })).optional().describe("`validation: permissive` only: the recipients left out, and why."),
}).meta({ id: "BatchAccepted" });
/** A recipient a permissive batch left out. */
export type RecipientError = NonNullable<BatchAccepted["errors"]>[number];
export type BatchAccepted = z.infer<typeof BatchAccepted>;

/** `POST /api/v1/sends` with `segmentId`: the batch whose job expands the segment. */
export const SegmentSendAccepted = z.strictObject({
  batchId: z.uuid(),
  segmentId: z.uuid(),
  status: z.literal("queued"),
}).meta({ id: "SegmentSendAccepted" });
export type SegmentSendAccepted = z.infer<typeof SegmentSendAccepted>;

/** `GET /api/v1/batches/:id`: a batch with its progress, how many of its sends are in each status. */
export const BatchView = z.strictObject({
  id: z.uuid(),
  status: BatchStatusView,
  templateId: z.uuid().nullable().describe("Null for the batch of a message submitted over SMTP."),
  segmentId: z.uuid().nullable(),
  count: z.int().nonnegative().describe("Sends created so far."),
  counts: z.partialRecord(z.enum(SEND_STATUSES), z.int().nonnegative()).describe("Sends by status."),
  error: ErrorView.nullable(),
  createdAt: Timestamp,
  updatedAt: Timestamp,
}).meta({ id: "Batch" });
export type BatchView = z.infer<typeof BatchView>;

/** `POST /api/v1/batches/:id/cancel`: the batch, and how many sends this call cancelled. */
export const BatchCancelled = BatchView.extend({ cancelled: z.int().nonnegative() }).meta({ id: "BatchCancelled" });
export type BatchCancelled = z.infer<typeof BatchCancelled>;

/** `PATCH /api/v1/batches/:id`: the batch, and how many of its sends this call moved. */
export const BatchRescheduled = BatchView.extend({ rescheduled: z.int().nonnegative() })
  .meta({ id: "BatchRescheduled" });
export type BatchRescheduled = z.infer<typeof BatchRescheduled>;
