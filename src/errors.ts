/**
 * The one error type that services throw. Its `code` is a string from API.md; REST maps
 * it to problem+json (src/rest/problem.ts) and GraphQL puts it in `extensions.code`.
 * Anything that is not an AppError is unexpected: logged in full, answered masked.
 */

/** The codes of API.md with the HTTP status each one answers. */
export const ERROR_STATUS = {
  invalid_json: 400,
  unauthorized: 401,
  forbidden: 403,
  sending_paused: 403,
  not_found: 404,
  method_not_allowed: 405,
  not_cancellable: 409,
  idempotency_conflict: 409,
  validation_failed: 422,
  template_not_found: 422,
  contact_not_found: 422,
  segment_not_found: 422,
  domain_not_verified: 422,
  batch_too_large: 422,
  quota_exceeded: 429,
  rate_limited: 429,
  internal: 500,
} as const;

/** An error code of the public contract. */
export type ErrorCode = keyof typeof ERROR_STATUS;

/** One bad field: `path` is dotted (`recipients.3.to`). */
export interface FieldError {
  path: string;
  message: string;
}

/** A failure the caller caused or may act on; safe to show as is. */
export class AppError extends Error {
  readonly code: ErrorCode;
  readonly errors?: FieldError[];
  constructor(code: ErrorCode, message: string, errors?: FieldError[]) {
    super(message);
    this.name = "AppError";
    this.code = code;
    this.errors = errors;
  }
  /** The HTTP status of this error's code. */
  get status(): number {
    return ERROR_STATUS[this.code];
  }
}

/** Shorthand for a 422 `validation_failed` naming one field. */
export function invalid(path: string, message: string): AppError {
  return new AppError("validation_failed", `${path}: ${message}`, [{ path, message }]);
}

/** Whether a database error is a unique violation (of `constraint`, when given). */
export function isUniqueViolation(err: unknown, constraint?: string): boolean {
  const e = err as { code?: unknown; constraint?: unknown } | null;
  return e?.code === "23505" && (constraint === undefined || e.constraint === constraint);
}
