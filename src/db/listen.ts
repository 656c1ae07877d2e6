/**
 * The notice connection of one service: a dedicated Postgres connection that LISTENs on every
 * channel the service follows (recorded events for live subscriptions, cache notices), opened
 * at start in every role and kept open until stop, reconnecting with exponential backoff.
 *
 * It is not a pool client: the pool hands clients to other queries, and a LISTEN lasts only as
 * long as its session. Notices sent while it is down are lost, so every `onResume` callback
 * runs once it listens again (subscribers catch up from the database); the caches of this
 * process are told through `noticesDown` (src/cache.ts) so that they neither serve nor store
 * while it is down.
 */
import pg from "pg";
import type { Logger } from "../log.ts";
import { noticesDown } from "../cache.ts";

/** Tuning of a Listener. */
export interface ListenOptions {
  /** First reconnect delay once the connection drops; doubles per failed attempt, with jitter. Default 250 ms. */
  minBackoffMs?: number;
  /** Longest reconnect delay. Default 10,000 ms. */
  maxBackoffMs?: number;
}

type State = "idle" | "connecting" | "listening" | "retrying" | "stopped";

/** One connection LISTENing on the channels given to `on`, with reconnects; see the module comment. */
export class Listener {
  readonly #newClient: () => pg.Client;
  readonly #log: Logger;
  readonly #minBackoffMs: number;
  readonly #maxBackoffMs: number;
  readonly #handlers = new Map<string, (payload: string) => void>();
  readonly #resumers = new Set<() => void>();
  readonly #waiters = new Set<{ resolve(): void; reject(err: Error): void }>();
  #state: State = "idle";
  #client: pg.Client | null = null;
  #attempt = 0;
  #lastError = "";
  #retry: ReturnType<typeof setTimeout> | undefined;
  // LISTENs sent by `on` on the current connection and not answered yet.
  #adding = 0;
  // Whether this listener counts as down for the caches (reported once per change).
  #reportedDown = false;

  constructor(newClient: () => pg.Client, log: Logger, opts: ListenOptions = {}) {
    this.#newClient = newClient;
    this.#log = log;
    this.#minBackoffMs = opts.minBackoffMs ?? 250;
    this.#maxBackoffMs = opts.maxBackoffMs ?? 10_000;
  }

  /** Whether the connection is up and LISTENing on every channel. */
  get listening(): boolean {
    return this.#state === "listening";
  }

