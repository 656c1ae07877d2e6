/**
 * Live events for `Subscription.sendEvents`. The service's notice connection (src/db/listen.ts)
 * LISTENs on `pp_events`, and the hub here fans each notice out to the subscribers of this
 * process. Every event insert announces itself in the same statement (repo.ts,
 * `notifySelect`), so an event recorded by a worker in another process reaches a subscriber
 * here as soon as its transaction commits. There is no in-process bus to miss it.
 *
 * Glossary:
 * - notice: one event's entry in a NOTIFY payload (EventNotice: ids and type only, never the
 *   data, which is read back by id); a payload is a JSON array of up to 40 of them, or one
 *   notice alone (as processes of earlier versions send it).
 * - gap: a subscriber may have missed notices (the connection dropped, or it fell more than
 *   `maxQueue` notices behind). It then reads what it missed back from the database by event
 *   id before it goes on, so memory stays bounded and no event is silently skipped.
 * - stream: one subscriber, opened with one API key. A key holds at most `maxStreamsPerKey`
 *   streams in one process, and its streams are re-checked every `keyCheckMs`: once the key
 *   is revoked they yield an `unauthorized` error and end.
 */
import { type Deps, processDeps } from "../context.ts";
import type { Listener } from "../db/listen.ts";
import { AppError } from "../errors.ts";
import type { Logger } from "../log.ts";
import { type EventNotice, EVENTS_CHANNEL } from "./repo.ts";

/** Tuning of a LiveEvents hub. */
export interface LiveOptions {
  /** Notices a subscriber may hold unread before they are dropped for a catch-up (a gap). Default 10,000. */
  maxQueue?: number;
  /** Events read per query (notices to rows, catch-up pages). Default 500. */
  chunk?: number;
  /** How long a new subscriber waits for the LISTEN connection before it fails. Default 10,000 ms. */
  connectTimeoutMs?: number;
  /** Streams one API key may hold open at once; the next is refused with `rate_limited`. Default 20. */
  maxStreamsPerKey?: number;
  /** How often each key with open streams is re-checked; a revoked key's streams end. Default 30,000 ms. */
  keyCheckMs?: number;
}

const DEFAULTS: Required<LiveOptions> = {
  maxQueue: 10_000,
  chunk: 500,
  connectTimeoutMs: 10_000,
  maxStreamsPerKey: 20,
  keyCheckMs: 30_000,
};

/** What a subscriber follows, and how it reads events. `T` is an event row with a bigint id as a string. */
export interface LiveSource<T extends { id: string }> {
  accountId: string;
  /**
   * The API key the stream was opened with: it counts against that key's limit and ends
   * when `keyActive` (asked every `keyCheckMs` while the stream is open) answers false.
   * Streams without a key (a hub's own use) are neither counted nor re-checked.
   */
  apiKeyId?: string;
  keyActive?(): Promise<boolean>;
  /** Exactly one of sendId and batchId. */
  sendId?: string;
  batchId?: string;
  /** The highest event id when the subscription began: a catch-up never reads at or below it. */
  startId: string;
  /** The rows of these event ids (any order; missing ones are skipped). */
  load(ids: string[]): Promise<T[]>;
  /** Up to `limit` matching rows with an id above `afterId`, oldest first (a catch-up page). */
  since(afterId: string, limit: number): Promise<T[]>;
}

/**
 * A failure inside a live subscription (a query that threw). It is yielded once, then the
 * stream ends: the resolver rethrows it so that the error is logged and answered masked in
 * the stream, instead of the stream being cut with nothing said.
 */
export class LiveFailure {
  constructor(readonly cause: unknown) {}
}

/**
 * One subscriber: an async iterator of its events, in the order their transactions committed
 * (events read together, one chunk or catch-up page, in id order). `return()` (the client
 * went away) ends it at once, even while it waits for the next notice.
 */
export class LiveSubscription<T extends { id: string }> implements AsyncIterableIterator<T | LiveFailure> {
  readonly #source: LiveSource<T>;
  readonly #opts: Required<LiveOptions>;
  readonly #onClose: () => void;
  #pending: string[] = [];
  #ready: T[] = [];
  #gap = false;
  #closed = false;
  #failure: LiveFailure | null = null;
  #wake: (() => void) | null = null;
  // Ids already yielded (the newest ones), so that a catch-up and the notices that arrive
  // meanwhile do not yield an event twice.
  #seen = new Set<string>();
  #high: bigint;

  constructor(source: LiveSource<T>, opts: Required<LiveOptions>, onClose: () => void) {
    this.#source = source;
    this.#opts = opts;
    this.#onClose = onClose;
    this.#high = BigInt(source.startId);
  }

  /** The account whose events this subscriber may see. */
  get accountId(): string {
    return this.#source.accountId;
  }

  /** What the stream was opened with (the hub re-checks its key). */
  get source(): LiveSource<T> {
    return this.#source;
  }

