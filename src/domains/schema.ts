/** GraphQL for sending domains. */
import type { Selectable } from "kysely";
import type { DomainsTable } from "../db/tables.ts";
import { builder } from "../graphql/builder.ts";
import * as service from "./service.ts";

const DomainStatus = builder.enumType("DomainStatus", {
  values: { PENDING: { value: "pending" }, VERIFIED: { value: "verified" } } as const,
});

const DnsRecord = builder.objectRef<service.DnsRecord>("DnsRecord").implement({
  fields: (t) => ({
    type: t.exposeString("type"),
    name: t.exposeString("name"),
    value: t.exposeString("value"),
  }),
});

/** GraphQL `Domain`. */
export const Domain = builder.objectRef<Selectable<DomainsTable>>("Domain").implement({
  fields: (t) => ({
    id: t.exposeID("id"),
    name: t.exposeString("name"),
    status: t.field({ type: DomainStatus, resolve: (d) => d.status }),
    dnsRecords: t.field({ type: [DnsRecord], resolve: (d) => service.dnsRecords(d) }),
    dkimSelector: t.exposeString("dkim_selector", { nullable: true }),
    createdAt: t.field({ type: "DateTime", resolve: (d) => d.created_at }),
    verifiedAt: t.field({ type: "DateTime", nullable: true, resolve: (d) => d.verified_at }),
  }),
});

builder.queryField(
  "domains",
  (t) => t.field({ type: [Domain], resolve: (_, __, ctx) => service.listDomains(ctx.deps, ctx.principal) }),
);

builder.mutationField("addDomain", (t) =>
  t.field({
    type: Domain,
    description: "Adds a domain as PENDING; publish its dnsRecords, then have it verified.",
    args: { name: t.arg.string({ required: true }) },
    resolve: (_, a, ctx) => service.addDomain(ctx.deps, ctx.principal, a.name),
  }));

const DnsCheck = builder.objectRef<service.DnsCheck>("DnsCheck").implement({
  fields: (t) => ({
    type: t.exposeString("type"),
    name: t.exposeString("name"),
    expected: t.exposeString("expected"),
    found: t.exposeStringList("found"),
    ok: t.exposeBoolean("ok"),
    required: t.exposeBoolean("required", { description: "false for SPF: reported, not required." }),
  }),
});

const DomainVerification = builder.objectRef<Awaited<ReturnType<typeof service.verifyDomain>>>("DomainVerification")
  .implement({
    fields: (t) => ({
      domain: t.field({ type: Domain, resolve: (v) => v.domain }),
      verified: t.exposeBoolean("verified"),
      checks: t.field({ type: [DnsCheck], resolve: (v) => v.checks }),
    }),
  });

builder.mutationField("verifyDomain", (t) =>
  t.field({
    type: DomainVerification,
    description: "Looks the verification TXT and DKIM records up in DNS; VERIFIED when both match.",
    args: { id: t.arg.id({ required: true }) },
    resolve: (_, a, ctx) => service.verifyDomain(ctx.deps, ctx.principal, String(a.id)),
  }));

builder.mutationField("markDomainVerified", (t) =>
  t.field({
    type: Domain,
    description: "Ops: marks a domain verified without a DNS check.",
    args: { id: t.arg.id({ required: true }) },
    resolve: (_, a, ctx) => service.markDomainVerified(ctx.deps, ctx.principal, String(a.id)),
  }));
