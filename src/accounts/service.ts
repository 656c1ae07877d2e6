/**
 * Accounts, API keys and authentication. Keys are `pp_live_`/`pp_test_` + 40 base62
 * characters; only their SHA-256 is stored. Key lookups and account state are cached per
 * process (src/cache.ts) so that the hot path costs no query; a change to a key or an account,
 * made by any process, drops the entry everywhere when its transaction commits (the database
 * announces it), and this process drops its own at once.
 */
import { createHash, timingSafeEqual } from "node:crypto";
import type { Deps, Principal, Tenant } from "../context.ts";
import { requireAdmin, requireTenant } from "../context.ts";
import { AppError, invalid } from "../errors.ts";
import type { KeyScope } from "../db/tables.ts";
import { listDomains } from "../domains/repo.ts";
import { assertUuid, parseInput } from "../validation.ts";
import { CreateAccountInput, CreateApiKeyInput } from "./inputs.ts";
import * as repo from "./repo.ts";
import { SharedCache } from "../cache.ts";

/** How long a key lookup or account state is trusted in memory if its change were never announced. */
export const ACCOUNT_CACHE_MS = 60_000;

const BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/** `n` random base62 characters from the system CSPRNG (rejection-sampled, unbiased). */
export function randomBase62(n: number): string {
  let out = "";
  while (out.length < n) {
    for (const b of crypto.getRandomValues(new Uint8Array(n * 2))) {
      if (b < 248 && out.length < n) out += BASE62[b % 62];
    }
  }
  return out;
}

/** Hex SHA-256 of a key (synchronous node:crypto: WebCrypto's async digest cost ~40 µs per request here). */
export function hashKey(key: string): string {
  return createHash("sha256").update(key).digest("hex");
}

const KEY_RE = /^pp_(live|test)_[0-9A-Za-z]{32,}$/;
/** Live keys whose lookup is cached, at most (least recently used out first). */
const KEY_CACHE_MAX = 10_000;
/** Unknown or revoked keys whose miss is cached, at most. */
const UNKNOWN_KEY_CACHE_MAX = 1_000;
// Live keys and misses are kept apart so that made-up keys, however many, can only push out
// other misses: a flood of unknown keys never costs a real key its cached lookup. Both are
// keyed by the key's hash, which is what a key's notice names.
const keyCache = new SharedCache<Tenant>("api_key", { max: KEY_CACHE_MAX, ttlMs: ACCOUNT_CACHE_MS });
const unknownKeys = new SharedCache<true>("api_key", { max: UNKNOWN_KEY_CACHE_MAX, ttlMs: ACCOUNT_CACHE_MS });
/** Account rows by id, as every send reads them (state, limit). */
const accountCache = new SharedCache<repo.AccountRow | undefined>("account", { ttlMs: ACCOUNT_CACHE_MS });

/**
 * Resolves the credential of a request: an API key (`X-API-Key`, or `Authorization: Bearer
 * pp_…`) gives a Tenant, the admin token gives Admin. Returns null when none was given;
 * throws 401 when one was given and is unknown or revoked.
 */
export async function authenticate(deps: Deps, headers: Headers): Promise<Principal> {
  const bearer = headers.get("authorization")?.match(/^Bearer\s+(.+)$/i)?.[1]?.trim();
  const key = headers.get("x-api-key")?.trim() ?? bearer;
  if (!key) return null;
  if (!key.startsWith("pp_") && sameSecret(key, deps.secrets.adminToken)) return { kind: "admin" };
  if (!KEY_RE.test(key)) throw new AppError("unauthorized", "unknown or revoked API key");
  const hash = hashKey(key);
  const hit = keyCache.get(hash);
  if (hit) return hit.value;
  if (!unknownKeys.get(hash)) {
    const row = await repo.findActiveKeyByHash(deps.db, hash);
    if (row) {
      const tenant: Tenant = {
        kind: "tenant",
        accountId: row.account_id,
        apiKeyId: row.id,
        mode: row.mode,
        scope: row.scope,
        domains: row.domains,
      };
      keyCache.set(hash, tenant);
      return tenant;
    }
    unknownKeys.set(hash, true);
  }
  throw new AppError("unauthorized", "unknown or revoked API key");
}

/**
 * Whether the key `apiKeyId` still works (exists and is not revoked), read from the database:
 * for what outlives one request, such as a live event stream.
 */
export async function isKeyActive(deps: Deps, apiKeyId: string): Promise<boolean> {
  return (await repo.findActiveKeyById(deps.db, apiKeyId)) !== undefined;
}

/** Constant-time string comparison: SHA-256 both sides so the lengths match too. */
function sameSecret(a: string, b: string): boolean {
  const h = (v: string) => createHash("sha256").update(v).digest();
  return timingSafeEqual(h(a), h(b));
}

/** Ops: creates an account (sending enabled, `monthlyLimit` null = unlimited). */
export async function createAccount(deps: Deps, p: Principal, input: unknown) {
  requireAdmin(p);
  const v = parseInput(CreateAccountInput, input);
  const account = await repo.insertAccount(deps.db, v.name, v.monthlyLimit ?? null);
  deps.log.info("account created", { accountId: account.id });
  return account;
}

