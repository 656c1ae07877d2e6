/**
 * SMTP DATA transparency (RFC 5321 §4.5.2) at native-loop speed: nodemailer's DataStream
 * (smtp-connection/data-stream.js) gets a faster `_transform` with the same output.
 *
 * Why: its loop reads the previous byte per byte through a `number | false` and was the
 * largest share of the worker's CPU when messages carry files (10 ms per 1.4 MB message in
 * the attachment drain's profile). This one keeps the previous byte in a local integer and
 * passes over every byte that is not CR, LF or a dot in one comparison. The rules are the
 * library's: a bare CR becomes CRLF (and a dot after it is stuffed), a bare LF becomes CRLF,
 * a dot at the start of a line is doubled. The file bodies buildMime wrote (mime.ts
 * knownBase64) are not looked at: base64 lines hold no dot and no bare CR or LF (with a 1 MB
 * file this loop was 16% of the worker thread's samples, and is no longer among them).
 * tests/dot_stuff_test.ts compares the two on random input cut into random chunks, and on
 * messages with files.
 */
import { Buffer } from "node:buffer";
import DataStream from "nodemailer/lib/smtp-connection/data-stream.js";
import { knownBase64 } from "./mime.ts";

const CR = 0x0d, LF = 0x0a, DOT = 0x2e;
const INSERT_LF = Buffer.from("\n");
const INSERT_LF_DOT = Buffer.from("\n.");
const INSERT_CR = Buffer.from("\r");
const INSERT_DOT = Buffer.from(".");

/** What DataStream keeps between chunks (its own fields, so its `_flush` goes on working). */
interface DataStreamState {
  inByteCount: number;
  outByteCount: number;
  lastByte: number | false;
  push(chunk: Uint8Array): boolean;
}

type Transform = (this: DataStreamState, chunk: Buffer | string, encoding: string, done: () => void) => void;

/** nodemailer's own `_transform`, kept for the comparison test. */
export const libraryTransform: Transform = DataStream.prototype._transform as Transform;

/** The faster `_transform`: same bytes out, same counters, same `lastByte`. */
export const fastTransform: Transform = function (chunk, _encoding, done) {
  if (!chunk || !chunk.length) return done();
  const buf = typeof chunk === "string" ? Buffer.from(chunk) : chunk;
  this.inByteCount += buf.length;
  const pieces: Uint8Array[] = [];
  let size = 0, from = 0;
  // -1: the start of the stream, where a dot is at the start of a line.
  let prev = this.lastByte === false ? -1 : this.lastByte;
  // File bodies of buildMime's (mime.ts knownBase64) need nothing: they are passed over.
  let at = 0;
  for (const [skipFrom, skipTo] of [...knownBase64(buf), [buf.length, buf.length] as const]) {
    for (let i = at; i < skipFrom; i++) {
      const c = buf[i];
      if (prev !== CR && c !== LF && c !== DOT && c !== CR) {
        prev = c;
        continue;
      }
      let insert: Uint8Array | null = null;
      if (prev === CR && c !== LF) insert = c === DOT ? INSERT_LF_DOT : INSERT_LF;
      else if (c === LF && prev !== CR) insert = INSERT_CR;
      else if (c === DOT && (prev === LF || prev === -1)) insert = INSERT_DOT;
      if (insert) {
        if (i > from) {
          pieces.push(buf.subarray(from, i));
          size += i - from;
        }
        pieces.push(insert);
        size += insert.length;
        from = i;
      }
      prev = c;
    }
    if (skipTo > skipFrom) prev = buf[skipTo - 1];
    at = skipTo;
  }
  if (pieces.length) {
    if (from < buf.length) {
      pieces.push(buf.subarray(from));
      size += buf.length - from;
    }
    this.outByteCount += size;
    this.push(Buffer.concat(pieces, size));
  } else {
    this.outByteCount += buf.length;
    this.push(buf);
  }
  this.lastByte = buf[buf.length - 1];
  done();
};

/** Puts fastTransform in place of nodemailer's, once per process (transport.ts does it before any send). */
export function installFastDotStuffing(): void {
  DataStream.prototype._transform = fastTransform as typeof DataStream.prototype._transform;
}
