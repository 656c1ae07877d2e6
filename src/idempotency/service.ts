/**
 * Idempotency keys (API.md): a request carrying `Idempotency-Key` runs at most once per
 * API key and key within 24 h. The same key with the same request answers the first
 * result again (errors included, except 5xx, which free the key for a retry); with another
 * request, `409 idempotency_conflict`; while the first is still running, also 409 (retry).
 *
 * The key is claimed before the work and the result stored after it. A process that dies
 * in between leaves the key `running`; retries get 409 for STALE_RUNNING_MINUTES, then may
 * run again (the one window where work could be done twice, as with Stripe's keys).
 */
import { createHash } from "node:crypto";
import { type Kysely, sql } from "kysely";
import type { Deps, Tenant } from "../context.ts";
import type { Database } from "../db/tables.ts";
import { AppError, type ErrorCode, type FieldError, invalid } from "../errors.ts";
import { deleteKeysOlderThan } from "./repo.ts";

/** Longest accepted key. */
export const MAX_IDEMPOTENCY_KEY = 256;
/** How long a key is kept. */
export const IDEMPOTENCY_TTL_HOURS = 24;
/** A claim still `running` this long belongs to a process that died: a retry may run. */
export const STALE_RUNNING_MINUTES = 5;

/** A result as stored: what the first request answered. */
export interface StoredResult {
  status: number;
  body: unknown;
}

/** An AppError answered again from a stored result. */
export class ReplayedError extends AppError {
  readonly replayed = true;
}

/** Checks a key from a header or an input field: 1–256 printable ASCII characters. */
export function validKey(key: string, path: string): string {
  if (key.length === 0 || key.length > MAX_IDEMPOTENCY_KEY || !/^[\x20-\x7e]+$/.test(key)) {
    throw invalid(path, `must be 1–${MAX_IDEMPOTENCY_KEY} printable ASCII characters`);
  }
  return key;
}

/** SHA-256 of what identifies a request: operation and body. */
export function fingerprint(...parts: string[]): string {
  return createHash("sha256").update(parts.join("\n")).digest("hex");
}

/** Claims the key for this request, or returns the row that holds it. One statement. */
async function claim(db: Kysely<Database>, apiKeyId: string, key: string, fp: string) {
  const r = await sql<
    { claimed: boolean; fingerprint: string; state: string; response_status: number | null; response_body: unknown }
  >`
    insert into idempotency_keys as k (api_key_id, key, fingerprint, state)
    values (${apiKeyId}, ${key}, ${fp}, 'running')
    on conflict (api_key_id, key) do update
      set fingerprint = excluded.fingerprint, state = 'running', response_status = null, response_body = null,
          created_at = now()
      where k.created_at < now() - make_interval(hours => ${IDEMPOTENCY_TTL_HOURS})
         or (k.state = 'running' and k.created_at < now() - make_interval(mins => ${STALE_RUNNING_MINUTES}))
    returning true as claimed, fingerprint, state, response_status, response_body`.execute(db);
  if (r.rows[0]) return { claimed: true as const };
  const existing = await db.selectFrom("idempotency_keys").selectAll()
    .where("api_key_id", "=", apiKeyId).where("key", "=", key).executeTakeFirst();
  return { claimed: false as const, existing };
}

/**
 * Runs `run` under the idempotency key (or simply runs it when `key` is null). `run`
 * answers a JSON result with its status; AppErrors it throws are stored and replayed as
 * ReplayedError; anything else (5xx) releases the key.
 */
export async function idempotent(
  deps: Deps,
  t: Tenant,
  key: string | null | undefined,
  fp: string,
  run: () => Promise<StoredResult>,
): Promise<StoredResult & { replayed: boolean }> {
  if (key == null) return { ...(await run()), replayed: false };
  const c = await claim(deps.db, t.apiKeyId, key, fp);
  if (!c.claimed) {
    const e = c.existing;
    if (!e) throw new AppError("idempotency_conflict", "the Idempotency-Key is being reused; retry");
    if (e.fingerprint !== fp) {
      throw new AppError("idempotency_conflict", "this Idempotency-Key was used with a different request");
    }
    if (e.state === "running") {
      throw new AppError("idempotency_conflict", "the first request with this Idempotency-Key is still running; retry");
    }
    const body = e.response_body as { error?: { code: ErrorCode; message: string; errors?: FieldError[] } };
    if (body?.error) throw new ReplayedError(body.error.code, body.error.message, body.error.errors);
    return { status: e.response_status!, body: e.response_body, replayed: true };
  }
  const store = (status: number, body: unknown) =>
    deps.db.updateTable("idempotency_keys")
      .set({ state: "done", response_status: status, response_body: JSON.stringify(body) })
      .where("api_key_id", "=", t.apiKeyId).where("key", "=", key).execute();
  let result: StoredResult;
  try {
    result = await run();
  } catch (err) {
    if (err instanceof AppError && err.status < 500) {
      await store(err.status, { error: { code: err.code, message: err.message, errors: err.errors } });
    } else {
      await deps.db.deleteFrom("idempotency_keys").where("api_key_id", "=", t.apiKeyId).where("key", "=", key)
        .execute();
    }
    throw err;
  }
  await store(result.status, result.body);
  return { ...result, replayed: false };
}

/**
 * Deletes every key older than the TTL (the hourly `retention` job), at most `chunk` rows per
 * statement, each its own short transaction, until none is left or `signal` aborts. Returns
 * how many were deleted and in how many statements.
 */
export async function deleteExpiredKeys(
  db: Kysely<Database>,
  chunk = 10_000,
  signal?: AbortSignal,
): Promise<{ deleted: number; statements: number }> {
  let deleted = 0, statements = 0, n: number;
  do {
    n = await deleteKeysOlderThan(db, IDEMPOTENCY_TTL_HOURS, chunk);
    deleted += n;
    statements++;
  } while (n === chunk && !signal?.aborted);
  return { deleted, statements };
}
