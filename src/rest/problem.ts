/**
 * The one mapping from errors to REST answers: RFC 9457 problem+json with the `code`
 * of API.md. A database that cannot be reached is `503 unavailable` with Retry-After;
 * other unexpected errors are logged in full and answered as a bare 500.
 */
import { z } from "zod";
import { AppError, asAppError, ERROR_STATUS, type ErrorCode, UNAVAILABLE_RETRY_AFTER_S } from "../errors.ts";
import type { Logger } from "../log.ts";

const TITLES: Record<string, string> = {
  400: "Bad Request",
  401: "Unauthorized",
  403: "Forbidden",
  404: "Not Found",
  405: "Method Not Allowed",
  409: "Conflict",
  413: "Content Too Large",
  422: "Unprocessable Content",
  429: "Too Many Requests",
  500: "Internal Server Error",
  503: "Service Unavailable",
};

/** Every problem answer's body (API.md "Errors (REST)"); its JSON Schema is openapi.json's `Problem`. */
export const Problem = z.strictObject({
  type: z.url().describe("A URI naming the problem's code."),
  title: z.string().describe("The status's reason phrase."),
  status: z.int(),
  detail: z.string().describe("What went wrong, for a person."),
  code: z.enum(Object.keys(ERROR_STATUS) as [ErrorCode, ...ErrorCode[]]),
  errors: z.array(z.strictObject({ path: z.string(), message: z.string() })).optional()
    .describe("Each bad field; `path` is dotted, e.g. `recipients.3.to`."),
}).meta({ id: "Problem", description: "RFC 9457 problem details, with the `code` of API.md." });
export type Problem = z.infer<typeof Problem>;

/** A problem+json response for any thrown value. */
export function problemResponse(err: unknown, log: Logger, context: Record<string, unknown> = {}): Response {
  const e = asAppError(err);
  if (!e) log.error("unexpected error", { ...context, err });
  else if (e.code === "unavailable") log.warn("database unavailable", { ...context, err: String(err) });
  const code = e?.code ?? "internal";
  const status = ERROR_STATUS[code];
  const body: Problem = {
    type: `https://docs.pigeonperch.dev/errors/${code}`,
    title: TITLES[status] ?? "Error",
    status,
    detail: e?.message ?? "An unexpected error occurred.",
    code,
  };
  if (e?.errors) body.errors = e.errors;
  const headers = new Headers({ "content-type": "application/problem+json" });
  if (status === 401) headers.set("www-authenticate", 'Bearer realm="pigeon-perch"');
  if (status === 503) headers.set("retry-after", String(UNAVAILABLE_RETRY_AFTER_S));
  return new Response(JSON.stringify(body), { status, headers });
}

/** The 405 `method_not_allowed` of a known path asked with another method; `allow` lists its methods. */
export function methodNotAllowed(method: string, allow: string, log: Logger): Response {
  const res = problemResponse(new AppError("method_not_allowed", `${method} is not allowed here; use ${allow}`), log);
  res.headers.set("allow", allow);
  return res;
}

/** A JSON response. */
export function json(body: unknown, status = 200, headers?: HeadersInit): Response {
  const h = new Headers(headers);
  h.set("content-type", "application/json");
  return new Response(JSON.stringify(body), { status, headers: h });
}

/**
 * Reads a JSON object body; 400 `invalid_json` for anything that is not JSON. The body must
 * be bounded already: rest/middleware.ts reads every REST body up to its route's limit (rest/body.ts)
 * and hands the handler that copy.
 */
export async function readJson(req: Request): Promise<unknown> {
  return parseJson(await req.text());
}

/** JSON text parsed; 400 `invalid_json` for anything that is not JSON. */
export function parseJson(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    throw new AppError("invalid_json", "the request body is not valid JSON");
  }
}
