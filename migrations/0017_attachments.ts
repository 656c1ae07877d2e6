// Attachments (API.md "Message features"). A file is stored once per account by its SHA-256
// (attachment_blobs), however many sends carry it: a 1,000-recipient batch with a 5 MB PDF
// stores 5 MB. Each send lists its files, in order, with their names and types (sends.attachments)
// and refers to their blobs (send_attachments, one row per send and file), which is what
// retention asks when it removes blobs no send refers to. A send deleted takes its references
// with it (on delete cascade); a blob is only deleted by retention.
import { type Kysely, sql } from "kysely";

// deno-lint-ignore no-explicit-any
export async function up(db: Kysely<any>): Promise<void> {
  await sql`create table attachment_blobs (
    account_id uuid not null references accounts on delete cascade,
    sha256 bytea not null,
    size integer not null,
    content bytea not null,
    -- The last acceptance that referred to it: retention leaves a blob alone for a while after
    -- it, so a send being accepted never refers to a blob deleted under it.
    used_at timestamptz not null default now(),
    primary key (account_id, sha256))`.execute(db);
  // Files are mostly compressed already (PDF, images): no TOAST compression attempt per write.
  await sql`alter table attachment_blobs alter column content set storage external`.execute(db);
  await sql`create index attachment_blobs_used on attachment_blobs (account_id, used_at)`.execute(db);
  await sql`alter table sends add column attachments jsonb`.execute(db);
  await sql`create table send_attachments (
    send_id uuid not null references sends on delete cascade,
    position smallint not null,
    account_id uuid not null,
    sha256 bytea not null,
    primary key (send_id, position),
    foreign key (account_id, sha256) references attachment_blobs (account_id, sha256))`.execute(db);
  await sql`create index send_attachments_blob on send_attachments (account_id, sha256)`.execute(db);
}

// deno-lint-ignore no-explicit-any
export async function down(db: Kysely<any>): Promise<void> {
  await sql`drop table send_attachments`.execute(db);
  await sql`alter table sends drop column attachments`.execute(db);
  await sql`drop table attachment_blobs`.execute(db);
}
