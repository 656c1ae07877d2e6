// DKIM keys per sending domain: the selector, the public key (published in DNS) and the
// private key encrypted with PP_SECRET (src/crypto.ts).
import type { Kysely } from "kysely";

// deno-lint-ignore no-explicit-any
export async function up(db: Kysely<any>): Promise<void> {
  await db.schema.alterTable("domains")
    .addColumn("dkim_selector", "text")
    .addColumn("dkim_public_key", "text")
    .addColumn("dkim_private_key_enc", "text")
    .execute();
}

// deno-lint-ignore no-explicit-any
export async function down(db: Kysely<any>): Promise<void> {
  await db.schema.alterTable("domains")
    .dropColumn("dkim_selector").dropColumn("dkim_public_key").dropColumn("dkim_private_key_enc").execute();
}
