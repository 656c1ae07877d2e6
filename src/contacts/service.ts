/** Contacts: one per address and account (case-insensitive), created explicitly or by a send. */
import type { Deps, Principal } from "../context.ts";
import { requireTenant } from "../context.ts";
import type { ContactStatus } from "../db/tables.ts";
import { AppError, invalid } from "../errors.ts";
import { decodeCursor } from "../pagination.ts";
import { isUuid, parseInput } from "../validation.ts";
import { CreateContactInput } from "./inputs.ts";
import * as repo from "./repo.ts";

/** Creates a subscribed contact; 422 when the address already has one. */
export async function createContact(deps: Deps, p: Principal, input: unknown) {
  const t = requireTenant(p);
  const v = parseInput(CreateContactInput, input);
  const row = await repo.insertContact(deps.db, {
    account_id: t.accountId,
    email: v.email,
    first_name: v.firstName ?? null,
    last_name: v.lastName ?? null,
    company: v.company ?? null,
    fields: JSON.stringify(v.fields ?? {}),
    updated_at: new Date(),
  });
  if (!row) throw invalid("email", "a contact with this email already exists");
  deps.log.info("contact created", { accountId: t.accountId, contactId: row.id });
  return row;
}

/** One of the caller's contacts by id or by email, or null. */
export async function getContact(deps: Deps, p: Principal, by: { id?: string | null; email?: string | null }) {
  const t = requireTenant(p);
  if (by.id) return isUuid(by.id) ? (await repo.findContact(deps.db, t.accountId, by.id)) ?? null : null;
  if (by.email) return (await repo.findContactByEmail(deps.db, t.accountId, by.email.trim())) ?? null;
  throw new AppError("validation_failed", "id or email is required", [{
    path: "id",
    message: "id or email is required",
  }]);
}

/** A page of the caller's contacts, newest first. */
export async function listContacts(
  deps: Deps,
  p: Principal,
  opts: { first?: number | null; after?: string | null; status?: ContactStatus | null },
) {
  const t = requireTenant(p);
  const limit = Math.min(Math.max(opts.first ?? 20, 1), 100);
  const rows = await repo.listContacts(deps.db, t.accountId, {
    limit: limit + 1,
    status: opts.status ?? undefined,
    after: opts.after ? decodeCursor(opts.after, "after") : undefined,
  });
  return { rows: rows.slice(0, limit), hasMore: rows.length > limit };
}
