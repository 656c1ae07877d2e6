/**
 * The render sandbox: a child process that compiles and renders tenants' nunjucks templates.
 * `RenderPool` (render.ts) starts it as `deno run` with no `--allow-*` flag and a capped
 * heap, so a template can reach no file, network, environment or subprocess even if it got
 * past the guards below, and a template that loops or allocates without end is killed with
 * this process (a time limit kept by the parent), never with the service.
 *
 * Protocol: newline-delimited JSON. The parent writes one group per line,
 * `{ g, drop?, items: RenderItem[] }`; this process answers one line per item, in order, as
 * soon as it is done (`{ g, i, ok }` or `{ g, i, err }`), so the parent knows which item was
 * running when a limit was hit. `drop` lists cached sources the parent has forgotten, to
 * delete once the group's items are done.
 * The first line written is `{"ready":true}`.
 */
import nunjucks from "nunjucks";
import { lines } from "./ndjson.ts";
import { MAX_PART_BYTES, type RenderItem, type RenderPart, type RenderReply } from "./render.ts";

/** The most items `range()` may produce; more is an error, not a heap exhausted. */
export const MAX_RANGE_ITEMS = 10_000;

// No loaders: `{% include %}`, `{% import %}` and `{% extends %}` find nothing.
const htmlEnv = new nunjucks.Environment([], { autoescape: true, throwOnUndefined: false });
const plainEnv = new nunjucks.Environment([], { autoescape: false, throwOnUndefined: false });

/** nunjucks' `range`, refusing to build more than MAX_RANGE_ITEMS items. */
function boundedRange(start: number, stop?: number, step = 1): number[] {
  if (stop === undefined) [start, stop] = [0, start];
  if (typeof start !== "number" || typeof stop !== "number" || typeof step !== "number" || step === 0) {
    throw new Error("range() takes numbers and a step other than 0");
  }
  const n = Math.max(0, Math.ceil((stop - start) / step));
  if (!Number.isFinite(n) || n > MAX_RANGE_ITEMS) throw new Error(`range() is limited to ${MAX_RANGE_ITEMS} items`);
  return Array.from({ length: n }, (_, i) => start + i * step);
}
for (const env of [htmlEnv, plainEnv]) {
  env.addGlobal("range", boundedRange);
  // Filters, tests and globals are looked up by name in plain objects (`env.filters[name]`):
  // without a prototype, `x | valueOf` or `x is constructor` finds nothing instead of
  // Object.prototype's methods (which would hand a template the render Context).
  // deno-lint-ignore no-explicit-any
  const e = env as any;
  for (const table of [e.filters, e.tests, e.globals, e.extensions]) if (table) Object.setPrototypeOf(table, null);
}

// deno-lint-ignore no-explicit-any
const SafeString = (nunjucks as any).runtime.SafeString;

/** Whether `v` is template data: JSON-like objects and arrays, or nunjucks' SafeString. */
function isData(v: object): boolean {
  const proto = Object.getPrototypeOf(v);
  return proto === Object.prototype || proto === Array.prototype || proto === null || v instanceof SafeString;
}

/** Names no template may look up: the ways from a value to its constructor and Function. */
const FORBIDDEN = new Set(["constructor", "__proto__", "prototype", "__defineGetter__", "__lookupGetter__"]);

function refuse(name: unknown): never {
  throw new Error(`"${String(name).slice(0, 40)}" cannot be used in a template`);
}

// Every compiled template reads variables through runtime.contextOrFrameLookup and members
// (`a.b`, `a["b"]`) through runtime.memberLookup: guarding both keeps a template on its data.
// nunjucks' compiler emits `root(env, context, frame, runtime, cb)`, taking the runtime as a
// parameter, so each of our templates is given GUARDED (see `guard`) and nunjucks' own module
// stays as it is.
// deno-lint-ignore no-explicit-any
const runtime = (nunjucks as any).runtime;
let missing: Set<string> | null = null;
/** `name` as a variable of the template; see GUARDED. */
function contextOrFrameLookup(context: unknown, frame: unknown, name: string): unknown {
  if (FORBIDDEN.has(name)) refuse(name);
  const v = runtime.contextOrFrameLookup(context, frame, name);
  // A name found only on Object.prototype (`toString`, `valueOf`, …) is no variable.
  // deno-lint-ignore no-explicit-any
  const found = v !== undefined && (Object.prototype as any)[name] !== v;
  if (!found && missing) missing.add(name);
  return found ? v : undefined;
}
/**
 * `obj.name`: an own property of plain data (JSON-like objects, arrays, strings, SafeString)
 * and nothing else: no host object (a Context, a Frame) however it was reached.
 * Functions (range, cycler, macros) have no readable members; a method found on a prototype
 * is undefined. Calling a value that is an own function (cycler's `next`) keeps `this`.
 */
