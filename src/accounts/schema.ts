/** GraphQL for accounts and API keys: the tenant's `account`, and the ops mutations. */
import type { Selectable } from "kysely";
import { type AccountsTable, type ApiKeysTable, KEY_SCOPES } from "../db/tables.ts";
import { builder, upperCaseValues } from "../graphql/builder.ts";
import { type Reputation, reputationOf } from "./reputation.ts";
import * as service from "./service.ts";

const ApiKeyMode = builder.enumType("ApiKeyMode", {
  description: "LIVE keys mail through SMTP_URL; TEST keys run the whole pipeline into the outbox.",
  values: { LIVE: { value: "live" }, TEST: { value: "test" } } as const,
});

const ApiKeyScope = builder.enumType("ApiKeyScope", {
  description: "FULL: every call of the account. SENDING: create, cancel and reschedule sends and batches, " +
    "and read sends, batches and events; anything else is forbidden.",
  values: upperCaseValues(KEY_SCOPES),
});

const Usage = builder.objectRef<{ month: string; used: number; limit: number | null; remaining: number | null }>(
  "Usage",
)
  .implement({
    description: "Emails accepted this calendar month (UTC) against the plan's limit.",
    fields: (t) => ({
      month: t.exposeString("month"),
      used: t.exposeInt("used"),
      limit: t.exposeInt("limit", { nullable: true }),
      remaining: t.exposeInt("remaining", { nullable: true }),
    }),
  });

/** GraphQL `ApiKey`: never the key itself, only its prefix. */
export const ApiKey = builder.objectRef<Selectable<ApiKeysTable>>("ApiKey").implement({
  fields: (t) => ({
    id: t.exposeID("id"),
    prefix: t.exposeString("prefix"),
    mode: t.field({ type: ApiKeyMode, resolve: (k) => k.mode }),
    scope: t.field({ type: ApiKeyScope, resolve: (k) => k.scope }),
    domains: t.exposeStringList("domains", {
      nullable: true,
      description: "The domains (and subdomains) it may send from; null: every verified domain of the account.",
    }),
    createdAt: t.field({ type: "DateTime", resolve: (k) => k.created_at }),
    revokedAt: t.field({ type: "DateTime", nullable: true, resolve: (k) => k.revoked_at }),
  }),
});

const ReputationStatus = builder.enumType("ReputationStatus", {
  description: "OK; WARNING at 5% bounces or 0.1% complaints; PAUSED while sending is paused.",
  values: ["OK", "WARNING", "PAUSED"] as const,
});

const Reputation = builder.objectRef<Reputation>("Reputation").implement({
  description: "Rates over the last 7 days (from ops' last resume if later); judged from 100 sends on.",
  fields: (t) => ({
    sends: t.exposeInt("sends"),
    bounces: t.exposeInt("bounces"),
    complaints: t.exposeInt("complaints"),
    bounceRate: t.exposeFloat("bounceRate"),
    complaintRate: t.exposeFloat("complaintRate"),
    status: t.field({ type: ReputationStatus, resolve: (r) => r.status }),
  }),
});

/** GraphQL `Account`. */
export const Account = builder.objectRef<Selectable<AccountsTable>>("Account").implement({
  fields: (t) => ({
    id: t.exposeID("id"),
    name: t.exposeString("name"),
    monthlyLimit: t.exposeInt("monthly_limit", { nullable: true }),
    sendingEnabled: t.exposeBoolean("sending_enabled"),
    pausedReason: t.exposeString("paused_reason", { nullable: true }),
    createdAt: t.field({ type: "DateTime", resolve: (a) => a.created_at }),
    usage: t.field({ type: Usage, resolve: (a, _, ctx) => service.usageOf(ctx.deps, a) }),
    reputation: t.field({ type: Reputation, resolve: (a, _, ctx) => reputationOf(ctx.deps.db, a) }),
    pausedBy: t.exposeString("paused_by", { nullable: true, description: "`ops` or `reputation`." }),
    apiKeys: t.field({ type: [ApiKey], resolve: (a, _, ctx) => service.keysOf(ctx.deps, a.id) }),
  }),
});

const CreateApiKeyPayload = builder.objectRef<{ key: string; apiKey: Selectable<ApiKeysTable> }>("CreateApiKeyPayload")
  .implement({
    fields: (t) => ({
      key: t.exposeString("key", { description: "The plain key. Shown once; only its hash is stored." }),
      apiKey: t.field({ type: ApiKey, resolve: (p) => p.apiKey }),
    }),
  });

const CreateAccountInput = builder.inputType("CreateAccountInput", {
  fields: (t) => ({
    name: t.string({ required: true }),
    monthlyLimit: t.int({ description: "Emails per calendar month (UTC); null = unlimited." }),
  }),
});

const CreateApiKeyInput = builder.inputType("CreateApiKeyInput", {
  fields: (t) => ({
    accountId: t.id({ description: "Required of ops; a tenant's key creates keys for its own account." }),
    mode: t.field({ type: ApiKeyMode, defaultValue: "live" }),
    scope: t.field({ type: ApiKeyScope, description: "Default FULL. A tenant's FULL key may create SENDING keys." }),
    domains: t.stringList({ description: "Verified domains of the account the key may send from (and subdomains)." }),
  }),
});

builder.queryField("account", (t) =>
  t.field({
    type: Account,
    nullable: true,
    description: "With an API key: the caller's account. With the admin token: the account `id`.",
    args: { id: t.arg.id() },
    resolve: (_, a, ctx) =>
      ctx.principal?.kind === "admin"
        ? service.getAccount(ctx.deps, ctx.principal, String(a.id ?? ""))
        : service.getOwnAccount(ctx.deps, ctx.principal),
  }));

builder.mutationField("createAccount", (t) =>
  t.field({
    type: Account,
    description: "Ops: a new tenant account.",
    args: { input: t.arg({ type: CreateAccountInput, required: true }) },
    resolve: (_, a, ctx) => service.createAccount(ctx.deps, ctx.principal, a.input),
  }));

builder.mutationField("createApiKey", (t) =>
  t.field({
    type: CreateApiKeyPayload,
    description: "A new API key (ops: any, for any account; a FULL key: SENDING keys of its own account); " +
      "the plain key is in the answer only.",
    args: { input: t.arg({ type: CreateApiKeyInput, required: true }) },
    resolve: (_, a, ctx) => service.createApiKey(ctx.deps, ctx.principal, a.input),
  }));

builder.mutationField("revokeApiKey", (t) =>
  t.field({
    type: ApiKey,
    description: "Ops: the key stops working at once.",
    args: { id: t.arg.id({ required: true }) },
    resolve: (_, a, ctx) => service.revokeApiKey(ctx.deps, ctx.principal, String(a.id)),
  }));

builder.mutationField("setAccountSending", (t) =>
  t.field({
    type: Account,
    description: "Ops: pause (false) or resume (true) an account's sending.",
    args: { accountId: t.arg.id({ required: true }), enabled: t.arg.boolean({ required: true }) },
    resolve: (_, a, ctx) => service.setAccountSending(ctx.deps, ctx.principal, String(a.accountId), a.enabled),
  }));
