/**
 * Checks real REST answers against the service's own `/api/v1/openapi.json`: the document is
 * validated once (npm `@seriousme/openapi-schema-validator`, OpenAPI 3.1), then each answer's
 * status must be documented for its operation, its body must match the documented schema (ajv's
 * JSON Schema 2020-12 build, strict, with ajv-formats) and its documented headers their
 * schemas. Used by tests/openapi_test.ts and, opt-in, by every `stack.api` call
 * (`startStack({ openapi: true })` or `PP_TEST_OPENAPI=1`, tests/helpers.ts).
 */
import { Validator } from "@seriousme/openapi-schema-validator";
import { Ajv2020, type ValidateFunction } from "ajv/dist/2020.js";
import addFormats from "ajv-formats";

// deno-lint-ignore no-explicit-any
type Json = any;

/** What the checker needs of an answer (helpers.ts JsonResponse). */
export interface Answer {
  status: number;
  headers: Headers;
  body: unknown;
}

/** A checker bound to one running service's document. */
export interface OpenApiChecker {
  /** The document as served. */
  doc: Json;
  /** Throws, naming what differs, when `answer` is not what the document says `method path` answers. */
  check(method: string, path: string, answer: Answer): void;
  /** Every `METHOD /path/{template} status` checked so far. */
  seen: Set<string>;
}

const COMPONENTS_ID = "urn:pigeon-perch:openapi";

/** The document's `#/components/…` references, pointed at the schema ajv holds them in. */
function relink(v: Json): Json {
  return JSON.parse(JSON.stringify(v).replaceAll('"#/components/schemas/', `"${COMPONENTS_ID}#/$defs/`));
}

/** Fetches and validates `${url}/api/v1/openapi.json`, and compiles its schemas as they are needed. */
export async function openApiChecker(url: string): Promise<OpenApiChecker> {
  const res = await fetch(`${url}/api/v1/openapi.json`);
  if (res.status !== 200) throw new Error(`GET /api/v1/openapi.json answered ${res.status}: ${await res.text()}`);
  const doc = await res.json();
  const verdict = await new Validator().validate(doc);
  if (!verdict.valid) throw new Error(`openapi.json is not valid OpenAPI 3.1: ${JSON.stringify(verdict.errors)}`);

  const ajv = new Ajv2020({ strict: true, allErrors: true });
  addFormats.default(ajv);
  ajv.addSchema({ $id: COMPONENTS_ID, $defs: relink(doc.components.schemas) });
  const compiled = new Map<string, ValidateFunction>();
  const validator = (key: string, schema: Json) => {
    let v = compiled.get(key);
    if (!v) compiled.set(key, v = ajv.compile(relink(schema)));
    return v;
  };
  const templates = Object.keys(doc.paths).map((t) => ({
    template: t,
    re: new RegExp(`^${t.replace(/\{\w+\}/g, "[^/]+")}$`),
  }));
  const headerOf = (h: Json) => h.$ref ? doc.components.headers[h.$ref.split("/").pop()] : h;
  const problem = { allOf: [{ $ref: "#/components/schemas/Problem" }] };
  const seen = new Set<string>();

  function mustMatch(what: string, key: string, schema: Json, value: unknown) {
    const v = validator(key, schema);
    if (!v(value)) {
      throw new Error(`${what} does not match openapi.json: ${ajv.errorsText(v.errors)}\n${JSON.stringify(value)}`);
    }
  }

  function check(method: string, path: string, answer: Answer) {
    const pathname = new URL(path, "http://x").pathname;
    const at = `${method} ${pathname} → ${answer.status}`;
    const found = templates.find((t) => t.re.test(pathname));
    const op = found && doc.paths[found.template][method.toLowerCase()];
    if (!op) {
      // Not a documented operation: under /api/ that is a problem (404 no route, 405, 401); else not ours.
      if (!pathname.startsWith("/api/") || pathname.startsWith("/api/v1/events/inbound")) return;
      if (found && answer.status !== 405) throw new Error(`${at}: ${method} is not documented for ${found.template}`);
      mustMatch(`${at} body`, "problem", problem, answer.body);
      return;
    }
    const key = `${method} ${found.template} ${answer.status}`;
    const documented = op.responses[String(answer.status)];
    if (!documented) {
      throw new Error(
        `${at}: status not documented (has ${Object.keys(op.responses).join(", ")}): ${JSON.stringify(answer.body)}`,
      );
    }
    seen.add(key);
    const type = answer.headers.get("content-type")?.split(";")[0].trim() ?? "";
    if (!documented.content) {
      if (answer.body !== "" && answer.body !== null) throw new Error(`${at}: documented without a body, has one`);
    } else {
      const media = documented.content[type];
      if (!media) throw new Error(`${at}: content-type ${type} is not documented (${Object.keys(documented.content)})`);
      mustMatch(`${at} body`, key, media.schema, answer.body);
    }
    for (const [name, h] of Object.entries<Json>(documented.headers ?? {})) {
      const header = headerOf(h);
      const value = answer.headers.get(name);
      if (value === null) {
        if (header.required) throw new Error(`${at}: required header ${name} is missing`);
        continue;
      }
      mustMatch(`${at} header ${name}`, `${key} ${name}`, header.schema, value);
    }
  }

  return { doc, check, seen };
}
