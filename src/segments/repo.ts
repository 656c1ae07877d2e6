/**
 * SQL for segments and their members, and segment rules as SQL over the `contacts` table
 * (`segmentWhere`, used by the contacts and batches repos too). Every rule value and
 * custom-field key is a bound parameter; the only identifiers written into SQL text come
 * from a fixed list.
 */
import {
  type Expression,
  type Insertable,
  type Kysely,
  type RawBuilder,
  type Selectable,
  sql,
  type SqlBool,
} from "kysely";
import type { Database, SegmentRule, SegmentsTable } from "../db/tables.ts";

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

/** Rule fields that are columns of `contacts`; every other field is a key of `contacts.fields`. */
export const COLUMN_FIELDS: readonly string[] = ["email", "first_name", "last_name", "company", "status"];

/**
 * Escapes `\`, `%` and `_` so that `v` matches literally inside a LIKE/ILIKE pattern.
 * Backslash is LIKE's default escape character, so no ESCAPE clause is needed (and none
 * that would depend on `standard_conforming_strings`).
 */
export function escapeLike(v: string): string {
  return v.replace(/[\\%_]/g, (c) => `\\${c}`);
}

/** The rule's field as text: a column, or the custom field's value (`fields->>key`, JSON null = SQL null). */
function fieldText(field: string): RawBuilder<string | null> {
  if (COLUMN_FIELDS.includes(field)) return sql`${sql.ref(`contacts.${field}`)}`;
  // `::text` picks the key (not array index) overload of ->> for the untyped parameter.
  return sql`(contacts.fields ->> ${field}::text)`;
}

function ruleSql(rule: SegmentRule): RawBuilder<SqlBool> {
  const col = fieldText(rule.field);
  if (rule.op === "EXISTS") {
    if (COLUMN_FIELDS.includes(rule.field)) return sql`(${col} is not null and ${col} <> '')`;
    // `?` lets a GIN index on fields answer; the second test drops JSON null and "".
    return sql`(contacts.fields ? ${rule.field}::text and coalesce(${col}, '') <> '')`;
  }
  // Validated on save (inputs.ts); a rule without a value here is corrupt data, not a match-all.
  if (typeof rule.value !== "string") throw new Error(`segment rule ${rule.op} on ${rule.field} has no value`);
  switch (rule.op) {
    case "EQ":
      return sql`(lower(${col}) = lower(${rule.value}))`;
    case "NEQ":
      // IS DISTINCT FROM: a contact without the field is "not equal" too.
      return sql`(lower(${col}) is distinct from lower(${rule.value}))`;
    case "CONTAINS":
      return sql`(${col} ilike ${`%${escapeLike(rule.value)}%`})`;
    default:
      throw new Error(`unknown segment rule op ${String((rule as { op: unknown }).op)}`);
  }
}

/**
 * A WHERE condition over `contacts` (referenced by that name, not an alias) that holds for
 * the contacts matching every rule; no rules match every contact. It does not filter by
 * account or status: compose it, e.g.
 * `.where("account_id", "=", a).where(segmentWhere(rules)).where("id", ">", c).orderBy("id")`.
 *
 * Semantics (every comparison is case-insensitive, on the field's text; a custom field
 * compares `fields->>key`, so the number 5 equals "5" and true equals "true"):
 * - `EQ`: the field equals the value.
 * - `NEQ`: the negation of EQ, including contacts where the field is null or missing.
 * - `CONTAINS`: the value is a substring of the field; `%`, `_` and `\` match literally.
 * - `EXISTS`: the field is present, not null and not the empty string; the value is ignored.
 *
 * Throws on a rule that inputs.ts would not have stored (an unknown op, a missing value).
 */
export function segmentWhere(rules: readonly SegmentRule[]): Expression<SqlBool> {
  if (rules.length === 0) return sql<SqlBool>`true`;
  return sql<SqlBool>`(${sql.join(rules.map(ruleSql), sql` and `)})`;
}
