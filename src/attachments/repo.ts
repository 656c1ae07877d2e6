/** SQL for attachment blobs (one per account and SHA-256) and the sends that refer to them. */
import { Buffer } from "node:buffer";
import { type Kysely, sql } from "kysely";
import type { Database } from "../db/tables.ts";

/** A file's bytes under its hash, as acceptance stores it. */
export interface Blob {
  sha256: Uint8Array;
  content: Uint8Array;
}

/** A send's reference to one of its files. */
export interface Ref {
  sendId: string;
  position: number;
  sha256: Uint8Array;
}

const bytea = (b: Uint8Array) => Buffer.from(b.buffer, b.byteOffset, b.byteLength);

/**
 * Stores an account's blobs and its sends' references, in the caller's transaction (the
 * accept's: all or nothing). A blob already stored is not written again, only marked used
 * (which also locks it against retention until the commit). Blobs go one statement each:
 * pg sends a Buffer parameter as binary, so a 25 MB file is 25 MB on the wire, not 50 of hex.
 */
export async function storeAttachments(db: Kysely<Database>, accountId: string, blobs: Blob[], refs: Ref[]) {
  // Hash order: two transactions lock the same blobs in the same order.
  const sorted = [...blobs].sort((a, b) => Buffer.compare(bytea(a.sha256), bytea(b.sha256)));
  for (const b of sorted) {
    await sql`insert into attachment_blobs (account_id, sha256, size, content)
      values (${accountId}, ${bytea(b.sha256)}, ${b.content.byteLength}, ${bytea(b.content)})
      on conflict (account_id, sha256) do update set used_at = now()`.execute(db);
  }
  if (refs.length === 0) return;
  await sql`insert into send_attachments (send_id, position, account_id, sha256)
    select u.send_id, u.position, ${accountId}::uuid, decode(u.sha256, 'hex')
    from unnest(${refs.map((r) => r.sendId)}::uuid[], ${refs.map((r) => r.position)}::smallint[],
      ${refs.map((r) => bytea(r.sha256).toString("hex"))}::text[]) as u(send_id, position, sha256)`.execute(db);
}

/**
 * One blob of an account as base64 text with CRLF line ends at 76 columns, what a MIME part
 * carries (Postgres encodes it, in C, with LF line ends); undefined when it is not stored.
 */
export async function blobAsBase64(db: Kysely<Database>, accountId: string, sha256Hex: string) {
  const r = await sql<{ b64: string }>`
    select encode(content, 'base64') as b64 from attachment_blobs
    where account_id = ${accountId} and sha256 = decode(${sha256Hex}, 'hex')`.execute(db);
  return r.rows[0]?.b64;
}

/**
 * Deletes at most `limit` of an account's blobs that no send refers to and that no
 * acceptance used in the last `graceS` seconds (one being accepted right now has locked its
 * row, and is skipped); returns how many.
 */
export async function deleteUnreferencedBlobs(db: Kysely<Database>, accountId: string, graceS: number, limit: number) {
  // Purpose: retention of files whose sends are gone (index attachment_blobs_used, send_attachments_blob).
  const r = await sql`
    delete from attachment_blobs where (account_id, sha256) in (
      select b.account_id, b.sha256 from attachment_blobs b
      where b.account_id = ${accountId} and b.used_at < now() - make_interval(secs => ${graceS})
        and not exists (select 1 from send_attachments l where l.account_id = b.account_id and l.sha256 = b.sha256)
      limit ${limit} for update skip locked)`.execute(db);
  return Number(r.numAffectedRows ?? 0);
}
