/** Segment input shapes, shared by GraphQL and the services (and any future REST route). */
import { z } from "zod";
import { CONTACT_STATUSES, type SegmentRule } from "../db/tables.ts";
import { noLineBreaks } from "../validation.ts";

/**
 * Rule fields that are contact columns, with the camelCase aliases GraphQL users type.
 * Any other field is a key of `contacts.fields`. Names are matched exactly: `Email` is a
 * custom field, since custom keys are case-sensitive in jsonb.
 */
const STANDARD_FIELDS: Record<string, string> = {
  email: "email",
  first_name: "first_name",
  firstName: "first_name",
  last_name: "last_name",
  lastName: "last_name",
  company: "company",
  status: "status",
};

/** A custom field name: what a template can use as `{{name}}`, plus `.` and `-`. */
export const CUSTOM_FIELD_RE = /^[A-Za-z_][A-Za-z0-9_.-]{0,63}$/;

/** The rule operators (GraphQL `SegmentRuleOp`). */
export const SEGMENT_RULE_OPS = ["EQ", "NEQ", "CONTAINS", "EXISTS"] as const;

const field = z.string()
  .refine((v) => Object.hasOwn(STANDARD_FIELDS, v) || CUSTOM_FIELD_RE.test(v), {
    error:
      "must be email, first_name, last_name, company, status or a custom field name (a letter or _, then up to 63 letters, digits, _ . -)",
  })
  .transform((v) => Object.hasOwn(STANDARD_FIELDS, v) ? STANDARD_FIELDS[v] : v);

const Rule = z.strictObject({
  field,
  op: z.enum(SEGMENT_RULE_OPS, { error: `must be one of ${SEGMENT_RULE_OPS.join(", ")}` }),
  value: z.string().max(1000).nullish(),
}).superRefine((r, ctx) => {
  if (r.op === "EXISTS") return;
  // An empty value is refused rather than given a meaning: "is empty" is NOT EXISTS, and an
  // empty CONTAINS would match every contact with the field set.
  if (r.value == null || r.value === "") {
    ctx.addIssue({ code: "custom", path: ["value"], message: `is required for ${r.op}` });
  } else if (r.field === "status" && !(CONTACT_STATUSES as readonly string[]).includes(r.value.toLowerCase())) {
    ctx.addIssue({ code: "custom", path: ["value"], message: `must be one of ${CONTACT_STATUSES.join(", ")}` });
  }
}).transform((r): SegmentRule => ({
  field: r.field,
  op: r.op,
  // Stored normalised: EXISTS keeps no value, a status is lower-case like the column.
  value: r.op === "EXISTS" ? null : r.field === "status" ? r.value!.toLowerCase() : r.value!,
}));

/** createSegment: a name and up to 20 rules, ANDed (none = every contact). */
export const CreateSegmentInput = z.strictObject({
  name: z.string().trim().min(1).max(200).refine(...noLineBreaks),
  rules: z.array(Rule).max(20),
});
export type CreateSegmentInput = z.infer<typeof CreateSegmentInput>;
