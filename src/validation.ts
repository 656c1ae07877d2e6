/**
 * Shared validation pieces: parse with zod into an AppError that names every bad field,
 * and the refinements every header-bound field needs.
 */
import type { z } from "zod";
import { AppError, type FieldError } from "./errors.ts";

/**
 * Parses `input` with `schema`, or throws 422 `validation_failed` with one entry per issue
 * (`path` dotted, e.g. `recipients.3.to`; an unknown field of a strict object is named by
 * its own path, e.g. `personalisations`).
 */
export function parseInput<S extends z.ZodType>(schema: S, input: unknown): z.output<S> {
  const bad = unstorableString(input, []);
  if (bad) throw new AppError("validation_failed", `${bad.path}: ${bad.message}`, [bad]);
  const r = schema.safeParse(input);
  if (r.success) return r.data;
  const errors: FieldError[] = r.error.issues.flatMap((i) =>
    // A strict object's unknown fields: one entry each, named by its own path.
    i.code === "unrecognized_keys"
      ? i.keys.map((k) => ({ path: [...i.path, k].map(String).join("."), message: "is not a known field" }))
      : [{ path: i.path.map(String).join(".") || "(body)", message: i.message }]
  );
  const summary = errors.map((e) => `${e.path}: ${e.message}`).join("; ");
  throw new AppError("validation_failed", summary, errors);
}

/**
 * Postgres cannot store NUL in text or jsonb, nor a lone UTF-16 surrogate in jsonb: find
 * the first such string (key or value) anywhere in the input, so it is a 422, not a 500.
 */
function unstorableString(v: unknown, path: string[]): FieldError | null {
  const bad = (s: string) => s.includes("\u0000") || !s.isWellFormed();
  const message = "must not contain NUL characters or invalid Unicode";
  if (typeof v === "string") return bad(v) ? { path: path.join(".") || "(body)", message } : null;
  if (Array.isArray(v)) {
    for (let i = 0; i < v.length; i++) {
      const r = unstorableString(v[i], [...path, String(i)]);
      if (r) return r;
    }
  } else if (v !== null && typeof v === "object") {
    for (const [k, x] of Object.entries(v)) {
      // A bad key cannot be named safely; the object holding it is.
      if (bad(k)) return { path: path.join(".") || "(body)", message: `has a key that ${message}` };
      const r = unstorableString(x, [...path, k]);
      if (r) return r;
    }
  }
  return null;
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
  return v.length <= 254 && !hasControlChar(v) && EMAIL_RE.test(v);
}

/** True when `v` has an ASCII control character (U+0000–U+001F, U+007F). */
export function hasControlChar(v: string): boolean {
  for (let i = 0; i < v.length; i++) {
    const c = v.charCodeAt(i);
    if (c < 0x20 || c === 0x7f) return true;
  }
  return false;
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
