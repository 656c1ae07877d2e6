/**
 * Request bodies read up to a limit. Every route reads its body through {@link readBody}
 * (REST in src/rest/middleware.ts, `/graphql` in src/graphql/http.ts, the inbound webhook, the
 * unsubscribe POST), so no body is held in memory past its route's limit: the bytes are
 * counted as they stream in, and the stream is cancelled at the first chunk over the limit,
 * whether the client declared a Content-Length, declared a false one, or sent it chunked.
 */
import { AppError } from "../errors.ts";

const KiB = 1024;
const MiB = 1024 * KiB;

/**
 * The body limit of each route, in bytes. What fits, and why each is what it is:
 *
 * - `rest` 1 MiB: every REST call that names no limit of its own in rest/router.ts's ROUTES.
 * - `send` 40 MiB: a single send with attachments: 25 MB decoded is 33.4 MB of base64, with
 *   line breaks and the rest of the send (personalizations are at most 64 KB) under 40 MiB.
 * - `batch` 40 MiB: the same files shared by a batch, beside 1,000 recipients (~1.2 MB of JSON
 *   with 1 KB of personalizations each).
 * - `graphql` 40 MiB: the same through `createSend` and `createBatchSend`.
 * - `template` 3 MiB: a template's HTML and text (up to 512 Ki characters each) as JSON, with
 *   room for escaped quotes and multi-byte characters.
 * - `inbound` 1 MiB: relays' bounce and complaint reports (an SNS message is at most 256 KB,
 *   escaped once more in its envelope; 1,000 JSON events of a few hundred bytes each).
 * - `unsubscribe` 4 KiB: the RFC 8058 one-click form body is `List-Unsubscribe=One-Click`.
 *
 * A body over LARGE_BODY holds a BodyLease while it is read and handled: its decoded text and
 * parsed JSON are a few times its size on the heap, so at most LARGE_BODIES of them are
 * in a process at once (the others wait for one to finish), inside the 512 MB heap of
 * `deno task start` however many clients upload at once.
 */
export const BODY_LIMITS = {
  rest: 1 * MiB,
  send: 40 * MiB,
  batch: 40 * MiB,
  graphql: 40 * MiB,
  template: 3 * MiB,
  inbound: 1 * MiB,
  unsubscribe: 4 * KiB,
} as const;

/** The 413 `payload_too_large` of a body over `limit` bytes. */
export function payloadTooLarge(limit: number): AppError {
  return new AppError("payload_too_large", `the request body is over the limit of ${limit} bytes for this route`);
}

/** A body over this many bytes is large: it needs a BodyLease. */
export const LARGE_BODY = 4 * MiB;
/** How many large bodies a process reads and handles at once. */
export const LARGE_BODIES = 3;

let largeHeld = 0;
const largeWaiting: (() => void)[] = [];

/** The 408 `request_timeout` of a large body that did not arrive within `ms` of taking its slot. */
function bodyTimedOut(ms: number): AppError {
  return new AppError("request_timeout", `the request body did not arrive within ${ms} ms of its upload slot`);
}

/**
 * A request's claim on one of the LARGE_BODIES slots, taken by readBody when the body turns
 * out large (declared, or counted while streaming) and given back by the caller's `release`
 * once the request is answered. Without one, readBody reads any size up to the limit.
 *
 * A slot is held for at most `deadlineMs` of reading (PP_LARGE_BODY_TIMEOUT_MS): past it
 * `expired` resolves, readBody answers 408 and the slot goes back. Without a deadline, three
 * clients sending a declared 40 MiB a byte at a time held every slot for as long as they
 * liked, and every other upload with files waited behind them.
 */
export class BodyLease {
  #held = false;
  #timer: ReturnType<typeof setTimeout> | undefined;
  #expire!: () => void;
  /** Resolves when the slot has been held for `deadlineMs` (never, if released first). */
  readonly expired: Promise<void> = new Promise((r) => this.#expire = r);

  constructor(readonly deadlineMs: number) {}

  /** Whether the slot is held. */
  get held(): boolean {
    return this.#held;
  }

  /** Waits for a slot (once); the deadline runs from here. */
  async take(): Promise<void> {
    if (this.#held) return;
    while (largeHeld >= LARGE_BODIES) await new Promise<void>((r) => largeWaiting.push(r));
    largeHeld++;
    this.#held = true;
    this.#timer = setTimeout(this.#expire, this.deadlineMs);
  }

  /** Gives the slot back, if taken; safe to call more than once. */
  release(): void {
    if (!this.#held) return;
    this.#held = false;
    clearTimeout(this.#timer);
    largeHeld--;
    largeWaiting.shift()?.();
  }
}

/**
 * The request's body, at most `limit` bytes; throws 413 `payload_too_large` (an AppError) as
 * soon as a declared Content-Length or the bytes received so far pass it, and cancels the
 * rest of the stream, which is then never read. An absent body is empty. With `lease`, a
 * large body waits for its slot before more of it is read, and throws 408 `request_timeout`
 * (cancelling the rest, releasing the slot) if it is not all there by the lease's deadline.
 * A body cut off before its end (the connection lost) throws 400 `invalid_json`.
 */
export async function readBody(req: Request, limit: number, lease?: BodyLease): Promise<Uint8Array<ArrayBuffer>> {
  const declared = req.headers.get("content-length");
  if (declared !== null && Number(declared) > limit) throw payloadTooLarge(limit);
  if (!req.body) return new Uint8Array(0);
  if (lease && declared !== null && Number(declared) > LARGE_BODY) await lease.take();
  const reader = req.body.getReader();
  const chunks: Uint8Array<ArrayBuffer>[] = [];
  let size = 0;
  const timedOut = null;
  // Made once the slot is held: one reaction on `expired`, not one per chunk.
  let expired: Promise<null> | undefined;
  while (true) {
    let next;
    try {
      if (lease?.held) expired ??= lease.expired.then(() => timedOut);
      next = expired ? await Promise.race([reader.read(), expired]) : await reader.read();
    } catch {
      // The client went away mid-body, or broke its chunked encoding: an incomplete body, not
      // a fault of ours (it was logged as an unexpected error, with its stack, for every
      // client that hung up during an upload).
      throw new AppError("invalid_json", "the request body ended before it was complete");
    }
    if (next === timedOut) {
      reader.cancel().catch(() => {});
      lease!.release();
      throw bodyTimedOut(lease!.deadlineMs);
    }
    const { done, value } = next;
    if (done) break;
    size += value.byteLength;
    if (size > limit) {
      // Not awaited: the answer does not wait on the client's side of the connection.
      reader.cancel().catch(() => {});
      throw payloadTooLarge(limit);
    }
    if (lease && size > LARGE_BODY) await lease.take();
    chunks.push(value);
  }
  if (chunks.length === 1) return chunks[0];
  const out = new Uint8Array(size);
  let at = 0;
  for (const c of chunks) {
    out.set(c, at);
    at += c.byteLength;
  }
  return out;
}

const decoder = new TextDecoder();

/** {@link readBody} decoded as UTF-8 (invalid sequences replaced, as `Request.text()` does). */
export async function readText(req: Request, limit: number, lease?: BodyLease): Promise<string> {
  return decoder.decode(await readBody(req, limit, lease));
}
