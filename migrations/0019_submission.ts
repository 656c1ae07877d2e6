// SMTP submission (API.md "SMTP submission"): a submitted message is a send without a
// template. Its own parts (HTML, text) and the address headers it was written with (To, Cc)
// are kept in `content`; delivery writes them instead of rendering a template. A send has
// a template or a content, never neither. A batch of submitted sends has no template either.
import { type Kysely, sql } from "kysely";

// deno-lint-ignore no-explicit-any
export async function up(db: Kysely<any>): Promise<void> {
  await sql`alter table sends alter column template_id drop not null, add column content jsonb,
    add constraint sends_template_or_content check (template_id is not null or content is not null)`.execute(db);
  await sql`alter table batches alter column template_id drop not null`.execute(db);
}

// deno-lint-ignore no-explicit-any
export async function down(db: Kysely<any>): Promise<void> {
  await sql`delete from sends where template_id is null`.execute(db);
  await sql`delete from batches where template_id is null`.execute(db);
  await sql`alter table sends drop constraint sends_template_or_content, drop column content,
    alter column template_id set not null`.execute(db);
  await sql`alter table batches alter column template_id set not null`.execute(db);
}
