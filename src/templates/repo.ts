/** SQL for templates. */
import { type Kysely, sql } from "kysely";
import type { Database, TemplatesTable } from "../db/tables.ts";
import type { Insertable, Selectable, Updateable } from "kysely";

/** A stored template row. */
export type TemplateRow = Selectable<TemplatesTable>;

/** Inserts a template. */
export function insertTemplate(db: Kysely<Database>, row: Insertable<TemplatesTable>) {
  return db.insertInto("templates").values(row).returningAll().executeTakeFirstOrThrow();
}

/** Updates an account's template; undefined when it is not theirs or deleted. */
export function updateTemplate(db: Kysely<Database>, accountId: string, id: string, set: Updateable<TemplatesTable>) {
  return db.updateTable("templates").set({ ...set, updated_at: sql`now()` })
    .where("id", "=", id).where("account_id", "=", accountId).where("deleted_at", "is", null)
    .returningAll().executeTakeFirst();
}

/** Marks an account's template deleted; false when it is not theirs or deleted already. */
export async function deleteTemplate(db: Kysely<Database>, accountId: string, id: string): Promise<boolean> {
  const r = await db.updateTable("templates").set({ deleted_at: sql`now()`, updated_at: sql`now()` })
    .where("id", "=", id).where("account_id", "=", accountId).where("deleted_at", "is", null)
    .executeTakeFirst();
  return r.numUpdatedRows > 0n;
}

/** One of an account's templates, unless deleted. */
export function findTemplate(db: Kysely<Database>, accountId: string, id: string) {
  return db.selectFrom("templates").selectAll().where("id", "=", id).where("account_id", "=", accountId)
    .where("deleted_at", "is", null).executeTakeFirst();
}

/** An account's templates (not the deleted ones), newest first. */
export function listTemplates(db: Kysely<Database>, accountId: string, limit: number) {
  return db.selectFrom("templates").selectAll().where("account_id", "=", accountId).where("deleted_at", "is", null)
    .orderBy("created_at", "desc").orderBy("id", "desc").limit(limit).execute();
}
