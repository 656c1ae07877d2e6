/** Template input shapes, shared by GraphQL and the services. */
import { z } from "zod";
import { isEmail, noLineBreaks } from "../validation.ts";

// Whether a source compiles is checked by the service, in the render sandbox (assertCompiles).
const source = (max: number) => z.string().max(max);

const fields = {
  name: z.string().trim().min(1).max(200),
  subject: source(998).refine(...noLineBreaks).refine((v) => v.trim().length > 0, "must not be empty"),
  html: source(512 * 1024).nullish(),
  text: source(512 * 1024).nullish(),
  fromEmail: z.string().trim().refine(isEmail, "must be an email address").nullish(),
  fromName: z.string().max(200).refine(...noLineBreaks).nullish(),
  replyTo: z.string().trim().refine(isEmail, "must be an email address").nullish(),
  trackOpens: z.boolean().nullish(),
  trackClicks: z.boolean().nullish(),
};

/** createTemplate: name and subject required, and at least one of html and text. */
export const CreateTemplateInput = z.object(fields).refine((v) => v.html || v.text, {
  message: "html or text is required",
  path: ["html"],
});
export type CreateTemplateInput = z.infer<typeof CreateTemplateInput>;

/** updateTemplate: any subset; null clears an optional field. */
export const UpdateTemplateInput = z.object({
  ...fields,
  name: fields.name.optional(),
  subject: fields.subject.optional(),
});
export type UpdateTemplateInput = z.infer<typeof UpdateTemplateInput>;
