/**
 * Report parsing off the event loop, with a time limit: one Web Worker (parse_worker.ts)
 * parses reports one at a time, in arrival order. A report that takes longer than the limit
 * is dropped with a logged warning, the worker terminated and a fresh one started for the
 * next report, so neither a slow report nor a bug in the parser can hold up the service's
 * HTTP, jobs or other reports. parseReport is linear and its input capped (REPORT_LIMITS),
 * which also bounds the worker's memory; the limit is the guard for what that misses.
 */
import type { Logger } from "../log.ts";
import type { InboundReport } from "./parse.ts";

/** How long a fresh worker may take to load before it counts as failed, ms. */
const LOAD_TIMEOUT_MS = 10_000;

/** Parses reports in a worker; see the module comment. */
export interface ReportParser {
  /**
   * The reports in `raw` (see parseReport), or null when the report was dropped: parsing
   * took longer than the time limit, or the worker failed. Never rejects. `raw`'s buffer
   * may be transferred to the worker (unusable afterwards).
   */
  parse(raw: Uint8Array, opts: { envelopeTo: string[] }): Promise<InboundReport[] | null>;
  /** Terminates the worker; pending reports resolve null. */
  close(): void;
}

interface Job {
  id: number;
  raw: Uint8Array;
  /** raw's length (raw itself is emptied when its buffer is transferred). */
  bytes: number;
  envelopeTo: string[];
  resolve(reports: InboundReport[] | null): void;
}

/**
 * A parser whose worker is started on the first report. `timeoutMs` limits each report's
 * parse, counted from when the worker gets it (not while it waits its turn). `workerUrl`
 * is for tests; default parse_worker.ts.
 */
export function startReportParser(
  log: Logger,
  timeoutMs: number,
  workerUrl: URL = new URL("./parse_worker.ts", import.meta.url),
): ReportParser {
  const queue: Job[] = [];
  let worker: Worker | null = null;
  let ready = false;
  let current: Job | null = null;
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
      const m = e.data as { ready?: true; id?: number; reports?: InboundReport[]; error?: string };
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
        log.warn("inbound report could not be parsed, dropped", { bytes: job.bytes, error: m.error });
        job.resolve(null);
      } else job.resolve(m.reports ?? []);
      pump();
    };
    w.onerror = (e: ErrorEvent) => {
      // Handled here: unhandled, a worker's error would be rethrown in this process.
      e.preventDefault();
      if (w !== worker) return;
      log.error("inbound report parser failed, replaced", { err: e.message, loaded: ready });
      fail(ready);
    };
    loadTimer = setTimeout(() => {
      if (w === worker && !ready) {
        log.error("inbound report parser did not start, replaced", { ms: LOAD_TIMEOUT_MS });
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
    worker.postMessage({ id: job.id, raw: buffer, envelopeTo: job.envelopeTo, now: Date.now() }, [buffer]);
    timer = setTimeout(() => {
      if (current !== job) return;
      log.warn("inbound report took too long to parse, dropped; parser replaced", { bytes: job.bytes, timeoutMs });
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
        queue.push({ id: nextId++, raw, bytes: raw.length, envelopeTo: opts.envelopeTo, resolve });
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
