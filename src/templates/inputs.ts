/** Template input shapes, shared by REST, GraphQL and the services. */
import { z } from "zod";
import { Personalizations, Recipient } from "../sends/inputs.ts";
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
export const CreateTemplateInput = z.strictObject(fields).refine((v) => v.html || v.text, {
  message: "html or text is required",
  path: ["html"],
}).meta({ id: "CreateTemplateInput" });
export type CreateTemplateInput = z.infer<typeof CreateTemplateInput>;

/** updateTemplate: any subset; null clears an optional field. */
export const UpdateTemplateInput = z.strictObject({
  ...fields,
  name: fields.name.optional(),
  subject: fields.subject.optional(),
}).meta({ id: "UpdateTemplateInput" });
export type UpdateTemplateInput = z.infer<typeof UpdateTemplateInput>;

/**
 * `POST /api/v1/templates/:id/render` and `renderTemplate`: whom to render for (an address or
 * a contact uuid, whose fields fill the variables as a send's would) and the personalizations.
 */
export const RenderTemplateInput = z.strictObject({
  to: Recipient.nullish(),
  personalizations: Personalizations,
}).meta({ id: "RenderTemplateInput" });
export type RenderTemplateInput = z.infer<typeof RenderTemplateInput>;
