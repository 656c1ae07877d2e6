/**
 * Sending domains. A domain is `pending` until verified; mail may only come from a
 * verified domain or a subdomain of one. Verification by DNS lookup and DKIM keys come
 * with the limits issue; here ops mark a domain verified.
 */
import type { Deps, Principal } from "../context.ts";
import { requireAdmin, requireTenant } from "../context.ts";
import { AppError } from "../errors.ts";
import { randomBase62 } from "../accounts/service.ts";
import { assertUuid, parseInput } from "../validation.ts";
import { AddDomainInput } from "./inputs.ts";
import * as repo from "./repo.ts";

/** A DNS record the owner must publish. */
export interface DnsRecord {
  type: "TXT";
  name: string;
  value: string;
}

/** The records that prove and authorise a domain. */
export function dnsRecords(d: { name: string; verification_token: string }): DnsRecord[] {
  return [
    { type: "TXT", name: `_pigeonperch.${d.name}`, value: `pp-verify=${d.verification_token}` },
    { type: "TXT", name: d.name, value: "v=spf1 a mx ~all" },
  ];
}

/** Adds a pending domain to the caller's account. */
export async function addDomain(deps: Deps, p: Principal, name: unknown) {
  const t = requireTenant(p);
  const v = parseInput(AddDomainInput, { name }).name;
  const row = await repo.insertDomain(deps.db, t.accountId, v, randomBase62(32));
  if (!row) {
    throw new AppError("validation_failed", "name: the account already has this domain", [{
      path: "name",
      message: "the account already has this domain",
    }]);
  }
  deps.log.info("domain added", { accountId: t.accountId, domainId: row.id });
  return row;
}

/** Ops: marks a domain verified without a DNS check. */
export async function markDomainVerified(deps: Deps, p: Principal, id: string) {
  requireAdmin(p);
  const row = await repo.markVerified(deps.db, assertUuid(id));
  if (!row) throw new AppError("not_found", "domain not found");
  deps.log.info("domain verified by ops", { domainId: id });
  return row;
}

/** The caller's domains. */
export function listDomains(deps: Deps, p: Principal) {
  return repo.listDomains(deps.db, requireTenant(p).accountId);
}
