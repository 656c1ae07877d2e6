/** GraphQL for email events. */
import type { Selectable } from "kysely";
import { type EmailEventsTable, EVENT_TYPES } from "../db/tables.ts";
import { Contact } from "../contacts/schema.ts";
import { builder, upperCaseValues } from "../graphql/builder.ts";
import { connectionType, toConnection } from "../graphql/connection.ts";
import { LiveFailure } from "./live.ts";
import * as service from "./service.ts";

/**
 * GraphQL `EmailEventType`: the REST event types upper-cased, and `RESUBSCRIBED`, a
 * contact-level event (no send) recorded when a suppression is lifted through the API.
 */
export const EmailEventType = builder.enumType("EmailEventType", {
  values: upperCaseValues(EVENT_TYPES),
});

type EventRow = Pick<Selectable<EmailEventsTable>, "id" | "send_id" | "type" | "occurred_at" | "data"> & {
  contact_id?: string | null;
};

/** GraphQL `EmailEvent`. */
export const EmailEvent = builder.objectRef<EventRow>("EmailEvent").implement({
  fields: (t) => ({
    id: t.exposeID("id"),
    sendId: t.exposeID("send_id", { nullable: true }),
    contactId: t.exposeID("contact_id", { nullable: true }),
    type: t.field({ type: EmailEventType, resolve: (e) => e.type }),
    occurredAt: t.field({ type: "DateTime", resolve: (e) => e.occurred_at }),
    data: t.field({ type: "JSON", resolve: (e) => e.data }),
  }),
});

const EmailEventConnection = connectionType("EmailEvent", EmailEvent);

builder.queryField("events", (t) =>
  t.field({
    type: EmailEventConnection,
    description: "A send's events, oldest first.",
    args: {
      sendId: t.arg.id({ required: true }),
      type: t.arg({ type: EmailEventType }),
      first: t.arg.int(),
      after: t.arg.string(),
    },
    resolve: async (_, a, ctx) => {
      const first = Math.min(Math.max(a.first ?? 100, 1), 1000);
      const rows = await service.sendEvents(ctx.deps, ctx.principal, String(a.sendId), { ...a, first: first + 1 });
      return toConnection(rows.slice(0, first), rows.length > first, (e) => String(e.id));
    },
  }));

builder.subscriptionField("sendEvents", (t) =>
  t.field({
    type: EmailEvent,
    description: "The events of one send, or of every send of a batch, as they are recorded (by any process), " +
      "in commit order. Exactly one of sendId and batchId. Over server-sent events: " +
      "POST or GET /graphql with `Accept: text/event-stream`.",
    args: { sendId: t.arg.id(), batchId: t.arg.id() },
    subscribe: (_, a, ctx) =>
      service.subscribeSendEvents(ctx.deps, ctx.principal, {
        sendId: a.sendId == null ? null : String(a.sendId),
        batchId: a.batchId == null ? null : String(a.batchId),
      }),
    // A failure inside the stream is rethrown here, so that it is logged and answered masked.
    resolve: (item) => {
      if (item instanceof LiveFailure) throw item.cause;
      return item;
    },
  }));

builder.objectField(Contact, "events", (t) =>
  t.field({
    type: [EmailEvent],
    description: "Newest first: the contact's own events (a suppression lifted, unsubscribed through the API) " +
      "and those of its sends. `first` 1–500, default 50.",
    args: { first: t.arg.int() },
    resolve: (c, a, ctx) => service.contactEvents(ctx.deps, ctx.principal, c, a.first),
  }));
