/** SQL for inbound reports: only the lookup of the sends they name; events are written by `record_event`. */
import { type Kysely, sql } from "kysely";
import type { Database } from "../db/tables.ts";

/**
 * The sends among `ids`, in any account, with their recipient address (lower-cased):
 * reports name a send by id (or Message-ID) and never by tenant. One query for a whole batch.
 */
export async function sendRecipients(db: Kysely<Database>, ids: string[]): Promise<Map<string, string>> {
  if (ids.length === 0) return new Map();
  // The ids of a report batch that match a send, and each one's To address.
  const r = await sql<{ id: string; to: string }>`
    select id, lower(to_email) as to from sends where id = any(${ids}::uuid[])`.execute(db);
  return new Map(r.rows.map((row) => [row.id, row.to]));
}
