/**
 * A small per-process cache with a time to live, for what every request reads (API keys,
 * templates, account state, verified domains). Entries are trusted for `ttlMs`: a change made
 * by another process shows here within that time; a change made by this process clears the
 * affected cache at once (see `clearRequestCaches`).
 */
export class TtlCache<V> {
  #entries = new Map<string, { value: V; until: number }>();

  constructor(private readonly ttlMs: number, private readonly max = 10_000) {}

  /** The cached value, or undefined when absent or expired. */
  get(key: string): V | undefined {
    const hit = this.#entries.get(key);
    if (!hit) return undefined;
    if (hit.until < Date.now()) {
      this.#entries.delete(key);
      return undefined;
    }
    return hit.value;
  }

  set(key: string, value: V): void {
    // Bounded: when full, start over rather than track recency (misses only cost a query).
    if (this.#entries.size >= this.max) this.#entries.clear();
    this.#entries.set(key, { value, until: Date.now() + this.ttlMs });
  }

  /** The cached value, or `load()`'s, which is then cached. */
  async getOrLoad(key: string, load: () => Promise<V>): Promise<V> {
    const hit = this.get(key);
    if (hit !== undefined) return hit;
    const value = await load();
    this.set(key, value);
    return value;
  }

  clear(): void {
    this.#entries.clear();
  }
}
