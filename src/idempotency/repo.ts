/** SQL for idempotency keys that is not part of a request's claim (idempotency/service.ts). */
import { type Kysely, sql } from "kysely";
import type { Database } from "../db/tables.ts";

/**
 * Deletes at most `limit` keys created more than `hours` ago, oldest first (index
 * idempotency_keys_created); rows another transaction holds (a claim renewing an expired
 * key) are skipped. Returns how many were deleted.
 */
export async function deleteKeysOlderThan(db: Kysely<Database>, hours: number, limit: number): Promise<number> {
  // Purpose: one bounded, index-driven slice of expired keys, located by ctid (the table has no id).
  const r = await sql`
    delete from idempotency_keys where ctid = any(array(
      select ctid from idempotency_keys where created_at < now() - make_interval(hours => ${hours})
      order by created_at limit ${limit} for update skip locked))`.execute(db);
  return Number(r.numAffectedRows ?? 0);
}
