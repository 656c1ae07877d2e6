/**
 * The Web Worker behind {@link startReportParser} (parse_pool.ts): parses one report per
 * message with parseReport. Our own code on capped input, so a Worker (not a subprocess) is
 * enough here: what it needs is to run off the service's event loop and to be killable
 * when a report takes too long.
 *
 * Protocol: once loaded it posts `{ready: true}`; then for each `{id, raw, envelopeTo,
 * now}` (raw a transferred ArrayBuffer, now epoch ms) it posts `{id, reports}` or
 * `{id, error}`.
 */
import { parseReport } from "./parse.ts";

/** The worker's global scope, as far as it is used here (typed without the deno.worker lib). */
const scope = globalThis as unknown as {
  onmessage: ((e: MessageEvent) => void) | null;
  postMessage(message: unknown): void;
};

scope.onmessage = (e: MessageEvent) => {
  const { id, raw, envelopeTo, now } = e.data as {
    id: number;
    raw: ArrayBuffer;
    envelopeTo: string[];
    now: number;
  };
  try {
    scope.postMessage({ id, reports: parseReport(new Uint8Array(raw), { envelopeTo, now: new Date(now) }) });
  } catch (err) {
    scope.postMessage({ id, error: err instanceof Error ? err.message : String(err) });
  }
};
scope.postMessage({ ready: true });
