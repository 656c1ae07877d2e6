/**
 * Templates as both transports show them (the GraphQL `Template` fields). The shapes are zod
 * schemas: the types (`z.infer`) and, through src/rest/openapi.ts, the REST answers' schemas.
 */
import { z } from "zod";
import type { Rendered } from "../mail/render.ts";
import { Timestamp } from "../sends/view.ts";
import type { TemplateRow } from "./repo.ts";

/** A template. */
export const TemplateJson = z.strictObject({
  id: z.uuid(),
  name: z.string(),
  subject: z.string().describe("nunjucks"),
  html: z.string().nullable().describe("nunjucks, autoescaped"),
  text: z.string().nullable(),
  fromEmail: z.string().nullable(),
  fromName: z.string().nullable(),
  replyTo: z.string().nullable(),
  trackOpens: z.boolean().describe("Default for sends of this template."),
  trackClicks: z.boolean().describe("Default for sends of this template."),
  createdAt: Timestamp,
  updatedAt: Timestamp,
}).meta({ id: "Template" });
export type TemplateJson = z.infer<typeof TemplateJson>;

/** `GET /api/v1/templates`: the account's templates, newest first. */
export const TemplateList = z.strictObject({ data: z.array(TemplateJson) }).meta({ id: "TemplateList" });
export type TemplateList = z.infer<typeof TemplateList>;

/** `POST /api/v1/templates/:id/render` and `renderTemplate`: what a send would carry. */
export const RenderedTemplate = z.strictObject({
  subject: z.string(),
  html: z.string().nullable(),
  text: z.string().nullable(),
  missingVariables: z.array(z.string()).describe("Variables the template uses that nothing gave a value."),
}).meta({ id: "RenderedTemplate" });
export type RenderedTemplate = z.infer<typeof RenderedTemplate>;

export function templateView(r: TemplateRow): TemplateJson {
  return {
    id: r.id,
    name: r.name,
    subject: r.subject,
    html: r.html,
    text: r.text,
    fromEmail: r.from_email,
    fromName: r.from_name,
    replyTo: r.reply_to,
    trackOpens: r.track_opens,
    trackClicks: r.track_clicks,
    createdAt: r.created_at,
    updatedAt: r.updated_at,
  };
}

export function renderedView(r: Rendered): RenderedTemplate {
  return { subject: r.subject, html: r.html ?? null, text: r.text ?? null, missingVariables: r.missingVariables };
}
