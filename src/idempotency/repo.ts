/** SQL for idempotency keys: claim, result, release (idempotency/service.ts) and expiry. */
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

/**
 * Claims `key` for a request with fingerprint `fp`, or returns the row that holds it. A key
 * older than `ttlHours`, or still `running` after `staleMinutes` (its process died), is
 * claimed anew.
 */
export async function claimKey(
  db: Kysely<Database>,
  apiKeyId: string,
  key: string,
  fp: string,
  ttlHours: number,
  staleMinutes: number,
) {
  // Purpose: take the key in one statement; nothing is returned when another request holds it.
  const r = await sql<{ claimed: boolean }>`
    insert into idempotency_keys as k (api_key_id, key, fingerprint, state)
    values (${apiKeyId}, ${key}, ${fp}, 'running')
    on conflict (api_key_id, key) do update
      set fingerprint = excluded.fingerprint, state = 'running', response_status = null, response_body = null,
          created_at = now()
      where k.created_at < now() - make_interval(hours => ${ttlHours})
         or (k.state = 'running' and k.created_at < now() - make_interval(mins => ${staleMinutes}))
    returning true as claimed`.execute(db);
  if (r.rows[0]) return { claimed: true as const };
  // Purpose: the row that holds the key (gone if its holder released it meanwhile).
  const existing = await db.selectFrom("idempotency_keys").selectAll()
    .where("api_key_id", "=", apiKeyId).where("key", "=", key).executeTakeFirst();
  return { claimed: false as const, existing };
}

/** Stores the first request's answer under its key, which is then `done`. */
export async function storeResult(db: Kysely<Database>, apiKeyId: string, key: string, status: number, body: unknown) {
  // Purpose: the answer a replay gives.
  await db.updateTable("idempotency_keys")
    .set({ state: "done", response_status: status, response_body: JSON.stringify(body) })
    .where("api_key_id", "=", apiKeyId).where("key", "=", key).execute();
}

/** Frees a key whose request failed on the server's side, so that a retry runs. */
export async function releaseKey(db: Kysely<Database>, apiKeyId: string, key: string) {
  // Purpose: forget the claim.
  await db.deleteFrom("idempotency_keys").where("api_key_id", "=", apiKeyId).where("key", "=", key).execute();
}
