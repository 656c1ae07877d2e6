/** SQL for inbound reports: only the existence check; events are written by `record_event`. */
import { type Kysely, sql } from "kysely";
import type { Database } from "../db/tables.ts";

/**
 * Which of `ids` are sends, in any account: reports name a send by id (or Message-ID) and
 * never by tenant. One query for a whole batch.
 */
export async function existingSendIds(db: Kysely<Database>, ids: string[]): Promise<Set<string>> {
  if (ids.length === 0) return new Set();
  // The ids of a report batch that match a send.
  const r = await sql<{ id: string }>`select id from sends where id = any(${ids}::uuid[])`.execute(db);
  return new Set(r.rows.map((row) => row.id));
}
