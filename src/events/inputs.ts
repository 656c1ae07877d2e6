/** Shapes of recorded events: the `record_event` job payload, shared by every source. */
import { z } from "zod";

/** Event types that arrive after the send (tracking endpoints, reports, webhooks). */
export const RecordedEventType = z.enum(["delivered", "opened", "clicked", "bounced", "complained", "unsubscribed"]);
export type RecordedEventType = z.infer<typeof RecordedEventType>;

/**
 * Payload of the `record_event` job. `data` is free-form detail kept on the event
 * (user agent, URL, bounce type and diagnostic, report source…); for `bounced`,
 * `data.bounceType` is `hard` (the default) or `soft`.
 */
export const RecordEventPayload = z.object({
  sendId: z.uuid(),
  type: RecordedEventType,
  occurredAt: z.iso.datetime({ offset: true }),
  data: z.record(z.string(), z.unknown()).default({}),
});
export type RecordEventPayload = z.infer<typeof RecordEventPayload>;

/** The `record_event` job's payload: one event (older jobs, SQL-added jobs) or a batch of them. */
export const RecordEventJob = z.union([
  z.object({ events: z.array(RecordEventPayload).min(1).max(5000) }),
  RecordEventPayload.transform((e) => ({ events: [e] })),
]);
