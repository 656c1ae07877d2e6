/**
 * Shared validation pieces: parse with zod into an AppError that names every bad field,
 * and the refinements every header-bound field needs.
 */
import type { z } from "zod";
import { AppError, type FieldError } from "./errors.ts";

/**
 * Parses `input` with `schema`, or throws 422 `validation_failed` with one entry per issue
 * (`path` dotted, e.g. `recipients.3.to`).
 */
export function parseInput<S extends z.ZodType>(schema: S, input: unknown): z.output<S> {
  const r = schema.safeParse(input);
  if (r.success) return r.data;
  const errors: FieldError[] = r.error.issues.map((i) => ({
    path: i.path.map(String).join(".") || "(body)",
    message: i.message,
  }));
  const summary = errors.map((e) => `${e.path}: ${e.message}`).join("; ");
  throw new AppError("validation_failed", summary, errors);
}

/** Refinement for header-bound text: CR or LF would let a caller inject headers. */
export const noLineBreaks = [
  (v: string | null | undefined) => v == null || !/[\r\n]/.test(v),
  { message: "must not contain line breaks" },
] as const;

/** An RFC 5321-sized email address, without display name. */
export const EMAIL_RE =
  /^[^\s@<>()[\]\\,;:"]+@[A-Za-z0-9](?:[A-Za-z0-9-]{0,62}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,62}[A-Za-z0-9])?)+$/;

/** True for a plain address like `a@b.co` (no display name, at most 254 characters). */
export function isEmail(v: string): boolean {
  return v.length <= 254 && EMAIL_RE.test(v);
}

/** The domain of an address, lower-cased. */
export function domainOf(email: string): string {
  return email.slice(email.lastIndexOf("@") + 1).toLowerCase();
}

const UUID_RE = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

/** True for a canonical uuid. */
export function isUuid(v: string): boolean {
  return UUID_RE.test(v);
}

/** Ids in paths and arguments: anything that is not a uuid cannot exist (404, not a 500). */
export function assertUuid(id: string): string {
  if (!isUuid(id)) throw new AppError("not_found", "not found");
  return id;
}
