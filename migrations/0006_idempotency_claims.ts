// Idempotency keys (24 h, per API key) and how a domain was verified (DNS proof or ops).
import { type Kysely, sql } from "kysely";

// deno-lint-ignore no-explicit-any
export async function up(db: Kysely<any>): Promise<void> {
  await db.schema.createTable("idempotency_keys")
    .addColumn("api_key_id", "uuid", (c) => c.notNull().references("api_keys.id").onDelete("cascade"))
    .addColumn("key", "text", (c) => c.notNull())
    // SHA-256 of the operation and its body: the same key with another body is a conflict.
    .addColumn("fingerprint", "text", (c) => c.notNull())
    .addColumn("state", "text", (c) => c.notNull().check(sql`state in ('running', 'done')`))
    .addColumn("response_status", "integer")
    .addColumn("response_body", "jsonb")
    .addColumn("created_at", "timestamptz", (c) => c.notNull().defaultTo(sql`now()`))
    .addPrimaryKeyConstraint("idempotency_keys_pk", ["api_key_id", "key"])
    .execute();
  await db.schema.createIndex("idempotency_keys_created").on("idempotency_keys").column("created_at").execute();

  await db.schema.alterTable("domains").addColumn("verified_via", "text").execute();
  await sql`update domains set verified_via = 'ops' where status = 'verified'`.execute(db);
  // A domain proven by DNS belongs to one account only.
  await sql`create unique index domains_dns_claim on domains (lower(name)) where verified_via = 'dns'`.execute(db);
}

// deno-lint-ignore no-explicit-any
export async function down(db: Kysely<any>): Promise<void> {
  await sql`drop index if exists domains_dns_claim`.execute(db);
  await db.schema.alterTable("domains").dropColumn("verified_via").execute();
  await db.schema.dropTable("idempotency_keys").ifExists().execute();
}