  /** The hub's: a notice for this subscriber. */
  push(id: string): void {
    if (this.#closed) return;
    if (this.#pending.length >= this.#opts.maxQueue) {
      // Too slow a reader: drop what waits and read it back from the database later.
      this.#pending = [];
      this.#gap = true;
    } else {
      this.#pending.push(id);
    }
    this.#signal();
  }

  /** The hub's: notices may have been lost (the connection dropped). */
  gap(): void {
    if (this.#closed) return;
    this.#gap = true;
    this.#signal();
  }

  /** Ends the subscription with an error: `next()` yields it (a LiveFailure) at once, then answers done. */
  fail(cause: unknown): void {
    if (this.#closed || this.#failure) return;
    this.#failure = new LiveFailure(cause);
    this.#signal();
  }

  /** Ends the subscription; a pending `next()` answers done. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#pending = [];
    this.#ready = [];
    this.#onClose();
    this.#signal();
  }

  async next(): Promise<IteratorResult<T | LiveFailure>> {
    while (true) {
      if (this.#closed) return { value: undefined, done: true };
      if (this.#failure) {
        const failure = this.#failure;
        this.close();
        return { value: failure, done: false };
      }
      const row = this.#ready.shift();
      if (row) {
        this.#remember(row.id);
        return { value: row, done: false };
      }
      const { chunk } = this.#opts;
      try {
        if (this.#gap) {
          this.#gap = false;
          const page = await this.#source.since(this.#high.toString(), chunk);
          if (page.length === chunk) this.#gap = true; // more to read after this page
          this.#ready = page.filter((r) => !this.#seen.has(String(r.id)));
          continue;
        }
        if (this.#pending.length > 0) {
          const ids = this.#pending.splice(0, chunk).filter((id) => !this.#seen.has(id));
          // Notices come in commit order, but one statement's notices in any order (pg_notify
          // runs per row of a join): a chunk is yielded in id order.
          this.#ready = (await this.#source.load(ids)).sort((a, b) => compareIds(a.id, b.id));
          continue;
        }
      } catch (err) {
        this.#failure = new LiveFailure(err);
        continue;
      }
      await new Promise<void>((resolve) => (this.#wake = resolve));
    }
  }

  return(): Promise<IteratorResult<T | LiveFailure>> {
    this.close();
    return Promise.resolve({ value: undefined, done: true });
  }

  [Symbol.asyncIterator](): this {
    return this;
  }

  #remember(id: string): void {
    this.#seen.add(id);
    if (this.#seen.size > 2 * this.#opts.maxQueue) this.#seen.delete(this.#seen.values().next().value!);
    const n = BigInt(id);
    if (n > this.#high) this.#high = n;
  }

  #signal(): void {
    const wake = this.#wake;
    this.#wake = null;
    wake?.();
  }
}

function compareIds(a: string, b: string): number {
  return a.length - b.length || (a < b ? -1 : a > b ? 1 : 0);
}

/**
 * The live subscribers of one service over its notice connection. Subscribing waits for the
 * connection; when it comes back after a loss, every subscriber catches up on what it may
 * have missed. `stop()` ends every subscription (the connection is the service's to close).
 */
export class LiveEvents {
  readonly #listener: Listener;
  readonly #log: Logger;
  readonly #opts: Required<LiveOptions>;
  readonly #subs = new Map<string, Set<LiveSubscription<{ id: string }>>>();
  // Per API key: its open streams, and how many are being opened (counted against the limit
  // from the first moment, so that concurrent subscribes cannot all slip past it).
  readonly #byKey = new Map<string, { open: Set<LiveSubscription<{ id: string }>>; opening: number }>();
  #keyTimer: ReturnType<typeof setInterval> | undefined;
  #checking = false;
  #stopped = false;

  constructor(listener: Listener, log: Logger, opts: LiveOptions = {}) {
    this.#listener = listener;
    this.#log = log;
    this.#opts = { ...DEFAULTS, ...opts };
    listener.on(EVENTS_CHANNEL, (payload) => this.#dispatch(payload));
    // Notices sent while nobody listened are gone: every subscriber reads them back.
    listener.onResume(() => {
      for (const set of this.#subs.values()) for (const sub of set) sub.gap();
    });
  }

  /** Whether the LISTEN connection is up. */
  get listening(): boolean {
    return this.#listener.listening;
  }

  /** How many subscriptions are open. */
  get subscriberCount(): number {
    let n = 0;
    for (const set of this.#subs.values()) n += set.size;
    return n;
  }

  /**
   * Opens a subscription once LISTEN is active, so that every event committed after this
   * resolves reaches it. Fails when the connection cannot be made within `connectTimeoutMs`,
   * or when the hub is stopped.
   */
  async subscribe<T extends { id: string }>(source: LiveSource<T>): Promise<LiveSubscription<T>> {
    const apiKeyId = source.apiKeyId;
    const perKey = apiKeyId ? this.#reserve(apiKeyId) : null;
    try {
      if (this.#stopped) throw new Error("live events are stopped");
      await this.#listener.whenListening(this.#opts.connectTimeoutMs);
      if (this.#stopped) throw new Error("live events are stopped");
    } catch (err) {
      if (perKey) {
        perKey.opening--;
        this.#release(apiKeyId!, perKey);
      }
      throw err;
    }
    const key = source.sendId ? `send:${source.sendId}` : `batch:${source.batchId}`;
    const sub: LiveSubscription<T> = new LiveSubscription(source, this.#opts, () => {
      const set = this.#subs.get(key);
      set?.delete(sub);
      if (set?.size === 0) this.#subs.delete(key);
      if (perKey) {
        perKey.open.delete(sub);
        this.#release(apiKeyId!, perKey);
      }
    });
    let set = this.#subs.get(key);
    if (!set) this.#subs.set(key, set = new Set());
    set.add(sub);
    if (perKey) {
      perKey.opening--;
      perKey.open.add(sub);
    }
    return sub;
  }

  /** Counts a stream being opened against its key's limit; 429 `rate_limited` past it. */
  #reserve(apiKeyId: string) {
    let perKey = this.#byKey.get(apiKeyId);
    if (!perKey) this.#byKey.set(apiKeyId, perKey = { open: new Set(), opening: 0 });
    if (perKey.open.size + perKey.opening >= this.#opts.maxStreamsPerKey) {
      throw new AppError(
        "rate_limited",
        `at most ${this.#opts.maxStreamsPerKey} live event streams may be open at once per API key; close one first`,
      );
    }
    perKey.opening++;
    this.#keyTimer ??= this.#startKeyChecks();
    return perKey;
  }

  /** Forgets a key with no stream left, and stops the checks when no key is left. */
  #release(apiKeyId: string, perKey: { open: Set<unknown>; opening: number }): void {
    if (perKey.open.size > 0 || perKey.opening > 0) return;
    if (this.#byKey.get(apiKeyId) === perKey) this.#byKey.delete(apiKeyId);
    if (this.#byKey.size === 0) {
      clearInterval(this.#keyTimer);
      this.#keyTimer = undefined;
    }
  }

  #startKeyChecks(): ReturnType<typeof setInterval> {
    const timer = setInterval(() => void this.#checkKeys(), this.#opts.keyCheckMs);
    Deno.unrefTimer(Number(timer)); // checks alone never keep the process alive
    return timer;
  }

  /**
   * Asks, once per key with open streams, whether the key still works; a revoked key's
   * streams yield `unauthorized` and end. A check that fails (database unreachable) keeps
   * the streams: their own reads fail then, and the next check decides.
   */
  async #checkKeys(): Promise<void> {
    if (this.#checking) return;
    this.#checking = true;
    try {
      for (const [apiKeyId, perKey] of [...this.#byKey]) {
        const source = perKey.open.values().next().value?.source;
        if (!source?.keyActive) continue;
        let active: boolean;
        try {
          active = await source.keyActive();
        } catch (err) {
          this.#log.warn("live events: key check failed", { apiKeyId, err: String(err) });
          continue;
        }
        if (active) continue;
        this.#log.info("live events: key revoked, its streams end", { apiKeyId, streams: perKey.open.size });
        const revoked = new AppError("unauthorized", "the API key of this stream was revoked");
        for (const sub of [...perKey.open]) sub.fail(revoked);
      }
    } finally {
      this.#checking = false;
    }
  }

  /** Ends every subscription (their streams complete) and refuses new subscribers. */
  stop(): Promise<void> {
    this.#stopped = true;
    clearInterval(this.#keyTimer);
    this.#keyTimer = undefined;
    for (const set of [...this.#subs.values()]) for (const sub of [...set]) sub.close();
    return Promise.resolve();
  }

  #dispatch(payload: string): void {
    let parsed: unknown = null;
    try {
      parsed = JSON.parse(payload);
    } catch { /* reported below */ }
    for (const n of (Array.isArray(parsed) ? parsed : [parsed]) as (EventNotice | null)[]) {
      if (typeof n?.id !== "string" || !/^\d{1,19}$/.test(n.id) || typeof n.accountId !== "string") {
        this.#log.warn("live events: unreadable notice ignored", { payload: payload.slice(0, 200) });
        continue;
      }
      for (const key of [n.sendId && `send:${n.sendId}`, n.batchId && `batch:${n.batchId}`]) {
        if (!key) continue;
        for (const sub of this.#subs.get(key) ?? []) {
          if (sub.accountId === n.accountId) sub.push(n.id);
        }
      }
    }
  }
}

const hubs = new WeakMap<Deps, LiveEvents>();

/**
 * The live-events hub of a service (one per `Deps`, so one per process in production),
 * created on first use, on the service's notice connection.
 */
export function liveEvents(deps: Deps): LiveEvents {
  const root = processDeps(deps); // one hub per process, not per request
  let hub = hubs.get(root);
  if (!hub) {
    hubs.set(root, hub = new LiveEvents(root.notices, root.log, { keyCheckMs: root.config.liveKeyCheckMs }));
  }
  return hub;
}

/**
 * Stops the service's hub (see LiveEvents.stop). Call it before draining HTTP: a live
 * subscription never ends on its own, so the drain would wait for it forever.
 */
export async function stopLiveEvents(deps: Deps): Promise<void> {
  await liveEvents(deps).stop();
}
