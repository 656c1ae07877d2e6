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
 * - `send` 1 MiB: a single send (personalizations are at most 64 KB). Attachments (25 MB
 *   decoded, ~34 MB as base64 JSON) need this one raised (and `graphql`, for `createSend`).
 * - `batch` 4 MiB: a full batch of 1,000 recipients with 1 KB of personalizations each is
 *   ~1.2 MB of JSON; 4 MiB leaves room for escaped text and per-recipient fields.
 * - `graphql` 4 MiB: the same batch through `createBatchSend`.
 * - `template` 3 MiB: a template's HTML and text (up to 512 Ki characters each) as JSON, with
 *   room for escaped quotes and multi-byte characters.
 * - `inbound` 1 MiB: relays' bounce and complaint reports (an SNS message is at most 256 KB,
 *   escaped once more in its envelope; 1,000 JSON events of a few hundred bytes each).
 * - `unsubscribe` 4 KiB: the RFC 8058 one-click form body is `List-Unsubscribe=One-Click`.
 *
 * Eight concurrent maximal requests hold 8 × 4 MiB of raw bytes, plus their decoded text and
 * parsed JSON (a few times that): well inside the 512 MB heap of `deno task start`.
 */
export const BODY_LIMITS = {
  rest: 1 * MiB,
  send: 1 * MiB,
  batch: 4 * MiB,
  graphql: 4 * MiB,
  template: 3 * MiB,
  inbound: 1 * MiB,
  unsubscribe: 4 * KiB,
} as const;

/** The 413 `payload_too_large` of a body over `limit` bytes. */
export function payloadTooLarge(limit: number): AppError {
  return new AppError("payload_too_large", `the request body is over the limit of ${limit} bytes for this route`);
}

/**
 * The request's body, at most `limit` bytes; throws 413 `payload_too_large` (an AppError) as
 * soon as a declared Content-Length or the bytes received so far pass it, and cancels the
 * rest of the stream, which is then never read. An absent body is empty.
 */
export async function readBody(req: Request, limit: number): Promise<Uint8Array<ArrayBuffer>> {
  const declared = req.headers.get("content-length");
  if (declared !== null && Number(declared) > limit) throw payloadTooLarge(limit);
  if (!req.body) return new Uint8Array(0);
  const reader = req.body.getReader();
  const chunks: Uint8Array<ArrayBuffer>[] = [];
  let size = 0;
  while (true) {
    const { done, value } = await reader.read();
    if (done) break;
    size += value.byteLength;
    if (size > limit) {
      // Not awaited: the answer does not wait on the client's side of the connection.
      reader.cancel().catch(() => {});
      throw payloadTooLarge(limit);
    }
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
export async function readText(req: Request, limit: number): Promise<string> {
  return decoder.decode(await readBody(req, limit));
}
