// A send's own headers (API.md "Message features"): `{name: value}`, checked at acceptance,
// written into the message after ours. Null when it has none.
import { type Kysely, sql } from "kysely";

// deno-lint-ignore no-explicit-any
export async function up(db: Kysely<any>): Promise<void> {
  await sql`alter table sends add column headers jsonb`.execute(db);
}

// deno-lint-ignore no-explicit-any
export async function down(db: Kysely<any>): Promise<void> {
  await sql`alter table sends drop column headers`.execute(db);
}
