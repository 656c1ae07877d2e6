/**
 * The Web Worker behind the inbound report parser (mail/parse_pool.ts, its protocol): parses
 * one report per message with parseReport, `opts` being `{envelopeTo}`. Our own code on
 * capped input, so a Worker (not a subprocess) is enough here: what it needs is to run off
 * the service's event loop and to be killable when a report takes too long.
 */
import { parseReport } from "./parse.ts";

/** The worker's global scope, as far as it is used here (typed without the deno.worker lib). */
const scope = globalThis as unknown as {
  onmessage: ((e: MessageEvent) => void) | null;
  postMessage(message: unknown): void;
};

scope.onmessage = (e: MessageEvent) => {
  const { id, raw, opts, now } = e.data as {
    id: number;
    raw: ArrayBuffer;
    opts: { envelopeTo: string[] };
    now: number;
  };
  try {
    const reports = parseReport(new Uint8Array(raw), { envelopeTo: opts.envelopeTo, now: new Date(now) });
    scope.postMessage({ id, result: reports });
  } catch (err) {
    scope.postMessage({ id, error: err instanceof Error ? err.message : String(err) });
  }
};
scope.postMessage({ ready: true });
