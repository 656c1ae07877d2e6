// Batches (a batch send or a segment send groups its sends) and segments (saved contact filters).
import { type Kysely, sql } from "kysely";

const nowMs = sql`date_trunc('milliseconds', now())`;

// deno-lint-ignore no-explicit-any
export async function up(db: Kysely<any>): Promise<void> {
  await db.schema.createTable("segments")
    .addColumn("id", "uuid", (c) => c.primaryKey().defaultTo(sql`gen_random_uuid()`))
    .addColumn("account_id", "uuid", (c) => c.notNull().references("accounts.id").onDelete("cascade"))
    .addColumn("name", "text", (c) => c.notNull())
    // [{field, op, value}], ANDed; see src/segments/rules.ts.
    .addColumn("rules", "jsonb", (c) => c.notNull().defaultTo(sql`'[]'::jsonb`))
    .addColumn("created_at", "timestamptz", (c) => c.notNull().defaultTo(nowMs))
    .addColumn("updated_at", "timestamptz", (c) => c.notNull().defaultTo(nowMs))
    .execute();
  await db.schema.createIndex("segments_account").on("segments").columns(["account_id", "created_at"]).execute();

  await db.schema.createTable("batches")
    .addColumn("id", "uuid", (c) => c.primaryKey())
    .addColumn("account_id", "uuid", (c) => c.notNull().references("accounts.id").onDelete("cascade"))
    .addColumn("template_id", "uuid", (c) => c.notNull().references("templates.id"))
    .addColumn("segment_id", "uuid", (c) => c.references("segments.id").onDelete("set null"))
    // A recipient batch is `accepted` at once; a segment send is `expanding` until its job
    // has paged through the segment, then `accepted` (or `failed`, e.g. over quota).
    .addColumn(
      "status",
      "text",
      (c) => c.notNull().check(sql`status in ('expanding', 'accepted', 'failed', 'cancelled')`),
    )
    .addColumn("count", "integer", (c) => c.notNull().defaultTo(0))
    // The segment send's request (subject, from, personalizations, …) for its expansion job.
    .addColumn("request", "jsonb", (c) => c.notNull().defaultTo(sql`'{}'::jsonb`))
    // Keyset position of the expansion: the last contact id turned into a send.
    .addColumn("expand_cursor", "uuid")
    .addColumn("error_code", "text")
    .addColumn("error_message", "text")
    .addColumn("created_at", "timestamptz", (c) => c.notNull().defaultTo(nowMs))
    .addColumn("updated_at", "timestamptz", (c) => c.notNull().defaultTo(nowMs))
    .execute();
  await db.schema.createIndex("batches_account").on("batches").columns(["account_id", "created_at"]).execute();

  // One send per contact and batch: a re-run expansion cannot mail anyone twice.
  await sql`drop index sends_batch`.execute(db);
  await sql`create unique index sends_batch_contact on sends (batch_id, contact_id) where batch_id is not null`
    .execute(db);
  // Status counts of a batch (progress view).
  await sql`create index sends_batch_status on sends (batch_id, status) where batch_id is not null`.execute(db);
  // Keyset pages of an account's contacts by id (segment expansion).
  await db.schema.createIndex("contacts_account_id").on("contacts").columns(["account_id", "id"]).execute();
}

// deno-lint-ignore no-explicit-any
export async function down(db: Kysely<any>): Promise<void> {
  await db.schema.dropIndex("contacts_account_id").ifExists().execute();
  await sql`drop index if exists sends_batch_status`.execute(db);
  await sql`drop index if exists sends_batch_contact`.execute(db);
  await sql`create index sends_batch on sends (batch_id) where batch_id is not null`.execute(db);
  await db.schema.dropTable("batches").ifExists().execute();
  await db.schema.dropTable("segments").ifExists().execute();
}
