/**
 * The dot-stuffing transform (src/mail/dot_stuff.ts) against nodemailer's own: the same bytes
 * out (and the same end of data) for random input rich in CR, LF and dots, cut into random
 * chunks, and for the edge cases of a chunk boundary between CR and LF.
 */
import { Buffer } from "node:buffer";
import DataStream from "nodemailer/lib/smtp-connection/data-stream.js";
import { fastTransform, libraryTransform } from "../src/mail/dot_stuff.ts";
import { assertEquals } from "./assert.ts";

/** Runs `chunks` through a DataStream whose `_transform` is `transform`; all it wrote, and its counters. */
async function run(transform: unknown, chunks: Uint8Array[]) {
  const s = new DataStream();
  (s as unknown as { _transform: unknown })._transform = transform;
  const out: Uint8Array[] = [];
  s.on("data", (c: Uint8Array) => out.push(c));
  const ended = new Promise((r) => s.on("end", r));
  for (const c of chunks) s.write(Buffer.from(c));
  s.end();
  await ended;
  return { bytes: Buffer.concat(out).toString("latin1"), inBytes: s.inByteCount, outBytes: s.outByteCount };
}

Deno.test("dot stuffing: the fast transform writes what nodemailer's writes", async () => {
  const alphabet = [0x41, 0x2e, 0x0d, 0x0a, 0x20, 0x2e, 0x0d, 0x0a];
  let seed = 42;
  const rand = (n: number) => {
    seed = (seed * 1103515245 + 12345) & 0x7fffffff;
    return seed % n;
  };
  for (let round = 0; round < 300; round++) {
    const bytes = Uint8Array.from({ length: 1 + rand(400) }, () => alphabet[rand(alphabet.length)]);
    const chunks: Uint8Array[] = [];
    for (let at = 0; at < bytes.length;) {
      const n = 1 + rand(40);
      chunks.push(bytes.subarray(at, at + n));
      at += n;
    }
    assertEquals(await run(fastTransform, chunks), await run(libraryTransform, chunks), `round ${round}`);
  }
  const enc = (s: string) => new TextEncoder().encode(s);
  for (const parts of [[".a\r", "\n.b"], ["a\r", ".b"], ["a\r", "b\n", ".\n"], ["a\r"], ["."], ["a\r\n", "."]]) {
    const chunks = parts.map(enc);
    assertEquals(await run(fastTransform, chunks), await run(libraryTransform, chunks), JSON.stringify(parts));
  }
});
