/**
 * Sending domains. A domain is `pending` until verified — by its DNS records
 * (`verifyDomain`) or by ops (`markDomainVerified`); mail may only come from a verified
 * domain or a subdomain of one, and is DKIM-signed with the domain's key.
 */
import type { Deps, Principal } from "../context.ts";
import { requireAdmin, requireTenant } from "../context.ts";
import { AppError, isUniqueViolation } from "../errors.ts";
import { randomBase62 } from "../accounts/service.ts";
import { assertUuid, domainOf, parseInput } from "../validation.ts";
import { decryptSecret, encryptSecret } from "../crypto.ts";
import { type DkimOptions, dkimOptions, dkimTxtValue, generateDkimKeys } from "../mail/dkim.ts";
import { AddDomainInput } from "./inputs.ts";
import * as repo from "./repo.ts";
import { SharedCache } from "../cache.ts";

/**
 * What sends and deliveries read of an account's domains, by `account:host`, in every
 * process: a domain's change drops all of its account's entries when it commits
 * (src/cache.ts; a domain covers its subdomains, so its notice names the account). The TTL
 * bounds a change never announced.
 */
const DOMAIN_CACHE_MS = 60_000;
const senderCache = new SharedCache<boolean>("domain", { ttlMs: DOMAIN_CACHE_MS });
// Decrypting and parsing a key is not free: done once per domain and process.
const signingCache = new SharedCache<DkimOptions | undefined>("domain", { ttlMs: DOMAIN_CACHE_MS });

/** Whether mail from `host` may leave for this account: it is a verified domain of it or under one (cached). */
export function isVerifiedSender(deps: Pick<Deps, "db">, accountId: string, host: string): Promise<boolean> {
  return senderCache.getOrLoad(`${accountId}:${host}`, () => repo.isVerifiedSender(deps.db, accountId, host));
}

/**
 * The DKIM options for mail from `from` on this account (its verified domain's key, cached),
 * or undefined when that domain has none. Throws when the key cannot be decrypted.
 */
export function signingOptions(
  deps: Pick<Deps, "db" | "secrets">,
  accountId: string,
  from: string,
): Promise<DkimOptions | undefined> {
  const host = domainOf(from);
  return signingCache.getOrLoad(`${accountId}:${host}`, async () => {
    const row = await repo.signingKeyFor(deps.db, accountId, host);
    if (!row?.dkim_selector || !row.dkim_private_key_enc) return undefined;
    let pem: string;
    try {
      pem = decryptSecret(deps.secrets.secret, row.dkim_private_key_enc);
    } catch {
      // Unsigned mail from a domain that publishes DKIM would fail DMARC: fail loudly instead.
      throw new Error(
        `cannot decrypt the DKIM key of ${row.name}: this process's PP_SECRET differs from the one that stored it`,
      );
    }
    return dkimOptions(row.name, row.dkim_selector, pem);
  });
}

/** Drops this process's cached view of an account's domains (others hear of the change from the database). */
function forgetDomains(accountId: string): void {
  senderCache.drop(accountId);
  signingCache.drop(accountId);
}

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
  forgetDomains(row.account_id);
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
  if (row !== domain) forgetDomains(t.accountId);
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