/**
 * Issues a key; the plain key is returned only here, never stored. Ops may issue any key for
 * any account. A `full` tenant key may issue `sending` keys for its own account (403
 * `forbidden` for a `full` one or another account). Each of `domains` must be a verified
 * domain of the account (422 naming it).
 */
export async function createApiKey(deps: Deps, p: Principal, input: unknown) {
  const v = parseInput(CreateApiKeyInput, input);
  const scope = v.scope ?? "full";
  let accountId: string;
  if (p?.kind === "admin") {
    if (!v.accountId) throw invalid("accountId", "is required of ops");
    accountId = v.accountId;
    if (!(await repo.findAccount(deps.db, accountId))) throw new AppError("not_found", "account not found");
  } else {
    const t = requireTenant(p);
    if (v.accountId && v.accountId !== t.accountId) {
      throw new AppError("forbidden", "a key may create keys for its own account only");
    }
    if (scope !== "sending") {
      throw new AppError("forbidden", "a key may create SENDING keys only; FULL keys come from ops");
    }
    accountId = t.accountId;
  }
  const domains = v.domains ? [...new Set(v.domains)] : null;
  if (domains) {
    const verified = new Set(
      (await listDomains(deps.db, accountId)).filter((d) => d.status === "verified").map((d) => d.name.toLowerCase()),
    );
    const errors = domains.flatMap((d, i) =>
      verified.has(d) ? [] : [{ path: `domains.${i}`, message: `${d} is not a verified domain of the account` }]
    );
    if (errors.length) throw new AppError("validation_failed", errors.map((e) => e.message).join("; "), errors);
  }
  return await issueKey(deps, accountId, v.mode, { scope, domains });
}

/** Creates a key row for an account and returns the plain key with it (seed, ops and tenants). */
export async function issueKey(
  deps: Deps,
  accountId: string,
  mode: "live" | "test",
  limits: { scope: KeyScope; domains: string[] | null } = { scope: "full", domains: null },
) {
  const key = `pp_${mode}_${randomBase62(40)}`;
  const apiKey = await repo.insertApiKey(deps.db, {
    account_id: accountId,
    mode,
    prefix: key.slice(0, 12),
    key_hash: hashKey(key),
    scope: limits.scope,
    domains: limits.domains,
  });
  deps.log.info("api key created", { accountId, apiKeyId: apiKey.id, prefix: apiKey.prefix, scope: limits.scope });
  return { key, apiKey };
}

/**
 * An account's row as every send reads it (sending state, monthly limit), cached; undefined
 * when it does not exist.
 */
export function accountState(deps: Pick<Deps, "db">, accountId: string): Promise<repo.AccountRow | undefined> {
  return accountCache.getOrLoad(accountId, () => repo.findAccount(deps.db, accountId));
}

/** Drops this process's cached state of an account it just changed (other processes hear of it from the database). */
export function forgetAccount(accountId: string): void {
  accountCache.drop(accountId);
}

/** Ops: revokes a key; it stops working at once in this process, and in the others once they hear of it. */
export async function revokeApiKey(deps: Deps, p: Principal, id: string) {
  requireAdmin(p);
  const row = await repo.revokeKey(deps.db, assertUuid(id));
  if (!row) throw new AppError("not_found", "API key not found");
  keyCache.drop(row.key_hash);
  deps.log.info("api key revoked", { apiKeyId: id });
  return row;
}

/** Ops: pauses or resumes an account's sending. */
export async function setAccountSending(deps: Deps, p: Principal, accountId: string, enabled: boolean) {
  requireAdmin(p);
  const row = await repo.updateSending(deps.db, assertUuid(accountId), enabled, enabled ? null : "paused by ops");
  if (!row) throw new AppError("not_found", "account not found");
  forgetAccount(row.id);
  if (enabled) await repo.releaseHeldSends(deps.db, row.id);
  deps.log.info(enabled ? "sending resumed" : "sending paused", { accountId });
  return row;
}

/** The caller's own account. */
export async function getOwnAccount(deps: Deps, p: Principal) {
  const t = requireTenant(p);
  const row = await repo.findAccount(deps.db, t.accountId);
  if (!row) throw new AppError("unauthorized", "account no longer exists");
  return row;
}

/** Ops: one account by id, or null. */
export async function getAccount(deps: Deps, p: Principal, id: string) {
  requireAdmin(p);
  return (await repo.findAccount(deps.db, assertUuid(id))) ?? null;
}

/** This month's usage of an account. */
export async function usageOf(deps: Deps, account: { id: string; monthly_limit: number | null }) {
  const u = await repo.currentUsage(deps.db, account.id);
  const limit = account.monthly_limit;
  return { month: u.month, used: u.used, limit, remaining: limit === null ? null : Math.max(limit - u.used, 0) };
}

/** An account's keys (prefix only). */
export function keysOf(deps: Deps, accountId: string) {
  return repo.listKeys(deps.db, accountId);
}

/**
 * An account's monthly limit (null: unlimited) and its use this month, as a reservation
 * left it: the accepting services return it with their result, the REST edge turns it into
 * the X-Quota headers (rest/quota.ts).
 */
export interface Quota {
  limit: number | null;
  used: number;
}
