/** SQL for suppressions: an account's contacts that are not mailed, with the event that made them so. */
import { type Kysely, sql } from "kysely";
import type { ContactStatus, Database } from "../db/tables.ts";
import type { ContactRow } from "../contacts/repo.ts";
import type { EventRow } from "../events/repo.ts";
import type { Cursor } from "../pagination.ts";

/** The statuses that suppress a contact: sends to it are `suppressed`, segment sends skip it. */
export const SUPPRESSED = ["unsubscribed", "bounced", "complained"] as const;

/** Why a contact is suppressed: its status. */
export type SuppressionReason = typeof SUPPRESSED[number];

/** A suppressed contact and the latest event of its status, if one was recorded. */
export interface SuppressionRow {
  contact: ContactRow & { status: SuppressionReason };
  event: EventRow | null;
}

/**
 * A page of an account's suppressed contacts, the most recently changed first, after a
 * (updated_at, id) cursor, optionally of one reason. Each comes with the latest event of its
 * status: the contact's own (unsubscribed through the API) or one of its sends' (a hard
 * bounce, a complaint, an unsubscribe link); soft bounces never suppress, so never count.
 */
export async function listSuppressions(
  db: Kysely<Database>,
  accountId: string,
  opts: { limit: number; reason?: SuppressionReason; after?: Cursor },
): Promise<SuppressionRow[]> {
  const reasons: readonly ContactStatus[] = opts.reason ? [opts.reason] : SUPPRESSED;
  // updated_at is set with now() (microseconds) but cursors hold milliseconds: order and
  // compare on the truncated value, ties broken by id, so that pages neither skip nor repeat.
  const at = sql`date_trunc('milliseconds', c.updated_at)`;
  const after = opts.after ? sql`and (${at}, c.id) < (${opts.after.createdAt}, ${opts.after.id}::uuid)` : sql``;
  const r = await sql<ContactRow & { ev_id: string | null } & Record<string, unknown>>`
    select c.*, ev.id as ev_id, ev.send_id as ev_send_id, ev.contact_id as ev_contact_id, ev.type as ev_type,
      ev.occurred_at as ev_occurred_at, ev.data as ev_data
    from contacts c
    left join lateral (
      select * from (
        (select e.id, e.send_id, e.contact_id, e.type, e.occurred_at, e.data from email_events e
         where e.contact_id = c.id and e.type = c.status
         order by e.id desc limit 1)
        union all
        (select e.id, e.send_id, e.contact_id, e.type, e.occurred_at, e.data
         from sends s join email_events e on e.send_id = s.id
         where s.contact_id = c.id and e.type = c.status
           and not (e.type = 'bounced' and e.data->>'bounceType' = 'soft')
         order by e.id desc limit 1)
      ) x order by x.id desc limit 1
    ) ev on true
    where c.account_id = ${accountId} and c.status = any(${reasons}::text[]) ${after}
    order by ${at} desc, c.id desc
    limit ${opts.limit}`.execute(db);
  return r.rows.map((row) => {
    const { ev_id, ev_send_id, ev_contact_id, ev_type, ev_occurred_at, ev_data, ...contact } = row;
    return {
      contact: contact as SuppressionRow["contact"],
      event: ev_id === null ? null : {
        id: ev_id,
        send_id: ev_send_id as string | null,
        contact_id: ev_contact_id as string | null,
        type: ev_type as EventRow["type"],
        occurred_at: ev_occurred_at as Date,
        data: ev_data as Record<string, unknown>,
      },
    };
  });
}
