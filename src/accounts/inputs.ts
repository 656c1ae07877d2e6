/** Input shapes for accounts and API keys, shared by GraphQL and services. */
import { z } from "zod";
import { noLineBreaks } from "../validation.ts";

export const CreateAccountInput = z.strictObject({
  name: z.string().trim().min(1).max(200).refine(...noLineBreaks),
  monthlyLimit: z.number().int().min(0).nullish(),
});
export type CreateAccountInput = z.infer<typeof CreateAccountInput>;

export const CreateApiKeyInput = z.strictObject({
  accountId: z.uuid(),
  mode: z.enum(["live", "test"]).default("live"),
});
export type CreateApiKeyInput = z.infer<typeof CreateApiKeyInput>;