function memberLookup(obj: unknown, name: unknown): unknown {
  if (obj === undefined || obj === null) return undefined;
  const key = typeof name === "number" ? name : String(name);
  if (typeof key === "string" && FORBIDDEN.has(key)) refuse(key);
  if (typeof obj === "function") return undefined;
  if (typeof obj !== "object" && typeof obj !== "string") return undefined;
  if (typeof obj === "object" && !isData(obj)) return undefined;
  if (!Object.hasOwn(obj as object, key)) return undefined;
  const v = (obj as Record<string | number, unknown>)[key];
  return typeof v === "function" ? (...args: unknown[]) => v.apply(obj, args) : v;
}
/** nunjucks' runtime with both lookups guarded: what our templates run with. */
const GUARDED = Object.freeze({ ...runtime, contextOrFrameLookup, memberLookup });

type RootRender = (env: unknown, context: unknown, frame: unknown, runtime: unknown, cb: unknown) => unknown;

/**
 * Makes a compiled template run with GUARDED: `Template.render` passes nunjucks' runtime to
 * the template's root function, which we wrap (on this template object only) to hand it
 * GUARDED instead. Blocks and macros receive the runtime from the root, so they get it too.
 */
function guard(t: nunjucks.Template): nunjucks.Template {
  const target = t as unknown as { rootRenderFunc: RootRender };
  const root = target.rootRenderFunc;
  if (typeof root !== "function") throw new Error("internal: template not compiled");
  target.rootRenderFunc = (env, context, frame, _runtime, cb) => root(env, context, frame, GUARDED, cb);
  return t;
}

/**
 * Compiled templates by the parent's key; the parent says when to forget one. A source that
 * does not compile is kept as its error: the parent counts every source it sent as known.
 */
const compiled = new Map<string, nunjucks.Template | Error>();

function compile(part: RenderPart | undefined, env: nunjucks.Environment): void {
  if (!part || part.src === undefined || compiled.has(part.key)) return;
  try {
    compiled.set(part.key, guard(new nunjucks.Template(part.src, env, undefined, true)));
  } catch (e) {
    compiled.set(part.key, e instanceof Error ? e : new Error(String(e)));
  }
}

function template(part: RenderPart): nunjucks.Template {
  const t = compiled.get(part.key);
  if (t === undefined) throw new Error(`internal: no source for ${part.key}`);
  if (t instanceof Error) throw t;
  return t;
}

const encoder = new TextEncoder();

function limited(part: string, what: string): string {
  if (part.length * 3 > MAX_PART_BYTES && encoder.encode(part).length > MAX_PART_BYTES) {
    throw new Error(`the rendered ${what} is over the ${MAX_PART_BYTES / 1024 / 1024} MB limit`);
  }
  return part;
}

function message(e: unknown): string {
  const m = e instanceof Error ? e.message : String(e);
  // nunjucks prefixes "(unknown path) [Line 1, Column 3]\n  Error: …": keep it on one line.
  return m.replace(/\s+/g, " ").trim().slice(0, 500);
}

function run(item: RenderItem): RenderReply["ok"] {
  if (item.check !== undefined) {
    new nunjucks.Template(item.check, plainEnv, undefined, true);
    return {};
  }
  // Every source first: the parent counts each one it sent as compiled here, whatever fails next.
  compile(item.subject, plainEnv);
  compile(item.html, htmlEnv);
  compile(item.text, plainEnv);
  missing = new Set();
  try {
    const ctx = item.context ?? {};
    const subject = limited(template(item.subject!).render(ctx), "subject").replace(/[\r\n]+/g, " ").trim();
    const html = item.html ? limited(template(item.html).render(ctx), "html") : undefined;
    const text = item.text ? limited(template(item.text).render(ctx), "text") : undefined;
    return { subject, html, text, missing: [...missing].sort() };
  } finally {
    missing = null;
  }
}

function write(line: string) {
  const bytes = encoder.encode(line + "\n");
  let off = 0;
  while (off < bytes.length) off += Deno.stdout.writeSync(bytes.subarray(off));
}

function handle(line: string) {
  const group = JSON.parse(line) as { g: number; drop?: string[]; items: RenderItem[] };
  group.items.forEach((item, i) => {
    let reply: RenderReply;
    try {
      reply = { g: group.g, i, ok: run(item) };
    } catch (e) {
      reply = { g: group.g, i, err: message(e) };
    }
    write(JSON.stringify(reply));
  });
  // After the items: a source dropped by this group's bookkeeping may still be used in it.
  for (const k of group.drop ?? []) compiled.delete(k);
}

if (import.meta.main) {
  write(JSON.stringify({ ready: true }));
  for await (const line of lines(Deno.stdin.readable)) handle(line);
}
