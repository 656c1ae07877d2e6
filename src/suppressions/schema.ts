/** GraphQL for suppressions: `suppressions(first, after, reason)`. */
import { Contact } from "../contacts/schema.ts";
import { EmailEvent } from "../events/schema.ts";
import { builder } from "../graphql/builder.ts";
import { connectionType, toConnection } from "../graphql/connection.ts";
import { encodeCursor } from "../pagination.ts";
import { Send } from "../sends/schema.ts";
import { findSend } from "../sends/service.ts";
import { sendView } from "../sends/view.ts";
import type { SuppressionRow } from "./repo.ts";
import * as service from "./service.ts";

/** GraphQL `SuppressionReason`: the contact status that keeps it from being mailed. */
export const SuppressionReason = builder.enumType("SuppressionReason", {
  values: {
    UNSUBSCRIBED: { value: "unsubscribed" },
    BOUNCED: { value: "bounced" },
    COMPLAINED: { value: "complained" },
  } as const,
});

/** GraphQL `Suppression`: a contact that is not mailed, why, since when, and what caused it. */
export const Suppression = builder.objectRef<SuppressionRow>("Suppression").implement({
  description: "A contact that is not mailed. Lift it with updateContact(id, {status: SUBSCRIBED}).",
  fields: (t) => ({
    contact: t.field({ type: Contact, resolve: (s) => s.contact }),
    reason: t.field({ type: SuppressionReason, resolve: (s) => s.contact.status }),
    suppressedAt: t.field({
      type: "DateTime",
      description: "When the event that suppressed the contact happened; its last change when none is known.",
      resolve: (s) => s.event?.occurred_at ?? s.contact.updated_at,
    }),
    sendId: t.id({ nullable: true, resolve: (s) => s.event?.send_id ?? null }),
    send: t.field({
      type: Send,
      nullable: true,
      description: "The send whose bounce, complaint or unsubscribe caused it, if known.",
      resolve: async (s, _, ctx) => {
        const row = s.event?.send_id ? await findSend(ctx.deps, ctx.principal, s.event.send_id) : null;
        return row && sendView(row);
      },
    }),
    event: t.field({
      type: EmailEvent,
      nullable: true,
      description: "The latest event of the contact's status, if one was recorded.",
      resolve: (s) => s.event,
    }),
  }),
});

const SuppressionConnection = connectionType("Suppression", Suppression);

builder.queryField("suppressions", (t) =>
  t.field({
    type: SuppressionConnection,
    description: "The account's suppressed contacts, the most recently changed first.",
    args: { first: t.arg.int(), after: t.arg.string(), reason: t.arg({ type: SuppressionReason }) },
    resolve: async (_, a, ctx) => {
      const page = await service.listSuppressions(ctx.deps, ctx.principal, a);
      // The cursor is the contact's position in this order: (updated_at, id).
      return toConnection(page.rows, page.hasMore, (s) =>
        encodeCursor({ created_at: s.contact.updated_at, id: s.contact.id }));
    },
  }));
