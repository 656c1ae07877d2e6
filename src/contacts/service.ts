/** Contacts: one per address and account (case-insensitive), created explicitly or by a send. */
import type { Deps, Principal, Tenant } from "../context.ts";
import { requireTenant } from "../context.ts";
import type { Updateable } from "kysely";
import type { ContactsTable, ContactStatus } from "../db/tables.ts";
import { AppError, invalid, isUniqueViolation } from "../errors.ts";
import { contactStatusEvent } from "../events/service.ts";
import { decodeCursor } from "../pagination.ts";
import { isUuid, parseInput } from "../validation.ts";
import { requireSegment } from "../segments/service.ts";
import { ContactFilters, CreateContactInput, UpdateContactInput } from "./inputs.ts";
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

/**
 * Changes the given fields of one of the caller's contacts. 404 `not_found` for an unknown or
 * foreign id; 422 `validation_failed` (path `email`) when another of the account's contacts
 * has the new address, in any case. Setting `status` back to subscribed is allowed: it is
 * how an operator lifts a suppression. Lifting one (`resubscribed`) and unsubscribing
 * (`unsubscribed`) are recorded as contact-level events in the same transaction.
 */
export async function updateContact(deps: Deps, p: Principal, id: string, input: unknown) {
  if (!isUuid(id)) throw new AppError("not_found", "contact not found");
  // Ops (admin token) may change any account's contact, e.g. to lift a suppression; the
  // change is recorded as theirs (no API key).
  const t: Tenant = p?.kind === "admin" ? await opsActingFor(deps, id) : requireTenant(p);
  const v = parseInput(UpdateContactInput, input);
  const set: Updateable<ContactsTable> = {};
  if (v.email !== undefined) set.email = v.email;
  if (v.firstName !== undefined) set.first_name = v.firstName;
  if (v.lastName !== undefined) set.last_name = v.lastName;
  if (v.company !== undefined) set.company = v.company;
  if (v.fields !== undefined) set.fields = JSON.stringify(v.fields ?? {});
  if (v.status !== undefined) set.status = v.status;
  const row = await deps.db.transaction().execute(async (trx) => {
    // The status before, locked: a status change is recorded as an event exactly once.
    const before = v.status !== undefined ? await repo.lockContactStatus(trx, t.accountId, id) : undefined;
    const row = Object.keys(set).length === 0
      ? await repo.findContact(trx, t.accountId, id)
      : await repo.updateContact(trx, t.accountId, id, set).catch((err) => {
        if (isUniqueViolation(err, "contacts_account_email")) {
          throw invalid("email", "another contact has this email");
        }
        throw err;
      });
    if (row && before) await contactStatusEvent(trx, t, row.id, before.status, row.status);
    return row;
  });
  if (!row) throw new AppError("not_found", "contact not found");
  deps.log.info("contact updated", { accountId: t.accountId, contactId: id, status: v.status });
  return row;
}

/** The account of a contact, as ops act on it; 404 when there is no such contact. */
async function opsActingFor(deps: Deps, contactId: string): Promise<Tenant> {
  const row = await repo.findContactAccount(deps.db, contactId);
  if (!row) throw new AppError("not_found", "contact not found");
  return { kind: "tenant", accountId: row.account_id, apiKeyId: "", mode: "live", scope: "full", domains: null };
}

/**
 * A page of the caller's contacts, newest first (`first` 1–100, default 20), optionally
 * filtered by status, by `search` (case-insensitive substring of the address, names or
 * company) and by membership of a segment (422 `segment_not_found` when it is not theirs).
 */
export async function listContacts(
  deps: Deps,
  p: Principal,
  opts: {
    first?: number | null;
    after?: string | null;
    status?: ContactStatus | null;
    search?: string | null;
    segmentId?: string | null;
  },
) {
  const t = requireTenant(p);
  const f = parseInput(ContactFilters, { search: opts.search, segmentId: opts.segmentId });
  const limit = Math.min(Math.max(opts.first ?? 20, 1), 100);
  const after = opts.after ? decodeCursor(opts.after, "after") : undefined;
  const segment = f.segmentId != null ? await requireSegment(deps.db, t.accountId, f.segmentId) : undefined;
  const rows = await repo.listContacts(deps.db, t.accountId, {
    limit: limit + 1,
    status: opts.status ?? undefined,
    search: f.search || undefined,
    segmentRules: segment?.rules,
    after,
  });
  return { rows: rows.slice(0, limit), hasMore: rows.length > limit };
}
