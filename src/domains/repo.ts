/** SQL for sending domains. */
import { type Kysely, sql } from "kysely";
import type { Database } from "../db/tables.ts";

/** Adds a pending domain with its DKIM key; undefined when the account already has it. */
export function insertDomain(
  db: Kysely<Database>,
  row: {
    account_id: string;
    name: string;
    verification_token: string;
    dkim_selector: string;
    dkim_public_key: string;
    dkim_private_key_enc: string;
  },
) {
  return db.insertInto("domains").values(row)
    .onConflict((oc) => oc.expression(sql`account_id, lower(name)`).doNothing())
    .returningAll().executeTakeFirst();
}

/** Adds a domain that is verified from the start (the dev seed), with its DKIM key. */
export async function insertVerifiedDomain(
  db: Kysely<Database>,
  row: {
    account_id: string;
    name: string;
    verified_via: "dns" | "ops";
    verification_token: string;
    dkim_selector: string;
    dkim_public_key: string;
    dkim_private_key_enc: string;
  },
): Promise<void> {
  await db.insertInto("domains").values({ ...row, status: "verified", verified_at: new Date() }).execute();
}

/** Marks a domain verified, by DNS proof or by ops. */
export function markVerified(db: Kysely<Database>, id: string, via: "dns" | "ops") {
  return db.updateTable("domains")
    .set({ status: "verified", verified_via: via, verified_at: sql`coalesce(verified_at, now())` })
    .where("id", "=", id).returningAll().executeTakeFirst();
}

/** Whether another account has proven `name` by DNS. */
export async function claimedElsewhere(db: Kysely<Database>, accountId: string, name: string): Promise<boolean> {
  const r = await db.selectFrom("domains").select("id").where(sql`lower(name)`, "=", name.toLowerCase())
    .where("verified_via", "=", "dns").where("account_id", "!=", accountId).limit(1).executeTakeFirst();
  return r !== undefined;
}

/** An account's domains, by name. */
export function listDomains(db: Kysely<Database>, accountId: string) {
  return db.selectFrom("domains").selectAll().where("account_id", "=", accountId).orderBy("name").execute();
}

/** Whether `host` is a verified domain of the account or a subdomain of one. */
export async function isVerifiedSender(db: Kysely<Database>, accountId: string, host: string): Promise<boolean> {
  const r = await db.selectFrom("domains").select("id")
    .where("account_id", "=", accountId).where("status", "=", "verified")
    .where((eb) => eb.or([eb(sql`lower(name)`, "=", host), eb(sql`${host}`, "like", sql`'%.' || lower(name)`)]))
    .limit(1).executeTakeFirst();
  return r !== undefined;
}

/** One of an account's domains. */
export function findDomain(db: Kysely<Database>, accountId: string, id: string) {
  return db.selectFrom("domains").selectAll().where("id", "=", id).where("account_id", "=", accountId)
    .executeTakeFirst();
}

/**
 * The DKIM key of the account's verified domain that covers `host` (the domain itself or
 * its closest verified parent), if it has one.
 */
export function signingKeyFor(db: Kysely<Database>, accountId: string, host: string) {
  return db.selectFrom("domains").select(["name", "dkim_selector", "dkim_private_key_enc"])
    .where("account_id", "=", accountId).where("status", "=", "verified")
    .where("dkim_private_key_enc", "is not", null)
    .where((eb) => eb.or([eb(sql`lower(name)`, "=", host), eb(sql`${host}`, "like", sql`'%.' || lower(name)`)]))
    .orderBy(sql`length(name)`, "desc").limit(1).executeTakeFirst();
}
