// A template can be deleted (DELETE /api/v1/templates/:id): it is marked, not removed, since
// its sends refer to it. A deleted template is not found for new sends, reads or changes;
// sends accepted before the delete still render with it.
import { type Kysely, sql } from "kysely";

// deno-lint-ignore no-explicit-any
export async function up(db: Kysely<any>): Promise<void> {
  await sql`alter table templates add column deleted_at timestamptz`.execute(db);
}

// deno-lint-ignore no-explicit-any
export async function down(db: Kysely<any>): Promise<void> {
  await sql`alter table templates drop column deleted_at`.execute(db);
}
