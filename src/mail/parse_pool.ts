/**
 * Parsing mail off the event loop, with a time limit: one Web Worker parses messages one at a
 * time, in arrival order. A message that takes longer than the limit is dropped with a
 * logged warning, the worker terminated and a fresh one started for the next, so neither a
 * slow message nor a bug in a parser can hold up the service's HTTP, jobs or other messages.
 * Used for inbound reports (inbound/parse_worker.ts) and submitted messages
 * (submission/parse_worker.ts).
 *
 * A worker's protocol: once loaded it posts `{ready: true}`; then for each `{id, raw, opts,
 * now}` (raw a transferred ArrayBuffer, now epoch ms) it posts `{id, result}` or `{id, error}`.
 */
import type { Logger } from "../log.ts";

/** How long a fresh worker may take to load before it counts as failed, ms. */
const LOAD_TIMEOUT_MS = 10_000;

/** Parses messages in a worker; see the module comment. */
export interface OffLoopParser<O, T> {
  /**
   * What the worker made of `raw`, or null when the message was dropped: parsing took
   * longer than the time limit, or the worker failed. Never rejects. `raw`'s buffer may be
   * transferred to the worker (unusable afterwards).
   */
  parse(raw: Uint8Array, opts: O): Promise<T | null>;
  /** Terminates the worker; pending messages resolve null. */
  close(): void;
}

interface Job<O, T> {
  id: number;
  raw: Uint8Array;
  /** raw's length (raw itself is emptied when its buffer is transferred). */
  bytes: number;
  opts: O;
  resolve(result: T | null): void;
}

/**
 * A parser whose worker (`workerUrl`) is started on the first message. `timeoutMs` limits
 * each message's parse, counted from when the worker gets it (not while it waits its turn).
 * `what` names the messages in log lines ("inbound report").
 */
export function startParser<O, T>(
  log: Logger,
  opts: { timeoutMs: number; workerUrl: URL; what: string },
): OffLoopParser<O, T> {
  const { timeoutMs, workerUrl, what } = opts;
  type J = Job<O, T>;
  const queue: J[] = [];
  let worker: Worker | null = null;
  let ready = false;
  let current: J | null = null;
  let timer: ReturnType<typeof setTimeout> | undefined;
  let loadTimer: ReturnType<typeof setTimeout> | undefined;
  let nextId = 1;
  let closed = false;

  function spawn(): void {
    ready = false;
    const w = new Worker(workerUrl.href, { type: "module" });
    worker = w;
    w.onmessage = (e: MessageEvent) => {
      if (w !== worker) return;
      const m = e.data as { ready?: true; id?: number; result?: T; error?: string };
      if (m.ready) {
        ready = true;
        clearTimeout(loadTimer);
        pump();
        return;
      }
      if (!current || m.id !== current.id) return;
      clearTimeout(timer);
      const job = current;
      current = null;
      if (m.error !== undefined) {
        log.warn(`${what} could not be parsed, dropped`, { bytes: job.bytes, error: m.error });
        job.resolve(null);
      } else job.resolve(m.result ?? null);
      pump();
    };
    w.onerror = (e: ErrorEvent) => {
      // Handled here: unhandled, a worker's error would be rethrown in this process.
      e.preventDefault();
      if (w !== worker) return;
      log.error(`${what} parser failed, replaced`, { err: e.message, loaded: ready });
      fail(ready);
    };
    loadTimer = setTimeout(() => {
      if (w === worker && !ready) {
        log.error(`${what} parser did not start, replaced`, { ms: LOAD_TIMEOUT_MS });
        fail(false);
      }
    }, LOAD_TIMEOUT_MS);
  }

  /**
   * Ends the worker and drops the report it had. When it never loaded, every waiting report
   * is dropped too (a worker that cannot load would fail them all, one restart at a time).
   */
  function fail(loaded: boolean): void {
    stopWorker();
    const dropped = current ? [current] : [];
    current = null;
    if (!loaded) dropped.push(...queue.splice(0));
    for (const job of dropped) job.resolve(null);
    pump();
  }

  function stopWorker(): void {
    clearTimeout(timer);
    clearTimeout(loadTimer);
    worker?.terminate();
    worker = null;
    ready = false;
  }

  function pump(): void {
    if (closed || current || queue.length === 0) return;
    if (!worker) return spawn();
    if (!ready) return;
    const job = queue.shift()!;
    current = job;
    const whole = job.raw.byteOffset === 0 && job.raw.byteLength === job.raw.buffer.byteLength;
    const buffer = (whole ? job.raw.buffer : job.raw.slice().buffer) as ArrayBuffer;
    worker.postMessage({ id: job.id, raw: buffer, opts: job.opts, now: Date.now() }, [buffer]);
    timer = setTimeout(() => {
      if (current !== job) return;
      log.warn(`${what} took too long to parse, dropped; parser replaced`, { bytes: job.bytes, timeoutMs });
      current = null;
      stopWorker();
      job.resolve(null);
      pump();
    }, timeoutMs);
  }

  return {
    parse(raw, opts) {
      if (closed) return Promise.resolve(null);
      return new Promise((resolve) => {
        queue.push({ id: nextId++, raw, bytes: raw.length, opts, resolve });
        pump();
      });
    },
    close() {
      closed = true;
      stopWorker();
      for (const job of [...(current ? [current] : []), ...queue.splice(0)]) job.resolve(null);
      current = null;
    },
  };
}
