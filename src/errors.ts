/**
 * The one error type that services throw. Its `code` is a string from API.md; REST maps
 * it to problem+json (src/rest/problem.ts) and GraphQL puts it in `extensions.code`.
 * Anything that is not an AppError is unexpected: logged in full, answered masked.
 */

/** The codes of API.md with the HTTP status each one answers. */
export const ERROR_STATUS = {
  invalid_json: 400,
  query_too_complex: 400,
  unauthorized: 401,
  forbidden: 403,
  sending_paused: 403,
  not_found: 404,
  method_not_allowed: 405,
  not_cancellable: 409,
  not_reschedulable: 409,
  idempotency_conflict: 409,
  request_timeout: 408,
  payload_too_large: 413,
  validation_failed: 422,
  template_not_found: 422,
  contact_not_found: 422,
  segment_not_found: 422,
  domain_not_verified: 422,
  batch_too_large: 422,
  quota_exceeded: 429,
  rate_limited: 429,
  internal: 500,
  unavailable: 503,
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

/** Seconds a caller is asked to wait (`Retry-After`) while the database cannot be reached. */
export const UNAVAILABLE_RETRY_AFTER_S = 5;

// Socket errors, and SQLSTATE classes 08 (connection exception) and 57P (operator
// intervention: shutdown, crash, not yet accepting connections).
const UNREACHABLE = new Set(["ECONNREFUSED", "ECONNRESET", "ETIMEDOUT", "EPIPE", "EHOSTUNREACH", "ENOTFOUND"]);
const UNREACHABLE_MESSAGES = [
  "Connection terminated",
  "timeout exceeded when trying to connect",
  "Client has encountered a connection error",
  "Connection terminated unexpectedly",
  "terminating connection due to administrator command",
];

/**
 * Whether an error means Postgres cannot be reached right now (stopped, restarting, out of
 * connections, a broken connection) rather than a bug: such an error is answered `503
 * unavailable` with Retry-After, and the work is retried, never failed.
 */
export function isDatabaseUnavailable(err: unknown): boolean {
  for (let e = err as { code?: unknown; message?: unknown; cause?: unknown } | null, i = 0; e && i < 4; i++) {
    const code = typeof e.code === "string" ? e.code : "";
    if (UNREACHABLE.has(code) || code.startsWith("08") || code.startsWith("57P")) return true;
    const message = typeof e.message === "string" ? e.message : "";
    if (UNREACHABLE_MESSAGES.some((m) => message.includes(m))) return true;
    e = e.cause as typeof e;
  }
  return false;
}

/** The AppError a caller sees for `err`: itself, `unavailable` when the database is away, else null (unexpected). */
export function asAppError(err: unknown): AppError | null {
  if (err instanceof AppError) return err;
  if (isDatabaseUnavailable(err)) {
    return new AppError("unavailable", "the database cannot be reached; retry shortly");
  }
  return null;
}

/** An SMTP reply: the basic code and the enhanced status code (RFC 3463) before its text. */
export interface SmtpReply {
  code: number;
  status: string;
}

/**
 * The reply of SMTP submission (API.md "SMTP submission") for an error code: the same
 * codes as HTTP, said the way a mail client acts on them (4xx: it retries; 5xx: it gives up
 * and tells its user). Anything without an entry is the message's fault (550 5.6.0) when it
 * is a 4xx in HTTP, else ours (451 4.3.0: try again).
 */
const SMTP_REPLY: Partial<Record<ErrorCode, SmtpReply>> = {
  unauthorized: { code: 535, status: "5.7.8" },
  forbidden: { code: 550, status: "5.7.1" },
  domain_not_verified: { code: 550, status: "5.7.1" },
  quota_exceeded: { code: 550, status: "5.7.0" },
  sending_paused: { code: 550, status: "5.7.0" },
  rate_limited: { code: 451, status: "4.7.0" },
  // The first submission with the key is still running (or another message used it): retry.
  idempotency_conflict: { code: 451, status: "4.3.0" },
};

/** The SMTP reply for an error (see SMTP_REPLY); `null` error: an unexpected one, ours. */
export function smtpReplyOf(err: AppError | null): SmtpReply {
  if (!err) return { code: 451, status: "4.3.0" };
  return SMTP_REPLY[err.code] ?? (err.status < 500 ? { code: 550, status: "5.6.0" } : { code: 451, status: "4.3.0" });
}
