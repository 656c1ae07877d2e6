// Tracking: the links of each delivered send (click redirects only go there), and events
// that concern a contact without a send (a suppression lifted by ops).
import { type Kysely, sql } from "kysely";

// deno-lint-ignore no-explicit-any
export async function up(db: Kysely<any>): Promise<void> {
  // The http(s) links of the rendered HTML, in order; a click token carries the index.
  await db.schema.alterTable("sends").addColumn("links", sql`text[]`).execute();
  await db.schema.alterTable("email_events").alterColumn("send_id", (c) => c.dropNotNull()).execute();
  await db.schema.alterTable("email_events")
    .addColumn("contact_id", "uuid", (c) => c.references("contacts.id").onDelete("cascade")).execute();
  await sql`create index email_events_contact on email_events (contact_id, id) where contact_id is not null`
    .execute(db);
  // Newest-first event listings per account and type (suppressions, reputation).
  await db.schema.createIndex("email_events_account_type").on("email_events")
    .columns(["account_id", "type", "occurred_at"]).execute();
}

// deno-lint-ignore no-explicit-any
export async function down(db: Kysely<any>): Promise<void> {
  await db.schema.dropIndex("email_events_account_type").ifExists().execute();
  await sql`drop index if exists email_events_contact`.execute(db);
  await db.schema.alterTable("email_events").dropColumn("contact_id").execute();
  await db.schema.alterTable("sends").dropColumn("links").execute();
}
