/** SQL for segments and their members. */
import { type Insertable, type Kysely, type Selectable, sql } from "kysely";
import type { Database, SegmentRule, SegmentsTable } from "../db/tables.ts";
import { segmentWhere } from "./rules.ts";

/** A stored segment row. */
export type SegmentRow = Selectable<SegmentsTable>;

/** Inserts a segment. */
export function insertSegment(db: Kysely<Database>, row: Insertable<SegmentsTable>) {
  return db.insertInto("segments").values(row).returningAll().executeTakeFirstOrThrow();
}

/** One of an account's segments. */
export function findSegment(db: Kysely<Database>, accountId: string, id: string) {
  return db.selectFrom("segments").selectAll().where("id", "=", id).where("account_id", "=", accountId)
    .executeTakeFirst();
}

/** An account's segments, newest first. */
export function listSegments(db: Kysely<Database>, accountId: string, limit: number) {
  return db.selectFrom("segments").selectAll().where("account_id", "=", accountId)
    .orderBy("created_at", "desc").orderBy("id", "desc").limit(limit).execute();
}

/** How many of an account's contacts (any status) match the rules. */
export async function countMembers(db: Kysely<Database>, accountId: string, rules: readonly SegmentRule[]) {
  const r = await db.selectFrom("contacts").select(sql<number>`count(*)::int`.as("n"))
    .where("account_id", "=", accountId).where(segmentWhere(rules)).executeTakeFirstOrThrow();
  return r.n;
}

/** The newest of an account's contacts (any status) that match the rules. */
export function listMembers(db: Kysely<Database>, accountId: string, rules: readonly SegmentRule[], limit: number) {
  return db.selectFrom("contacts").selectAll().where("account_id", "=", accountId).where(segmentWhere(rules))
    .orderBy("created_at", "desc").orderBy("id", "desc").limit(limit).execute();
}
