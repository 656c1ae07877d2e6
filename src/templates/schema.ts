/** GraphQL for templates. */
import { builder, type Types } from "../graphql/builder.ts";
import type { TemplateRow } from "./repo.ts";
import * as service from "./service.ts";
import { type RenderedTemplate as RenderedView, renderedView } from "./view.ts";

/** GraphQL `Template`. */
export const Template = builder.objectRef<TemplateRow>("Template").implement({
  fields: (t) => ({
    id: t.exposeID("id"),
    name: t.exposeString("name"),
    subject: t.exposeString("subject"),
    html: t.exposeString("html", { nullable: true }),
    text: t.exposeString("text", { nullable: true }),
    fromEmail: t.exposeString("from_email", { nullable: true }),
    fromName: t.exposeString("from_name", { nullable: true }),
    replyTo: t.exposeString("reply_to", { nullable: true }),
    trackOpens: t.exposeBoolean("track_opens"),
    trackClicks: t.exposeBoolean("track_clicks"),
    createdAt: t.field({ type: "DateTime", resolve: (r) => r.created_at }),
    updatedAt: t.field({ type: "DateTime", resolve: (r) => r.updated_at }),
  }),
});

type InputFields = PothosSchemaTypes.InputFieldBuilder<Types, "InputObject">;

// Create and update take the same fields; update makes every one optional.
const fields = (required: boolean) => (t: InputFields) => ({
  name: t.string({ required }),
  subject: t.string({ required, description: "nunjucks, e.g. `Your order {{order_id}}`" }),
  html: t.string({ description: "nunjucks, autoescaped" }),
  text: t.string(),
  fromEmail: t.string(),
  fromName: t.string(),
  replyTo: t.string(),
  trackOpens: t.boolean({ description: "Default for sends of this template (on)." }),
  trackClicks: t.boolean({ description: "Default for sends of this template (on)." }),
});

const CreateTemplateInput = builder.inputType("CreateTemplateInput", { fields: fields(true) });
const UpdateTemplateInput = builder.inputType("UpdateTemplateInput", { fields: fields(false) });

builder.queryField("template", (t) =>
  t.field({
    type: Template,
    nullable: true,
    args: { id: t.arg.id({ required: true }) },
    resolve: (_, a, ctx) => service.getTemplate(ctx.deps, ctx.principal, String(a.id)),
  }));

builder.queryField("templates", (t) =>
  t.field({
    type: [Template],
    args: { first: t.arg.int() },
    resolve: (_, a, ctx) => service.listTemplates(ctx.deps, ctx.principal, a.first ?? undefined),
  }));

builder.mutationField("createTemplate", (t) =>
  t.field({
    type: Template,
    args: { input: t.arg({ type: CreateTemplateInput, required: true }) },
    resolve: (_, a, ctx) => service.createTemplate(ctx.deps, ctx.principal, a.input),
  }));

builder.mutationField("updateTemplate", (t) =>
  t.field({
    type: Template,
    args: { id: t.arg.id({ required: true }), input: t.arg({ type: UpdateTemplateInput, required: true }) },
    resolve: (_, a, ctx) => service.updateTemplate(ctx.deps, ctx.principal, String(a.id), a.input),
  }));

builder.mutationField("deleteTemplate", (t) =>
  t.field({
    type: "Boolean",
    description: "Deletes a template: new sends of it are refused (template_not_found); accepted ones still go out.",
    args: { id: t.arg.id({ required: true }) },
    resolve: async (_, a, ctx) => {
      await service.deleteTemplate(ctx.deps, ctx.principal, String(a.id));
      return true;
    },
  }));

/** GraphQL `RenderedTemplate`: what a send to `to` would carry. */
const RenderedTemplate = builder.objectRef<RenderedView>("RenderedTemplate").implement({
  fields: (t) => ({
    subject: t.exposeString("subject"),
    html: t.exposeString("html", { nullable: true }),
    text: t.exposeString("text", { nullable: true }),
    missingVariables: t.exposeStringList("missingVariables", {
      description: "Variables the template uses that nothing gave a value.",
    }),
  }),
});

builder.queryField("renderTemplate", (t) =>
  t.field({
    type: RenderedTemplate,
    description: "Renders a template as a send to `to` (an address or a contact id) would be; sends nothing. " +
      "Links are not rewritten for tracking.",
    args: {
      id: t.arg.id({ required: true }),
      to: t.arg.string(),
      personalizations: t.arg({ type: "JSON" }),
    },
    resolve: async (_, a, ctx) =>
      renderedView(
        await service.renderTemplatePreview(ctx.deps, ctx.principal, String(a.id), {
          to: a.to,
          personalizations: a.personalizations,
        }),
      ),
  }));
