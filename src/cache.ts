/**
 * Per-process caches of what every request reads (API keys, templates, account state,
 * verified domains, DKIM keys), kept true across processes by announcements.
 *
 * Every change to a cached table is announced by the database itself: a trigger per table
 * (migrations/0009_cache_notices.ts) sends `pg_notify('pp_cache', '<topic>:<key>')` for each
 * changed row, delivered when its transaction commits, whichever process, task or psql session
 * made it. Each process's notice connection (src/db/listen.ts) hands the notices to
 * `dropAnnounced`, which drops the entries of that topic and key in every cache here.
 *
 * Glossary:
 * - topic: the table a cache is about (`api_key`, `account`, `template`, `domain`); a cache
 *   names its topic once, and is registered under it.
 * - key: what a notice names within its topic (a key hash, an account id, `account:template`).
 *   A cache entry is dropped when its key equals the notice's key or starts with it and `:`
 *   (a domain notice names the account, so every `account:host` entry of it goes).
 * - trust: entries are served only while every notice connection of this process is up. When
 *   one drops, every cache is emptied and nothing is stored until it is back, because the
 *   notices sent meanwhile are lost. The TTL of each cache is the last bound, for a notice
 *   that never comes (a change written with triggers disabled).
 */
import { LRUCache } from "lru-cache";

const byTopic = new Map<string, Set<SharedCache<unknown>>>();
/** Notice connections of this process that are not listening (registered through `noticesDown`). */
let down = 0;

/**
 * A bounded LRU cache with a TTL whose entries are dropped when their rows change anywhere.
 * `undefined` and `null` are cached like any value (a miss is worth remembering too).
 */
export class SharedCache<V> {
  readonly #lru: LRUCache<string, { value: V }>;
  // Bumped by every drop: a load that began before a drop must not store what it read.
  #generation = 0;

  /**
   * @param topic what a notice must name to drop entries here (see the glossary).
   * @param opts.ttlMs how long an entry is trusted without any notice.
   * @param opts.max entries at most, least recently used out first.
   */
  constructor(readonly topic: string, opts: { ttlMs: number; max?: number }) {
    this.#lru = new LRUCache({ max: opts.max ?? 10_000, ttl: opts.ttlMs });
    let set = byTopic.get(topic);
    if (!set) byTopic.set(topic, set = new Set());
    set.add(this as SharedCache<unknown>);
  }

  /** The cached entry (`{ value }`), or undefined when absent, expired or not trusted now. */
  get(key: string): { value: V } | undefined {
    return down > 0 ? undefined : this.#lru.get(key);
  }

  /** Stores `value` under `key`, unless it cannot be trusted (a notice connection is down). */
  set(key: string, value: V): void {
    if (down === 0) this.#lru.set(key, { value });
  }

  /** The cached value, or `load()`'s, which is cached unless a drop happened while it loaded. */
  async getOrLoad(key: string, load: () => Promise<V>): Promise<V> {
    const hit = this.get(key);
    if (hit) return hit.value;
    const generation = this.#generation;
    const value = await load();
    if (generation === this.#generation) this.set(key, value);
    return value;
  }

  /** Drops `key` and every `key:…` entry, here only (a change this process made, before its notice arrives). */
  drop(key: string): void {
    this.#generation++;
    this.#lru.delete(key);
    const prefix = `${key}:`;
    for (const k of this.#lru.keys()) if (k.startsWith(prefix)) this.#lru.delete(k);
  }

  clear(): void {
    this.#generation++;
    this.#lru.clear();
  }
}

/** The notice channel (see the module comment). */
export const CACHE_CHANNEL = "pp_cache";

/** Applies one notice (`topic:key`) to every cache of its topic. Unknown topics are ignored. */
export function dropAnnounced(payload: string): void {
  const at = payload.indexOf(":");
  if (at <= 0) return;
  const caches = byTopic.get(payload.slice(0, at));
  if (!caches) return;
  const key = payload.slice(at + 1);
  for (const cache of caches) cache.drop(key);
}

/**
 * Tells the caches that a notice connection went down (`true`) or came back (`false`); each
 * connection reports each change once. While any is down nothing is served or stored; going
 * down empties every cache, since what changed meanwhile will never be announced.
 */
export function noticesDown(isDown: boolean): void {
  if (isDown) {
    down++;
    for (const caches of byTopic.values()) for (const cache of caches) cache.clear();
  } else {
    down = Math.max(0, down - 1);
  }
}