  /**
   * Follows `channel`: `handler` gets each notice's payload (one handler per channel). A
   * channel added while connected is LISTENed at once; `whenListening` waits for it.
   */
  on(channel: string, handler: (payload: string) => void): void {
    if (!/^[a-z_]+$/.test(channel)) throw new Error(`bad channel name: ${channel}`);
    const added = !this.#handlers.has(channel);
    this.#handlers.set(channel, handler);
    const client = this.#client;
    if (!added || !client) return; // the next connect LISTENs it
    // A connect under way LISTENs it too (its loop walks the channels as they are then).
    if (this.#state !== "listening" && this.#adding === 0) return;
    // Connected (or adding another channel): LISTEN on it now, and count as listening again
    // only once every such LISTEN holds, so that `whenListening` means every channel. (A
    // channel added while another's LISTEN was under way used to be left out for good.)
    this.#state = "connecting";
    this.#adding++;
    client.query(`listen ${channel}`).then(() => {
      if (this.#client !== client || this.#state !== "connecting" || --this.#adding > 0) return;
      this.#state = "listening";
      for (const w of this.#waiters) w.resolve();
      this.#waiters.clear();
    }, (err) => this.#lost(client, err));
  }

  /** Runs `fn` each time the connection listens again after a loss (notices were lost meanwhile). */
  onResume(fn: () => void): () => void {
    this.#resumers.add(fn);
    return () => this.#resumers.delete(fn);
  }

  /** Connects now; from here on it stays connected (or reconnecting) until `stop`. */
  start(): void {
    if (this.#state !== "idle") return;
    this.#markDown(true);
    void this.#connect();
  }

  /** Resolves once listening (starting the connection if needed); rejects after `timeoutMs` or on stop. */
  whenListening(timeoutMs = 10_000): Promise<void> {
    if (this.#state === "listening") return Promise.resolve();
    if (this.#state === "stopped") return Promise.reject(new Error("notice connection is stopped"));
    return new Promise((resolve, reject) => {
      const waiter = {
        resolve: () => {
          clearTimeout(timer);
          resolve();
        },
        reject: (err: Error) => {
          clearTimeout(timer);
          reject(err);
        },
      };
      const timer = setTimeout(() => {
        this.#waiters.delete(waiter);
        reject(new Error(`no LISTEN connection (${this.#lastError || "timed out"})`));
      }, timeoutMs);
      this.#waiters.add(waiter);
      this.start();
    });
  }

  /** Closes the connection for good; waiters are rejected. */
  async stop(): Promise<void> {
    if (this.#state === "stopped") return;
    this.#state = "stopped";
    this.#adding = 0;
    clearTimeout(this.#retry);
    for (const w of this.#waiters) w.reject(new Error("notice connection is stopped"));
    this.#waiters.clear();
    // A stopped listener no longer holds the caches of this process back.
    this.#markDown(false);
    const client = this.#client;
    this.#client = null;
    await client?.end().catch(() => {});
  }

  async #connect(): Promise<void> {
    this.#state = "connecting";
    const client = this.#newClient();
    this.#client = client;
    client.on("notification", (m) => {
      const handler = this.#handlers.get(m.channel);
      if (handler && m.payload !== undefined) {
        try {
          handler(m.payload);
        } catch (err) {
          this.#log.error("notice handler failed", { channel: m.channel, err: String(err) });
        }
      }
    });
    // Keep these listeners for the client's whole life: an 'error' without one crashes the process.
    client.on("error", (err) => this.#lost(client, err));
    client.on("end", () => this.#lost(client, new Error("connection ended")));
    try {
      await client.connect();
      for (const channel of this.#handlers.keys()) await client.query(`listen ${channel}`);
    } catch (err) {
      this.#lost(client, err);
      return;
    }
    if (this.#client !== client) return; // stopped or lost while connecting
    const resumed = this.#attempt > 0;
    if (resumed) this.#log.info("notice connection: listening again", { attempts: this.#attempt });
    this.#attempt = 0;
    this.#state = "listening";
    this.#markDown(false);
    if (resumed) { for (const fn of this.#resumers) fn(); }
    for (const w of this.#waiters) w.resolve();
    this.#waiters.clear();
  }

  #lost(client: pg.Client, err: unknown): void {
    if (client !== this.#client) return; // an old client's late news
    this.#client = null;
    this.#adding = 0;
    client.end().catch(() => {});
    if (this.#state === "stopped") return;
    this.#markDown(true);
    this.#lastError = err instanceof Error ? err.message : String(err);
    this.#log.warn("notice connection lost", { err: this.#lastError, attempt: this.#attempt });
    this.#state = "retrying";
    const delay = Math.min(this.#maxBackoffMs, this.#minBackoffMs * 2 ** this.#attempt) * (0.5 + Math.random() / 2);
    this.#attempt++;
    this.#retry = setTimeout(() => {
      this.#retry = undefined;
      if (this.#state === "retrying") void this.#connect();
    }, delay);
  }

  #markDown(isDown: boolean): void {
    if (this.#reportedDown === isDown) return;
    this.#reportedDown = isDown;
    noticesDown(isDown);
  }
}

/** The notice connection of a service: the pool's connection settings, on a connection of its own. */
export function noticeListener(pool: pg.Pool, log: Logger): Listener {
  // The name shows it in pg_stat_activity (and lets a test cut it).
  return new Listener(() => new pg.Client({ ...pool.options, application_name: "pp-notices", keepAlive: true }), log);
}
