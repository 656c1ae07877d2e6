/** GraphQL for segments: `Segment`, `segment`/`segments`, `createSegment`. */
import { Contact } from "../contacts/schema.ts";
import type { SegmentRule as SegmentRuleRow } from "../db/tables.ts";
import { builder } from "../graphql/builder.ts";
import type { SegmentRow } from "./repo.ts";
import * as service from "./service.ts";

/** GraphQL `SegmentRuleOp`. */
export const SegmentRuleOp = builder.enumType("SegmentRuleOp", {
  values: {
    EQ: { value: "EQ", description: "Equals the value, ignoring case." },
    NEQ: { value: "NEQ", description: "Does not equal the value, ignoring case; a missing field matches." },
    CONTAINS: { value: "CONTAINS", description: "Has the value as a substring, ignoring case (no wildcards)." },
    EXISTS: { value: "EXISTS", description: "Is set and not empty; the value is ignored." },
  } as const,
});

/** GraphQL `SegmentRule`. */
export const SegmentRule = builder.objectRef<SegmentRuleRow>("SegmentRule").implement({
  fields: (t) => ({
    field: t.exposeString("field", {
      description: "email, first_name, last_name, company, status, or a custom field name.",
    }),
    op: t.field({ type: SegmentRuleOp, resolve: (r) => r.op }),
    value: t.string({ nullable: true, resolve: (r) => r.value ?? null }),
  }),
});

/** GraphQL `Segment`. */
export const Segment = builder.objectRef<SegmentRow>("Segment").implement({
  fields: (t) => ({
    id: t.exposeID("id"),
    name: t.exposeString("name"),
    rules: t.field({ type: [SegmentRule], description: "ANDed; none = every contact.", resolve: (s) => s.rules }),
    memberCount: t.int({
      description: "Contacts matching now, whatever their status (a send skips the unsubscribed).",
      resolve: (s, _, ctx) => service.memberCount(ctx.deps, s),
    }),
    preview: t.field({
      type: [Contact],
      description: "The newest matching contacts, at most 100.",
      args: { first: t.arg.int({ defaultValue: 10 }) },
      resolve: (s, a, ctx) => service.preview(ctx.deps, s, a.first ?? undefined),
    }),
    createdAt: t.field({ type: "DateTime", resolve: (s) => s.created_at }),
    updatedAt: t.field({ type: "DateTime", resolve: (s) => s.updated_at }),
  }),
});

const SegmentRuleInput = builder.inputType("SegmentRuleInput", {
  fields: (t) => ({
    field: t.string({
      required: true,
      description: "email, first_name (firstName), last_name (lastName), company, status, or a custom field name.",
    }),
    op: t.field({ type: SegmentRuleOp, required: true }),
    value: t.string({ description: "Required for EQ, NEQ and CONTAINS; for status one of its values." }),
  }),
});

const CreateSegmentInput = builder.inputType("CreateSegmentInput", {
  fields: (t) => ({
    name: t.string({ required: true }),
    rules: t.field({ type: [SegmentRuleInput], required: true, description: "At most 20, ANDed." }),
  }),
});

builder.queryField("segment", (t) =>
  t.field({
    type: Segment,
    nullable: true,
    args: { id: t.arg.id({ required: true }) },
    resolve: (_, a, ctx) => service.getSegment(ctx.deps, ctx.principal, String(a.id)),
  }));

builder.queryField("segments", (t) =>
  t.field({
    type: [Segment],
    description: "Newest first.",
    args: { first: t.arg.int() },
    resolve: (_, a, ctx) => service.listSegments(ctx.deps, ctx.principal, a.first ?? undefined),
  }));

builder.mutationField("createSegment", (t) =>
  t.field({
    type: Segment,
    args: { input: t.arg({ type: CreateSegmentInput, required: true }) },
    resolve: (_, a, ctx) => service.createSegment(ctx.deps, ctx.principal, a.input),
  }));
