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

/** Updates an account's template; undefined when it is not theirs. */
export function updateTemplate(db: Kysely<Database>, accountId: string, id: string, set: Updateable<TemplatesTable>) {
  return db.updateTable("templates").set({ ...set, updated_at: sql`now()` })
    .where("id", "=", id).where("account_id", "=", accountId).returningAll().executeTakeFirst();
}

/** One of an account's templates. */
export function findTemplate(db: Kysely<Database>, accountId: string, id: string) {
  return db.selectFrom("templates").selectAll().where("id", "=", id).where("account_id", "=", accountId)
    .executeTakeFirst();
}

/** An account's templates, newest first. */
export function listTemplates(db: Kysely<Database>, accountId: string, limit: number) {
  return db.selectFrom("templates").selectAll().where("account_id", "=", accountId)
    .orderBy("created_at", "desc").orderBy("id", "desc").limit(limit).execute();
}
