// Reputation: when ops last resumed an account (its rates are counted afresh from there),
// and who paused it (`ops` or `reputation`).
import type { Kysely } from "kysely";

// deno-lint-ignore no-explicit-any
export async function up(db: Kysely<any>): Promise<void> {
  await db.schema.alterTable("accounts")
    .addColumn("reputation_since", "timestamptz")
    .addColumn("paused_by", "text")
    .execute();
}

// deno-lint-ignore no-explicit-any
export async function down(db: Kysely<any>): Promise<void> {
  await db.schema.alterTable("accounts").dropColumn("reputation_since").dropColumn("paused_by").execute();
}
