/** GraphQL for contacts. */
import { CONTACT_STATUSES } from "../db/tables.ts";
import { builder, upperCaseValues } from "../graphql/builder.ts";
import { connectionType, toConnection } from "../graphql/connection.ts";
import { encodeCursor } from "../pagination.ts";
import type { ContactRow } from "./repo.ts";
import * as service from "./service.ts";

/** GraphQL `ContactStatus`: who may be mailed. */
export const ContactStatus = builder.enumType("ContactStatus", {
  values: upperCaseValues(CONTACT_STATUSES),
});

/** GraphQL `Contact`. */
export const Contact = builder.objectRef<ContactRow>("Contact").implement({
  fields: (t) => ({
    id: t.exposeID("id"),
    email: t.exposeString("email"),
    firstName: t.exposeString("first_name", { nullable: true }),
    lastName: t.exposeString("last_name", { nullable: true }),
    company: t.exposeString("company", { nullable: true }),
    fields: t.field({ type: "JSON", resolve: (c) => c.fields }),
    status: t.field({ type: ContactStatus, resolve: (c) => c.status }),
    createdAt: t.field({ type: "DateTime", resolve: (c) => c.created_at }),
    updatedAt: t.field({ type: "DateTime", resolve: (c) => c.updated_at }),
  }),
});

const ContactConnection = connectionType("Contact", Contact);

const CreateContactInput = builder.inputType("CreateContactInput", {
  fields: (t) => ({
    email: t.string({ required: true }),
    firstName: t.string(),
    lastName: t.string(),
    company: t.string(),
    fields: t.field({ type: "JSON", description: "Custom fields, usable in templates as {{name}}." }),
  }),
});

const UpdateContactInput = builder.inputType("UpdateContactInput", {
  fields: (t) => ({
    email: t.string(),
    firstName: t.string({ description: "null clears it." }),
    lastName: t.string({ description: "null clears it." }),
    company: t.string({ description: "null clears it." }),
    fields: t.field({ type: "JSON", description: "Replaces every custom field; null clears them." }),
    status: t.field({ type: ContactStatus, description: "SUBSCRIBED lifts a suppression." }),
  }),
});

builder.queryField("contact", (t) =>
  t.field({
    type: Contact,
    nullable: true,
    args: { id: t.arg.id(), email: t.arg.string() },
    resolve: (_, a, ctx) =>
      service.getContact(ctx.deps, ctx.principal, { id: a.id ? String(a.id) : null, email: a.email }),
  }));

builder.queryField("contacts", (t) =>
  t.field({
    type: ContactConnection,
    description: "Newest first.",
    args: {
      first: t.arg.int(),
      after: t.arg.string(),
      status: t.arg({ type: ContactStatus }),
      search: t.arg.string({ description: "Part of the address, a name or the company, any case." }),
      segmentId: t.arg.id({ description: "Only the segment's members." }),
    },
    resolve: async (_, a, ctx) => {
      const page = await service.listContacts(ctx.deps, ctx.principal, {
        ...a,
        segmentId: a.segmentId == null ? a.segmentId : String(a.segmentId),
      });
      return toConnection(page.rows, page.hasMore, encodeCursor);
    },
  }));

builder.mutationField("createContact", (t) =>
  t.field({
    type: Contact,
    args: { input: t.arg({ type: CreateContactInput, required: true }) },
    resolve: (_, a, ctx) => service.createContact(ctx.deps, ctx.principal, a.input),
  }));

builder.mutationField("updateContact", (t) =>
  t.field({
    type: Contact,
    args: { id: t.arg.id({ required: true }), input: t.arg({ type: UpdateContactInput, required: true }) },
    resolve: (_, a, ctx) => service.updateContact(ctx.deps, ctx.principal, String(a.id), a.input),
  }));
