/** Contact input shapes, shared by GraphQL and the services. */
import { z } from "zod";
import { CONTACT_STATUSES } from "../db/tables.ts";
import { isEmail, noLineBreaks } from "../validation.ts";

const name = z.string().max(200).refine(...noLineBreaks).nullish();
const email = z.string().trim().refine(isEmail, "must be an email address");
const fields = z.record(z.string(), z.unknown()).nullish()
  .refine((v) => v == null || JSON.stringify(v).length <= 64 * 1024, "must be at most 64 KB");

/** createContact: an address, optional names and custom fields. */
export const CreateContactInput = z.strictObject({ email, firstName: name, lastName: name, company: name, fields });
export type CreateContactInput = z.infer<typeof CreateContactInput>;

/**
 * updateContact: any subset. null clears a name or company; `fields` replaces the whole
 * custom-field object (null clears it); email and status cannot be null.
 */
export const UpdateContactInput = z.strictObject({
  email: email.optional(),
  firstName: name,
  lastName: name,
  company: name,
  fields,
  // Any case, for callers other than GraphQL (whose enum already gives lower case).
  status: z.string().transform((v) => v.toLowerCase())
    .pipe(z.enum(CONTACT_STATUSES)).optional(),
});
export type UpdateContactInput = z.infer<typeof UpdateContactInput>;

/** The `contacts` list filters that need checking (`status` is an enum already). */
export const ContactFilters = z.object({
  search: z.string().trim().max(200).nullish(),
  segmentId: z.string().nullish(),
});
