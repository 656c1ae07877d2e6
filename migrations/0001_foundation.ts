// The foundation schema: tenants, keys, domains, templates, contacts, sends and their events.
// Migrations take Kysely<any> and never import app code, so they keep working as the app changes.
import { type Kysely, sql } from "kysely";

// Millisecond precision, so that a JavaScript Date holds a timestamp exactly and keyset
// cursors over (created_at, id) never skip a row.
const nowMs = sql`date_trunc('milliseconds', now())`;

// deno-lint-ignore no-explicit-any
export async function up(db: Kysely<any>): Promise<void> {
  await sql`create extension if not exists pgcrypto`.execute(db);

  await db.schema.createTable("accounts")
    .addColumn("id", "uuid", (c) => c.primaryKey().defaultTo(sql`gen_random_uuid()`))
    .addColumn("name", "text", (c) => c.notNull())
    .addColumn("monthly_limit", "integer")
    .addColumn("sending_enabled", "boolean", (c) => c.notNull().defaultTo(true))
    .addColumn("paused_reason", "text")
    .addColumn("created_at", "timestamptz", (c) => c.notNull().defaultTo(nowMs))
    .addColumn("updated_at", "timestamptz", (c) => c.notNull().defaultTo(nowMs))
    .execute();

  // Only a SHA-256 of the key is kept; the prefix lets people tell keys apart.
  await db.schema.createTable("api_keys")
    .addColumn("id", "uuid", (c) => c.primaryKey().defaultTo(sql`gen_random_uuid()`))
    .addColumn("account_id", "uuid", (c) => c.notNull().references("accounts.id").onDelete("cascade"))
    .addColumn("mode", "text", (c) => c.notNull().check(sql`mode in ('live', 'test')`))
    .addColumn("prefix", "text", (c) => c.notNull())
    .addColumn("key_hash", "text", (c) => c.notNull().unique())
    .addColumn("created_at", "timestamptz", (c) => c.notNull().defaultTo(nowMs))
    .addColumn("revoked_at", "timestamptz")
    .execute();
  await db.schema.createIndex("api_keys_account").on("api_keys").column("account_id").execute();

  await db.schema.createTable("domains")
    .addColumn("id", "uuid", (c) => c.primaryKey().defaultTo(sql`gen_random_uuid()`))
    .addColumn("account_id", "uuid", (c) => c.notNull().references("accounts.id").onDelete("cascade"))
    .addColumn("name", "text", (c) => c.notNull())
    .addColumn("status", "text", (c) => c.notNull().defaultTo("pending").check(sql`status in ('pending', 'verified')`))
    .addColumn("verification_token", "text", (c) => c.notNull())
    .addColumn("created_at", "timestamptz", (c) => c.notNull().defaultTo(nowMs))
    .addColumn("verified_at", "timestamptz")
    .execute();
  await sql`create unique index domains_account_name on domains (account_id, lower(name))`.execute(db);

  await db.schema.createTable("templates")
    .addColumn("id", "uuid", (c) => c.primaryKey().defaultTo(sql`gen_random_uuid()`))
    .addColumn("account_id", "uuid", (c) => c.notNull().references("accounts.id").onDelete("cascade"))
    .addColumn("name", "text", (c) => c.notNull())
    .addColumn("subject", "text", (c) => c.notNull())
    .addColumn("html", "text")
    .addColumn("text", "text")
    .addColumn("from_email", "text")
    .addColumn("from_name", "text")
    .addColumn("reply_to", "text")
    .addColumn("track_opens", "boolean", (c) => c.notNull().defaultTo(true))
    .addColumn("track_clicks", "boolean", (c) => c.notNull().defaultTo(true))
    .addColumn("created_at", "timestamptz", (c) => c.notNull().defaultTo(nowMs))
    .addColumn("updated_at", "timestamptz", (c) => c.notNull().defaultTo(nowMs))
    .execute();
  await db.schema.createIndex("templates_account").on("templates").columns(["account_id", "created_at"]).execute();

  await db.schema.createTable("contacts")
    .addColumn("id", "uuid", (c) => c.primaryKey().defaultTo(sql`gen_random_uuid()`))
    .addColumn("account_id", "uuid", (c) => c.notNull().references("accounts.id").onDelete("cascade"))
    .addColumn("email", "text", (c) => c.notNull())
    .addColumn("first_name", "text")
    .addColumn("last_name", "text")
    .addColumn("company", "text")
    .addColumn("fields", "jsonb", (c) => c.notNull().defaultTo(sql`'{}'::jsonb`))
    .addColumn("status", "text", (c) =>
      c.notNull().defaultTo("subscribed").check(
        sql`status in ('subscribed', 'unsubscribed', 'bounced', 'complained')`,
      ))
    .addColumn("created_at", "timestamptz", (c) => c.notNull().defaultTo(nowMs))
    .addColumn("updated_at", "timestamptz", (c) => c.notNull().defaultTo(nowMs))
    .execute();
  // One contact per address and account, whatever its case.
  await sql`create unique index contacts_account_email on contacts (account_id, lower(email))`.execute(db);

  await db.schema.createTable("sends")
    .addColumn("id", "uuid", (c) => c.primaryKey())
    .addColumn("account_id", "uuid", (c) => c.notNull().references("accounts.id").onDelete("cascade"))
    .addColumn("contact_id", "uuid", (c) => c.notNull().references("contacts.id"))
    .addColumn("template_id", "uuid", (c) => c.notNull().references("templates.id"))
    .addColumn("batch_id", "uuid")
    .addColumn("to_email", "text", (c) => c.notNull())
    // The subject source (the send's override or the template's at acceptance), and what it
    // rendered to once delivered.
    .addColumn("subject", "text", (c) => c.notNull())
    .addColumn("rendered_subject", "text")
    .addColumn("from_email", "text", (c) => c.notNull())
    .addColumn("from_name", "text")
    .addColumn("reply_to", "text")
    .addColumn("personalizations", "jsonb", (c) => c.notNull().defaultTo(sql`'{}'::jsonb`))
    .addColumn("tags", "jsonb", (c) => c.notNull().defaultTo(sql`'{}'::jsonb`))
    .addColumn("track_opens", "boolean", (c) => c.notNull())
    .addColumn("track_clicks", "boolean", (c) => c.notNull())
    .addColumn("sandbox", "boolean", (c) => c.notNull().defaultTo(false))
    .addColumn("status", "text", (c) =>
      c.notNull().check(
        sql`status in ('scheduled','queued','sending','sent','delivered','bounced','failed','cancelled','suppressed')`,
      ))
    .addColumn("message_id", "text", (c) => c.notNull())
    .addColumn("missing_variables", sql`text[]`)
    .addColumn("error_code", "text")
    .addColumn("error_message", "text")
    .addColumn("scheduled_at", "timestamptz")
    .addColumn("created_at", "timestamptz", (c) => c.notNull().defaultTo(nowMs))
    .addColumn("updated_at", "timestamptz", (c) => c.notNull().defaultTo(nowMs))
    .addColumn("sent_at", "timestamptz")
    .addColumn("delivered_at", "timestamptz")
    .addColumn("opened_at", "timestamptz")
    .addColumn("clicked_at", "timestamptz")
    .addColumn("bounced_at", "timestamptz")
    .execute();
  // Newest-first listing with a (created_at, id) cursor, optionally by status or batch.
  await db.schema.createIndex("sends_account_created").on("sends").columns(["account_id", "created_at", "id"])
    .execute();
  await db.schema.createIndex("sends_account_status_created").on("sends")
    .columns(["account_id", "status", "created_at", "id"]).execute();
  await sql`create index sends_batch on sends (batch_id) where batch_id is not null`.execute(db);
  await db.schema.createIndex("sends_contact").on("sends").column("contact_id").execute();

  await db.schema.createTable("email_events")
    .addColumn("id", "bigserial", (c) => c.primaryKey())
    .addColumn("send_id", "uuid", (c) => c.notNull().references("sends.id").onDelete("cascade"))
    .addColumn("account_id", "uuid", (c) => c.notNull())
    .addColumn("type", "text", (c) => c.notNull())
    .addColumn("occurred_at", "timestamptz", (c) => c.notNull().defaultTo(sql`clock_timestamp()`))
    .addColumn("data", "jsonb", (c) => c.notNull().defaultTo(sql`'{}'::jsonb`))
    .execute();
  await db.schema.createIndex("email_events_send").on("email_events").columns(["send_id", "id"]).execute();

  // Units used per account and calendar month (UTC); reserved atomically at acceptance.
  await db.schema.createTable("account_usage")
    .addColumn("account_id", "uuid", (c) => c.notNull().references("accounts.id").onDelete("cascade"))
    .addColumn("month", "date", (c) => c.notNull())
    .addColumn("used", "integer", (c) => c.notNull().check(sql`used >= 0`))
    .addPrimaryKeyConstraint("account_usage_pk", ["account_id", "month"])
    .execute();
}

// deno-lint-ignore no-explicit-any
export async function down(db: Kysely<any>): Promise<void> {
  for (
    const t of ["account_usage", "email_events", "sends", "contacts", "templates", "domains", "api_keys", "accounts"]
  ) {
    await db.schema.dropTable(t).ifExists().execute();
  }
}
