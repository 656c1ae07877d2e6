/**
 * `GET /api/v1/openapi.json`: the OpenAPI 3.1 description of the REST shim, generated from the
 * routes themselves. Each route of rest/router.ts's ROUTES carries a {@link RouteDoc}: its
 * summary, the zod schemas of its body, query and path parameters (the same schemas that
 * validate the request), its answers by status with their zod schemas (the views the handlers
 * answer, sends/view.ts, batches/view.ts), and the problem codes it answers. zod 4's
 * `z.toJSONSchema` writes every schema (the request's side of a codec: a `Date` field is its ISO
 * 8601 string); schemas with a `meta({ id })` become `components.schemas`. The problems every
 * route shares follow from the route itself: a key is always needed (401), a body can be
 * malformed or too large (400, 413, 422), an `idempotent` route may conflict (409), a path
 * with an id may name nothing (404), any call may be rate limited (429) or meet a database
 * that is away (503). A route added to ROUTES appears here with its `doc` and nothing else.
 */
import { z } from "zod";
import { ERROR_STATUS, type ErrorCode } from "../errors.ts";
import { MAX_IDEMPOTENCY_KEY } from "../idempotency/service.ts";
import type { Logger } from "../log.ts";
import { LARGE_BODY } from "./body.ts";
import { methodNotAllowed, Problem } from "./problem.ts";
import type { Route } from "./router.ts";

/** Where the document is served (no key needed). */
export const OPENAPI_PATH = "/api/v1/openapi.json";

/** The path parameter of `/…/:id` routes (`params` of their doc): an id that is not a uuid names nothing (404). */
export const ID_PARAM = { id: z.uuid().describe("The id; one that is not this account's answers 404.") };

/** One successful answer of a route: what it means and its JSON body (none for a 204). */
export interface ResponseDoc {
  description: string;
  schema?: z.ZodType;
}

/** How a route is described in openapi.json (see the module's comment for what is implied). */
export interface RouteDoc {
  /** One line: the operation's summary. */
  summary: string;
  /** More, in Markdown. */
  description?: string;
  /** The reference's section (an OpenAPI tag): `Sends`, `Batches`, … */
  tag: string;
  /** The JSON body: the zod schema the handler validates it with. */
  body?: z.ZodType;
  /** The query: a zod object whose keys are the parameters (the handler's schema). */
  query?: z.ZodObject;
  /** Schemas of path parameters by name (the names come from the route's pattern); default a string. */
  params?: Record<string, z.ZodType>;
  /** The successful answers by status. */
  responses: Record<number, ResponseDoc>;
  /** Problem codes (errors.ts) this route answers besides those every route of its kind does. */
  problems?: ErrorCode[];
}

// deno-lint-ignore no-explicit-any
type Json = any;

/** The problem codes every tenant route may answer (`forbidden`: a SENDING key's scope, or its domains). */
const EVERY_ROUTE: ErrorCode[] = ["unauthorized", "forbidden", "rate_limited", "internal", "unavailable"];

const REF = "#/components/schemas/";

/** The formats of JSON Schema 2020-12 and the OpenAPI format registry. */
const FORMATS = new Set([
  ..."date-time date time duration email idn-email hostname idn-hostname ipv4 ipv6 uri uri-reference".split(" "),
  ..."iri iri-reference uuid uri-template json-pointer relative-json-pointer regex".split(" "),
  ..."int32 int64 float double password byte binary".split(" "),
]);

/**
 * A route's pattern (router.ts `path()`: `/api/v1/sends/:id` as `^\/api\/v1\/sends\/(?<id>[^\/]+)$`)
 * as an OpenAPI path (`/api/v1/sends/{id}`) and its parameter names.
 */
export function openApiPath(pattern: RegExp): { path: string; params: string[] } {
  const params: string[] = [];
  const path = pattern.source.replace(/^\^|\$$/g, "").replace(/\(\?<(\w+)>\[\^\\?\/\]\+\)/g, (_, name) => {
    params.push(name);
    return `{${name}}`;
  }).replaceAll("\\/", "/");
  if (!/^\/[\w/{}.-]*$/.test(path)) throw new Error(`route pattern ${pattern} is not a path("…") pattern`);
  return { path, params };
}

