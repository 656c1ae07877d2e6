/** GraphQL for templates. */
import { builder, type Types } from "../graphql/builder.ts";
import type { TemplateRow } from "./repo.ts";
import * as service from "./service.ts";

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
