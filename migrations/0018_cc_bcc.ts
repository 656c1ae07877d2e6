// cc and bcc (API.md "Message features"): the addresses a send also goes to, each checked
// against the account's suppressed contacts when it is delivered. `Cc:` is written into the
// message, `Bcc:` never is; both are envelope recipients. Null: none.
import { type Kysely, sql } from "kysely";

// deno-lint-ignore no-explicit-any
export async function up(db: Kysely<any>): Promise<void> {
  await sql`alter table sends add column cc text[], add column bcc text[]`.execute(db);
}

// deno-lint-ignore no-explicit-any
export async function down(db: Kysely<any>): Promise<void> {
  await sql`alter table sends drop column cc, drop column bcc`.execute(db);
}
