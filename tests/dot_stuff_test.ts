/**
 * The dot-stuffing transform (src/mail/dot_stuff.ts) against nodemailer's own: the same bytes
 * out (and the same end of data) for random input rich in CR, LF and dots, cut into random
 * chunks, and for the edge cases of a chunk boundary between CR and LF.
 */
import { Buffer } from "node:buffer";
import DataStream from "nodemailer/lib/smtp-connection/data-stream.js";
import { fastTransform, libraryTransform } from "../src/mail/dot_stuff.ts";
import { buildMime, knownBase64 } from "../src/mail/mime.ts";
import { assert, assertEquals } from "./assert.ts";

/**
 * Runs `chunks` through a DataStream whose `_transform` is `transform`; all it wrote, and its
 * counters. Each chunk is written as a Buffer over its own memory (no copy), as nodemailer
 * writes a raw message.
 */
async function run(transform: unknown, chunks: Uint8Array[]) {
  const s = new DataStream();
  (s as unknown as { _transform: unknown })._transform = transform;
  const out: Uint8Array[] = [];
  s.on("data", (c: Uint8Array) => out.push(c));
  const ended = new Promise((r) => s.on("end", r));
  for (const c of chunks) s.write(Buffer.from(c.buffer, c.byteOffset, c.byteLength));
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

Deno.test("dot stuffing: a message with files comes out as nodemailer writes it, its file bodies passed over", async () => {
  const bytes = new Uint8Array(200_000);
  for (let i = 0; i < bytes.length; i += 65536) crypto.getRandomValues(bytes.subarray(i, i + 65536));
  // As attachments/service.ts keeps a file: base64 in lines of 76, CRLF between them.
  const body = new TextEncoder().encode(Buffer.from(bytes).toString("base64").replace(/.{76}(?=.)/g, "$&\r\n"));
  const message = buildMime({
    from: { address: "a@example.com" },
    to: "b@example.com",
    subject: "Files",
    messageId: "<m@example.com>",
    // Lines that start with a dot, and a bare LF, around the files.
    html: "<p>one</p>\n.two\r\n..three\r.four",
    text: ".\r\n.\n.",
    attachments: [
      { filename: "a.bin", contentType: "application/octet-stream", body },
      { filename: "b.bin", contentType: "application/octet-stream", body },
    ],
  });
  assertEquals(knownBase64(message).length, 2, "buildMime names both file bodies");
  let seed = 7;
  const rand = (n: number) => {
    seed = (seed * 1103515245 + 12345) & 0x7fffffff;
    return seed % n;
  };
  for (const cuts of [[], [1], [message.length - 1], [1000, 200_000, 270_001], [137, 138, 139, 300_000]]) {
    const at = [0, ...cuts.filter((c) => c < message.length), message.length];
    const chunks = at.slice(1).map((end, i) => message.subarray(at[i], end));
    assertEquals(await run(fastTransform, chunks), await run(libraryTransform, chunks), `cut at ${cuts}`);
  }
  for (let round = 0; round < 20; round++) {
    const chunks: Uint8Array[] = [];
    for (let at = 0; at < message.length;) {
      const n = 1 + rand(60_000);
      chunks.push(message.subarray(at, at + n));
      at += n;
    }
    assert(chunks.some((c) => knownBase64(c).length > 0), "chunks over the file bodies are known as such");
    assertEquals(await run(fastTransform, chunks), await run(libraryTransform, chunks), `round ${round}`);
  }
});
