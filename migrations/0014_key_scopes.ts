// API key scopes (API.md "Message features"): `full` (every call of the account) or `sending`
// (create, cancel and reschedule sends and batches; read sends, batches and events), and an
// optional list of domains a key may send from. Existing keys stay full, unrestricted.
import { type Kysely, sql } from "kysely";

// deno-lint-ignore no-explicit-any
export async function up(db: Kysely<any>): Promise<void> {
  await sql`alter table api_keys
    add column scope text not null default 'full' check (scope in ('full', 'sending')),
    add column domains text[]`.execute(db);
}

// deno-lint-ignore no-explicit-any
export async function down(db: Kysely<any>): Promise<void> {
  await sql`alter table api_keys drop column scope, drop column domains`.execute(db);
}