/** `getSendsById`, `postSendsByIdCancel`: the method and the path after `/api/v1`. */
function operationId(method: string, path: string): string {
  const words = path.replace(/^\/api\/v1\//, "").split(/[/.]/).filter(Boolean)
    .map((w) => w.startsWith("{") ? `By${cap(w.slice(1, -1))}` : cap(w));
  return method.toLowerCase() + words.join("");
}

function cap(w: string): string {
  return w.charAt(0).toUpperCase() + w.slice(1);
}

/**
 * Every zod schema of the document, written by one `z.toJSONSchema` call (so a schema with an
 * id is one component, however many routes use it): `ref(schema)` is its JSON Schema, whose
 * `$ref`s point into `components` (the second value).
 */
function schemaWriter(schemas: z.ZodType[]): { ref: (s: z.ZodType) => Json; components: Record<string, Json> } {
  const unique = [...new Set(schemas)];
  const all = z.toJSONSchema(z.object(Object.fromEntries(unique.map((s, i) => [`s${i}`, s]))), {
    io: "input",
    target: "draft-2020-12",
    // zod names some checks as formats of its own (`starts_with`, `includes`, …), each with its pattern:
    // the pattern says it, and validators refuse formats they do not know.
    override: ({ jsonSchema }) => {
      if (typeof jsonSchema.format === "string" && !FORMATS.has(jsonSchema.format)) delete jsonSchema.format;
    },
  }) as Json;
  const relink = (v: Json): Json => JSON.parse(JSON.stringify(v).replaceAll('"#/$defs/', `"${REF}`));
  const components = relink(all.$defs ?? {});
  return { ref: (s) => relink(all.properties[`s${unique.indexOf(s)}`]), components };
}

/** A parameter's schema without the `null` that `nullish()` adds (a query string has no null). */
function notNull(s: Json): Json {
  if (Array.isArray(s.type)) {
    const types = s.type.filter((t: string) => t !== "null");
    return { ...s, type: types.length === 1 ? types[0] : types };
  }
  const rest = s.anyOf?.filter((x: Json) => x.type !== "null");
  if (rest?.length === 1) {
    const { anyOf: _, ...outer } = s;
    return { ...outer, ...rest[0] };
  }
  return s;
}

const HEADERS: Record<string, Json> = {
  "RateLimit-Limit": {
    description: "Requests per second this key may make (when rate limits are on).",
    schema: { type: "string" },
  },
  "RateLimit-Remaining": { description: "Requests left in this second.", schema: { type: "string" } },
  "Retry-After": { description: "Seconds to wait before retrying.", schema: { type: "string", pattern: "^\\d+$" } },
  "X-Quota-Limit": { description: "The account's monthly email limit, or `unlimited`.", schema: { type: "string" } },
  "X-Quota-Remaining": { description: "Emails left this month, or `unlimited`.", schema: { type: "string" } },
  "Idempotent-Replayed": {
    description: "`true` when this answer is the stored answer of an earlier request with the same Idempotency-Key.",
    schema: { type: "string", enum: ["true"] },
  },
  "WWW-Authenticate": { description: "The scheme to authenticate with.", schema: { type: "string" } },
};
const header = (name: string) => ({ [name]: { $ref: `#/components/headers/${name}` } });

/** The problem codes a route answers: its own, and those its kind implies. */
function problemCodes(route: Route, doc: RouteDoc, params: string[]): ErrorCode[] {
  const codes = new Set<ErrorCode>([...EVERY_ROUTE, ...(doc.problems ?? [])]);
  if (doc.body) { for (const c of ["invalid_json", "payload_too_large", "validation_failed"] as const) codes.add(c); }
  // Only a body that can be large holds a slot with a deadline (rest/body.ts BodyLease).
  if (doc.body && (route.maxBody ?? 0) > LARGE_BODY) codes.add("request_timeout");
  if (doc.query) codes.add("validation_failed");
  if (params.length) codes.add("not_found");
  if (route.idempotent) codes.add("idempotency_conflict").add("validation_failed");
  return [...codes];
}

/** The problem answers of a set of codes, one per status, each naming its codes. */
function problemResponses(codes: ErrorCode[]): Record<string, Json> {
  const out: Record<string, Json> = {};
  const byStatus = Map.groupBy(codes, (c) => ERROR_STATUS[c]);
  for (const [status, mine] of [...byStatus].sort(([a], [b]) => a - b)) {
    const headers = status === 401
      ? header("WWW-Authenticate")
      : status === 429 || status === 503
      ? header("Retry-After")
      : undefined;
    out[status] = {
      description: mine.map((c) => `\`${c}\``).join(", "),
      ...(headers ? { headers } : {}),
      content: {
        "application/problem+json": {
          schema: {
            allOf: [
              { $ref: `${REF}Problem` },
              { type: "object", properties: { status: { const: status }, code: { enum: mine } } },
            ],
          },
        },
      },
    };
  }
  return out;
}

/** One route as an OpenAPI operation; `ref` writes its schemas. */
function operation(route: Route, doc: RouteDoc, ref: (s: z.ZodType) => Json): { path: string; op: Json } {
  const { path, params } = openApiPath(route.pattern);
  const parameters: Json[] = params.map((name) => ({
    name,
    in: "path",
    required: true,
    schema: doc.params?.[name] ? notNull(ref(doc.params[name])) : { type: "string" },
  }));
  if (doc.query) {
    const q = ref(doc.query);
    for (const [name, schema] of Object.entries<Json>(q.properties ?? {})) {
      const { description, ...rest } = schema;
      parameters.push({
        name,
        in: "query",
        required: (q.required ?? []).includes(name),
        ...(description ? { description } : {}),
        schema: notNull(rest),
      });
    }
  }
  if (route.idempotent) {
    parameters.push({
      name: "Idempotency-Key",
      in: "header",
      required: false,
      description: "The same key with the same body within 24 h answers the first answer again and creates nothing.",
      schema: { type: "string", minLength: 1, maxLength: MAX_IDEMPOTENCY_KEY },
    });
  }
  const okHeaders = {
    ...header("RateLimit-Limit"),
    ...header("RateLimit-Remaining"),
    ...(route.method === "POST" ? { ...header("X-Quota-Limit"), ...header("X-Quota-Remaining") } : {}),
    ...(route.idempotent ? header("Idempotent-Replayed") : {}),
  };
  const responses: Record<string, Json> = {};
  for (const [status, r] of Object.entries(doc.responses)) {
    responses[status] = {
      description: r.description,
      headers: okHeaders,
      ...(r.schema ? { content: { "application/json": { schema: ref(r.schema) } } } : {}),
    };
  }
  Object.assign(responses, problemResponses(problemCodes(route, doc, params)));
  return {
    path,
    op: {
      operationId: operationId(route.method, path),
      summary: doc.summary,
      ...(doc.description ? { description: doc.description } : {}),
      tags: [doc.tag],
      ...(parameters.length ? { parameters } : {}),
      ...(doc.body
        ? { requestBody: { required: true, content: { "application/json": { schema: ref(doc.body) } } } }
        : {}),
      responses,
    },
  };
}

/** This document's own path: public, no key. */
const SELF = {
  get: {
    operationId: "getOpenapiJson",
    summary: "This document: the OpenAPI 3.1 description of the REST API",
    tags: ["Reference"],
    security: [],
    responses: { 200: { description: "OpenAPI 3.1", content: { "application/json": { schema: { type: "object" } } } } },
  },
};

/** What a route without a `doc` shows: its path, parameters and the problems of its kind (tests/openapi_test.ts fails on it). */
const UNDOCUMENTED: RouteDoc = { tag: "Undocumented", summary: "Not described yet", responses: {} };

/** The OpenAPI 3.1 document of `routes` (router.ts ROUTES): every route, described by its `doc`. */
export function openApiDocument(routes: readonly Route[]): Json {
  const docs = routes.map((r) => ({ route: r, doc: r.doc ?? UNDOCUMENTED }));
  const schemas = [
    Problem,
    ...docs.flatMap(({ doc }) => [
      doc.body,
      doc.query,
      ...Object.values(doc.params ?? {}),
      ...Object.values(doc.responses).map((r) => r.schema),
    ]),
  ].filter((s): s is z.ZodType => s !== undefined);
  const { ref, components } = schemaWriter(schemas);

  const paths: Record<string, Json> = { [OPENAPI_PATH]: SELF };
  for (const { route, doc } of docs) {
    const { path, op } = operation(route, doc, ref);
    paths[path] = { ...paths[path], [route.method.toLowerCase()]: op };
  }
  const tags = [...new Set(docs.map(({ doc }) => doc.tag)), "Reference"].map((name) => ({ name }));
  return {
    openapi: "3.1.1",
    info: {
      title: "Pigeon Perch Sends",
      version: "v1",
      description: [
        "The REST API of a self-hostable transactional email service. Every call but this document needs",
        "an API key: `X-API-Key: pp_live_…` (or `pp_test_…`), or `Authorization: Bearer <key>`.",
        "Errors are `application/problem+json` with a `code`; a request that fails creates nothing.",
        "A REST path that does not exist answers `404 not_found`, a known path with another method",
        "`405 method_not_allowed` with `Allow`.",
      ].join(" "),
    },
    tags,
    security: [{ apiKey: [] }, { bearer: [] }],
    paths,
    components: {
      schemas: components,
      headers: HEADERS,
      securitySchemes: {
        apiKey: { type: "apiKey", in: "header", name: "X-API-Key" },
        bearer: { type: "http", scheme: "bearer", description: "The API key as a bearer token." },
      },
    },
  };
}

/**
 * The handler of `GET /api/v1/openapi.json` for `routes`: the document is written once, on
 * the first request, and kept as text.
 */
export function openApiHandler(routes: readonly Route[], log: Logger): (req: Request) => Response {
  let text: string | null = null;
  return (req) => {
    if (req.method !== "GET" && req.method !== "HEAD") return methodNotAllowed(req.method, "GET, HEAD", log);
    text ??= JSON.stringify(openApiDocument(routes));
    return new Response(req.method === "HEAD" ? null : text, {
      headers: { "content-type": "application/json", "cache-control": "no-cache", "access-control-allow-origin": "*" },
    });
  };
}
