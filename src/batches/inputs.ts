/** Input shapes of batch sends and segment sends, shared by REST, GraphQL and jobs. */
import { z } from "zod";
import {
  CopyAddresses,
  CustomHeaders,
  messageFields,
  Personalizations,
  Recipient,
  sharedSendFields,
} from "../sends/inputs.ts";

/** The most recipients one batch may have. */
export const MAX_BATCH = 1000;

/** One recipient of a batch: an address or a contact uuid, with its own values and headers (over the batch's). */
export const BatchRecipient = z.strictObject({
  to: Recipient,
  personalizations: Personalizations,
  headers: CustomHeaders,
  cc: CopyAddresses.describe("This recipient's cc, instead of the batch's."),
  bcc: CopyAddresses.describe("This recipient's bcc, instead of the batch's."),
});
export type BatchRecipient = z.infer<typeof BatchRecipient>;

/** How a batch treats bad recipients: `strict` refuses the whole batch, `permissive` accepts the rest. */
export const BATCH_VALIDATIONS = ["strict", "permissive"] as const;

/** Body of `POST /api/v1/sends/batch` and `createBatchSend`. */
export const CreateBatchInput = z.strictObject({
  ...sharedSendFields,
  ...messageFields,
  recipients: z.array(BatchRecipient).min(1, "at least one recipient is required"),
  validation: z.enum(BATCH_VALIDATIONS).nullish()
    .describe("`strict` (default): one bad recipient refuses the batch. `permissive`: the valid ones are accepted."),
}).meta({ id: "CreateBatchInput" });
export type CreateBatchInput = z.infer<typeof CreateBatchInput>;

/** A permissive batch before its recipients are checked one by one. */
export const PermissiveBatchInput = CreateBatchInput.extend({
  recipients: z.array(z.unknown()).min(1, "at least one recipient is required"),
});

/** Body of a segment send (`POST /api/v1/sends` with `segmentId`, `createSegmentSend`). */
export const CreateSegmentSendInput = z.strictObject({
  ...sharedSendFields,
  segmentId: z.uuid("must be a segment uuid"),
  personalizations: Personalizations,
}).meta({ id: "CreateSegmentSendInput" });
export type CreateSegmentSendInput = z.infer<typeof CreateSegmentSendInput>;

/** A segment send's request as kept on its batch for the expansion job. */
export const SegmentSendRequest = CreateSegmentSendInput.extend({ sandbox: z.boolean().default(false) });

/** Payload of the `expand_segment` job. */
export const ExpandSegmentPayload = z.object({ batchId: z.uuid() });
