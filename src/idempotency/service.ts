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
import type { Kysely } from "kysely";
import type { Deps, Tenant } from "../context.ts";
import type { Database } from "../db/tables.ts";
import { AppError, type ErrorCode, type FieldError, invalid } from "../errors.ts";
import { claimKey, deleteKeysOlderThan, releaseKey, storeResult } from "./repo.ts";

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

/** JSON with object keys sorted at every depth: equal values give equal text, whatever their keys' order. */
export function canonicalJson(v: unknown): string {
  if (Array.isArray(v)) return `[${v.map(canonicalJson).join(",")}]`;
  if (v && typeof v === "object") {
    const o = v as Record<string, unknown>;
    // Absent and undefined are the same (JSON.stringify drops both).
    const keys = Object.keys(o).filter((k) => o[k] !== undefined).sort();
    return `{${keys.map((k) => `${JSON.stringify(k)}:${canonicalJson(o[k])}`).join(",")}}`;
  }
  return JSON.stringify(v ?? null);
}

/**
 * What identifies a request, the same for REST and GraphQL: SHA-256 of the operation
 * (`POST /api/v1/sends`, `graphql createSend`) and the canonical JSON of its parsed input
 * (the JSON body; the mutation's input without `idempotencyKey`), so the same input with its
 * keys in another order is the same request.
 */
export function fingerprint(operation: string, input: unknown): string {
  return createHash("sha256").update(`${operation}\n${canonicalJson(input)}`).digest("hex");
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
  const c = await claimKey(deps.db, t.apiKeyId, key, fp, IDEMPOTENCY_TTL_HOURS, STALE_RUNNING_MINUTES);
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
  const store = (status: number, body: unknown) => storeResult(deps.db, t.apiKeyId, key, status, body);
  let result: StoredResult;
  try {
    result = await run();
  } catch (err) {
    if (err instanceof AppError && err.status < 500) {
      await store(err.status, { error: { code: err.code, message: err.message, errors: err.errors } });
    } else {
      await releaseKey(deps.db, t.apiKeyId, key);
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
