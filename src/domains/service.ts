/**
 * Sending domains. A domain is `pending` until verified — by its DNS records
 * (`verifyDomain`) or by ops (`markDomainVerified`); mail may only come from a verified
 * domain or a subdomain of one, and is DKIM-signed with the domain's key.
 */
import type { Deps, Principal } from "../context.ts";
import { requireAdmin, requireTenant } from "../context.ts";
import { AppError, isUniqueViolation } from "../errors.ts";
import { randomBase62 } from "../accounts/service.ts";
import { assertUuid, parseInput } from "../validation.ts";
import { encryptSecret } from "../crypto.ts";
import { dkimTxtValue, generateDkimKeys } from "../mail/dkim.ts";
import { AddDomainInput } from "./inputs.ts";
import * as repo from "./repo.ts";
import { clearRequestCaches } from "../sends/service.ts";

/** A DNS record the owner must publish. */
export interface DnsRecord {
  type: "TXT";
  name: string;
  value: string;
}

/** A domain row as the record helpers need it. */
type DomainKeys = {
  name: string;
  verification_token: string;
  dkim_selector: string | null;
  dkim_public_key: string | null;
};

/**
 * The records that prove and authorise a domain: the verification TXT and the DKIM key
 * (both checked by verifyDomain), and SPF and DMARC hints (recommended, not checked).
 */
export function dnsRecords(d: DomainKeys): DnsRecord[] {
  const out: DnsRecord[] = [
    { type: "TXT", name: `_pigeonperch.${d.name}`, value: `pp-verify=${d.verification_token}` },
  ];
  if (d.dkim_selector && d.dkim_public_key) {
    out.push({ type: "TXT", name: `${d.dkim_selector}._domainkey.${d.name}`, value: dkimTxtValue(d.dkim_public_key) });
  }
  out.push(
    { type: "TXT", name: d.name, value: "v=spf1 a mx ~all" },
    { type: "TXT", name: `_dmarc.${d.name}`, value: `v=DMARC1; p=none; rua=mailto:dmarc@${d.name}` },
  );
  return out;
}

/** Adds a pending domain to the caller's account, with a new DKIM key pair. */
export async function addDomain(deps: Deps, p: Principal, name: unknown) {
  const t = requireTenant(p);
  const v = parseInput(AddDomainInput, { name }).name;
  if (await repo.claimedElsewhere(deps.db, t.accountId, v)) throw claimed();
  const keys = await generateDkimKeys();
  const row = await repo.insertDomain(deps.db, {
    account_id: t.accountId,
    name: v,
    verification_token: randomBase62(32),
    // A dated selector lets a later key live beside this one while DNS changes over.
    dkim_selector: `pp${new Date().toISOString().slice(0, 7).replace("-", "")}`,
    dkim_public_key: keys.publicKeyB64,
    dkim_private_key_enc: encryptSecret(deps.secrets.secret, keys.privateKeyPem),
  });
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
  const row = await repo.markVerified(deps.db, assertUuid(id), "ops");
  if (!row) throw new AppError("not_found", "domain not found");
  clearRequestCaches();
  deps.log.info("domain verified by ops", { domainId: id });
  return row;
}

/** One DNS check of verifyDomain. */
export interface DnsCheck {
  type: "TXT";
  name: string;
  expected: string;
  found: string[];
  ok: boolean;
  /** Whether verification waits for it (SPF is advice only). */
  required: boolean;
}

async function txt(deps: Deps, name: string): Promise<string[]> {
  try {
    const records = await Deno.resolveDns(
      name,
      "TXT",
      deps.config.dnsServer ? { nameServer: deps.config.dnsServer } : {},
    );
    return records.map((chunks) => chunks.join(""));
  } catch (e) {
    // No such name, no TXT: nothing found (not an error of ours).
    if (e instanceof Deno.errors.NotFound) return [];
    deps.log.warn("dns lookup failed", { name, err: e instanceof Error ? e.message : String(e) });
    return [];
  }
}

const squash = (v: string) => v.replace(/\s+/g, "");

/**
 * Looks the verification TXT, the DKIM key and SPF up in DNS (PP_DNS_SERVER, or the
 * system resolver) and marks the domain verified when the verification TXT and the DKIM
 * key match. SPF is reported (any `v=spf1` record passes: senders keep their own policy)
 * but not required. Returns every check, so the caller sees what is still missing; an
 * unverified result is not an error.
 */
export async function verifyDomain(deps: Deps, p: Principal, id: string) {
  const t = requireTenant(p);
  const domain = await repo.findDomain(deps.db, t.accountId, assertUuid(id));
  if (!domain) throw new AppError("not_found", "domain not found");
  const records = dnsRecords(domain);
  const required = records.slice(0, domain.dkim_selector ? 2 : 1);
  const spf = records.find((r) => r.value.startsWith("v=spf1"))!;
  const checks: DnsCheck[] = await Promise.all([...required, spf].map(async (r) => {
    const found = await txt(deps, r.name);
    const ok = r === spf
      ? found.some((f) => f.trim().startsWith("v=spf1"))
      : r.name.includes("._domainkey.")
      ? found.some((f) => squash(f).includes(`p=${domain.dkim_public_key}`))
      : found.some((f) => f.trim() === r.value);
    return { type: r.type, name: r.name, expected: r.value, found, ok, required: r !== spf };
  }));
  const verified = checks.every((c) => c.ok || !c.required);
  if (verified && domain.verified_via !== "dns" && (await repo.claimedElsewhere(deps.db, t.accountId, domain.name))) {
    throw claimed();
  }
  const row = verified && domain.verified_via !== "dns"
    ? (await repo.markVerified(deps.db, domain.id, "dns").catch((e) => {
      // Two accounts proving the same domain at once: the unique index lets one win.
      if (isUniqueViolation(e, "domains_dns_claim")) throw claimed();
      throw e;
    }))!
    : domain;
  if (row !== domain) clearRequestCaches();
  deps.log.info("domain verification checked", { accountId: t.accountId, domainId: id, verified });
  return { domain: row, verified: row.status === "verified", checks };
}

function claimed(): AppError {
  return new AppError("validation_failed", "name: this domain is verified by another account", [
    { path: "name", message: "this domain is verified by another account" },
  ]);
}

/** The caller's domains. */
export function listDomains(deps: Deps, p: Principal) {
  return repo.listDomains(deps.db, requireTenant(p).accountId);
}
