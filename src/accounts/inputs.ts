/** Input shapes for accounts and API keys, shared by GraphQL and services. */
import { z } from "zod";
import { KEY_SCOPES } from "../db/tables.ts";
import { DomainName } from "../domains/inputs.ts";
import { noLineBreaks } from "../validation.ts";

export const CreateAccountInput = z.strictObject({
  name: z.string().trim().min(1).max(200).refine(...noLineBreaks),
  monthlyLimit: z.number().int().min(0).nullish(),
});
export type CreateAccountInput = z.infer<typeof CreateAccountInput>;

/**
 * createApiKey: `accountId` is required of ops and may be left out by a tenant (its own
 * account); `scope` defaults to `full`; `domains`, verified domains of the account, restrict
 * what the key may send from.
 */
export const CreateApiKeyInput = z.strictObject({
  accountId: z.uuid().nullish(),
  mode: z.enum(["live", "test"]).default("live"),
  scope: z.enum(KEY_SCOPES).nullish(),
  domains: z.array(DomainName).min(1).max(50).nullish(),
});
export type CreateApiKeyInput = z.infer<typeof CreateApiKeyInput>;
