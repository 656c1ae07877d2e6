/** SQL for contacts. */
import { type Kysely, sql } from "kysely";
import type { ContactsTable, ContactStatus, Database, SegmentRule } from "../db/tables.ts";
import type { Insertable, Selectable, Updateable } from "kysely";
import { escapeLike, segmentWhere } from "../segments/repo.ts";

/** A stored contact row. */
export type ContactRow = Selectable<ContactsTable>;

/** A contact as a send needs it. */
export interface ContactRef {
  id: string;
  email: string;
  status: ContactStatus;
}

/**
 * The account's contacts for these addresses, created as subscribed where missing: one
 * statement for the whole list (the addresses must be distinct, case-insensitively).
 */
export async function upsertContactsByEmail(db: Kysely<Database>, accountId: string, emails: string[]) {
  if (emails.length === 0) return [];
  const r = await sql<ContactRef>`
    insert into contacts (account_id, email, updated_at)
    select ${accountId}::uuid, e, now() from unnest(${emails}::text[]) as e
    on conflict (account_id, lower(email)) do update set email = contacts.email
    returning id, email, status`.execute(db);
  return r.rows;
}

/** Which of these addresses are the account's contacts that may not be mailed, with why (lower-cased address → status). */
export async function suppressedAmong(db: Kysely<Database>, accountId: string, emails: string[]) {
  if (emails.length === 0) return new Map<string, ContactStatus>();
  const rows = await db.selectFrom("contacts").select(["email", "status"])
    .where("account_id", "=", accountId).where("status", "<>", "subscribed")
    .where(sql<string>`lower(email)`, "in", emails.map((e) => e.toLowerCase())).execute();
  return new Map(rows.map((r) => [r.email.toLowerCase(), r.status]));
}

/** Marks these addresses of the account bounced, creating contacts for unknown ones (a hard bounce of a cc). */
export async function markBounced(db: Kysely<Database>, accountId: string, emails: string[]) {
  if (emails.length === 0) return;
  await sql`
    insert into contacts (account_id, email, status, updated_at)
    select ${accountId}::uuid, e, 'bounced', now() from unnest(${emails}::text[]) as e
    on conflict (account_id, lower(email)) do update set status = 'bounced', updated_at = now()`.execute(db);
}

/** The account's contacts with these ids (foreign or unknown ids are simply absent). */
export function findContactsByIds(db: Kysely<Database>, accountId: string, ids: string[]) {
  if (ids.length === 0) return Promise.resolve([] as ContactRef[]);
  return db.selectFrom("contacts").select(["id", "email", "status"])
    .where("account_id", "=", accountId).where("id", "in", ids).execute();
}

/** Inserts a contact; undefined when the account already has this address (any case). */
export function insertContact(db: Kysely<Database>, row: Insertable<ContactsTable>) {
  return db.insertInto("contacts").values(row)
    .onConflict((oc) => oc.expression(sql`account_id, lower(email)`).doNothing())
    .returningAll().executeTakeFirst();
}

/**
 * The account's contact for `email`, created as subscribed when there is none. One
 * statement: the no-op update makes RETURNING give the existing row on conflict.
 */
export function upsertContactByEmail(db: Kysely<Database>, accountId: string, email: string) {
  return db.insertInto("contacts").values({ account_id: accountId, email, updated_at: new Date() })
    .onConflict((oc) => oc.expression(sql`account_id, lower(email)`).doUpdateSet({ email: sql`contacts.email` }))
    .returningAll().executeTakeFirstOrThrow();
}

/** One of an account's contacts by id. */
export function findContact(db: Kysely<Database>, accountId: string, id: string) {
  return db.selectFrom("contacts").selectAll().where("id", "=", id).where("account_id", "=", accountId)
    .executeTakeFirst();
}

/** One of an account's contacts by address, case-insensitive. */
export function findContactByEmail(db: Kysely<Database>, accountId: string, email: string) {
  return db.selectFrom("contacts").selectAll().where("account_id", "=", accountId)
    .where(sql`lower(email)`, "=", email.toLowerCase()).executeTakeFirst();
}

/**
 * A page of an account's contacts, newest first, after a (created_at, id) cursor; optionally
 * only a status, those with `search` in their address, names or company (any case), or a
 * segment's members. The filters narrow the rows, the cursor stays the same, so keyset pages
 * stay stable under them.
 */
export function listContacts(
  db: Kysely<Database>,
  accountId: string,
  opts: {
    limit: number;
    status?: ContactStatus;
    search?: string;
    segmentRules?: readonly SegmentRule[];
    after?: { createdAt: Date; id: string };
  },
) {
  let q = db.selectFrom("contacts").selectAll().where("account_id", "=", accountId);
  if (opts.status) q = q.where("status", "=", opts.status);
  if (opts.search) {
    const pattern = `%${escapeLike(opts.search)}%`;
    q = q.where((eb) =>
      eb.or([
        eb("email", "ilike", pattern),
        eb("first_name", "ilike", pattern),
        eb("last_name", "ilike", pattern),
        eb("company", "ilike", pattern),
      ])
    );
  }
  if (opts.segmentRules) q = q.where(segmentWhere(opts.segmentRules));
  if (opts.after) {
    const a = opts.after;
    q = q.where(sql<boolean>`(created_at, id) < (${a.createdAt}, ${a.id}::uuid)`);
  }
  return q.orderBy("created_at", "desc").orderBy("id", "desc").limit(opts.limit).execute();
}

/**
 * Sets the given columns of an account's contact; undefined when it is not theirs. Throws
 * the unique violation `contacts_account_email` when the new address is another contact's.
 */
export function updateContact(db: Kysely<Database>, accountId: string, id: string, set: Updateable<ContactsTable>) {
  return db.updateTable("contacts").set({ ...set, updated_at: sql`now()` })
    .where("id", "=", id).where("account_id", "=", accountId).returningAll().executeTakeFirst();
}

/** The status of an account's contact, locked until the caller's transaction ends; undefined when not theirs. */
export function lockContactStatus(db: Kysely<Database>, accountId: string, id: string) {
  return db.selectFrom("contacts").select("status").where("id", "=", id).where("account_id", "=", accountId)
    .forUpdate().executeTakeFirst();
}

/** The account a contact belongs to (any account: for ops), or undefined. */
export function findContactAccount(db: Kysely<Database>, contactId: string) {
  return db.selectFrom("contacts").select("account_id").where("id", "=", contactId).executeTakeFirst();
}
