/** Contact input shapes, shared by GraphQL and the services. */
import { z } from "zod";
import { isEmail, noLineBreaks } from "../validation.ts";

const name = z.string().max(200).refine(...noLineBreaks).nullish();

export const CreateContactInput = z.object({
  email: z.string().trim().refine(isEmail, "must be an email address"),
  firstName: name,
  lastName: name,
  company: name,
  fields: z.record(z.string(), z.unknown()).nullish()
    .refine((v) => v == null || JSON.stringify(v).length <= 64 * 1024, "must be at most 64 KB"),
});
export type CreateContactInput = z.infer<typeof CreateContactInput>;
