/**
 * Attachments: decoded and hashed once per request (prepareAttachments), stored once per
 * account and content by the accept transaction (repo.storeAttachments), and put into each
 * message at delivery from a per-process cache of their encoded MIME bodies (filesFor), so a
 * 1,000-recipient batch with one PDF reads and encodes that PDF once per worker, not 1,000 times.
 */
import { Buffer } from "node:buffer";
import libmime from "libmime";
import { LRUCache } from "lru-cache";
import type { Kysely } from "kysely";
import type { AttachmentMeta, Database } from "../db/tables.ts";
import type { MimeAttachment } from "../mail/mime.ts";
import type { Attachment } from "./inputs.ts";
import * as repo from "./repo.ts";

/** A request's files: what its send rows list, and the distinct blobs behind them. */
export interface PreparedAttachments {
  meta: AttachmentMeta[];
  /** Per position in `meta`, its hash as bytes. */
  hashes: Uint8Array[];
  /** The distinct blobs (one file given twice is one blob). */
  blobs: repo.Blob[];
}

/** One file's bytes and how it is shown (validated: inputs.ts). */
export interface FileBytes {
  filename: string;
  contentType?: string | null;
  contentId?: string | null;
  bytes: Uint8Array;
}

/**
 * Decodes and hashes validated files (inputs.ts Attachments); null for none. The type
 * defaults to the file name's (libmime's table), else application/octet-stream.
 */
export function prepareAttachments(files: Attachment[] | null | undefined): Promise<PreparedAttachments | null> {
  return prepareFiles((files ?? []).map((f) => ({ ...f, bytes: Buffer.from(f.content, "base64") })));
}

/** Hashes files already in bytes (a submitted message's, or decoded ones); null for none. */
export async function prepareFiles(files: FileBytes[]): Promise<PreparedAttachments | null> {
  if (!files.length) return null;
  // WebCrypto digests off the event loop.
  const hashes = await Promise.all(
    files.map(async (f) => new Uint8Array(await crypto.subtle.digest("SHA-256", f.bytes as Uint8Array<ArrayBuffer>))),
  );
  const blobs = new Map<string, repo.Blob>();
  const meta = files.map((f, i): AttachmentMeta => {
    const hex = Buffer.from(hashes[i]).toString("hex");
    blobs.set(hex, { sha256: hashes[i], content: f.bytes });
    return {
      filename: f.filename,
      contentType: f.contentType?.toLowerCase() ?? libmime.detectMimeType(f.filename),
      contentId: f.contentId ?? null,
      size: f.bytes.byteLength,
      sha256: hex,
    };
  });
  return { meta, hashes, blobs: [...blobs.values()] };
}

/** The references of sends that all carry `files`, for repo.storeAttachments. */
export function refsOf(sendIds: string[], files: PreparedAttachments): repo.Ref[] {
  return sendIds.flatMap((sendId) => files.hashes.map((sha256, position) => ({ sendId, position, sha256 })));
}

/** Encoded bodies kept per process: up to 128 MB (one 25 MB file fits five times). */
const CACHE_BYTES = 128 * 1024 * 1024;
const bodies = new LRUCache<string, Uint8Array>({
  maxSize: CACHE_BYTES,
  sizeCalculation: (b) => Math.max(1, b.byteLength),
});
/** Loads in flight, by key: deliveries of one batch wait on one read. */
const loading = new Map<string, Promise<Uint8Array>>();
/** At most this many blobs are read at once: each is its base64 text on the heap while it loads. */
const MAX_LOADS = 2;
let loads = 0;
const waiting: (() => void)[] = [];

async function load(db: Kysely<Database>, accountId: string, sha256: string): Promise<Uint8Array> {
  while (loads >= MAX_LOADS) await new Promise<void>((r) => waiting.push(r));
  loads++;
  try {
    const b64 = await repo.blobAsBase64(db, accountId, sha256);
    if (b64 === undefined) throw new Error(`attachment ${sha256} of account ${accountId} is not stored`);
    return new TextEncoder().encode(b64.replaceAll("\n", "\r\n"));
  } finally {
    loads--;
    waiting.shift()?.();
  }
}

/** A blob's MIME body (base64, CRLF at 76 columns), from the cache or read once. */
async function bodyOf(db: Kysely<Database>, accountId: string, sha256: string): Promise<Uint8Array> {
  const key = `${accountId}:${sha256}`;
  const hit = bodies.get(key);
  if (hit) return hit;
  let p = loading.get(key);
  if (!p) {
    p = load(db, accountId, sha256).then((b) => {
      bodies.set(key, b);
      return b;
    }).finally(() => loading.delete(key));
    loading.set(key, p);
  }
  return await p;
}

/** A send's files as MIME parts, in its order. Throws when a blob is missing (the job retries, then fails). */
export async function filesFor(
  db: Kysely<Database>,
  accountId: string,
  meta: AttachmentMeta[],
): Promise<MimeAttachment[]> {
  return await Promise.all(meta.map(async (m) => ({
    filename: m.filename,
    contentType: m.contentType,
    contentId: m.contentId,
    body: await bodyOf(db, accountId, m.sha256),
  })));
}
