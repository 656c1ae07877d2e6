/**
 * Template rendering with nunjucks. HTML is autoescaped; subject and text are not HTML,
 * so they are rendered without HTML escaping (an `&` in a subject stays an `&`), and the
 * subject's line breaks are folded to spaces so no value can add a header.
 * Compiled templates are cached by template id and version.
 */
import nunjucks from "nunjucks";

const htmlEnv = new nunjucks.Environment(null, { autoescape: true, throwOnUndefined: false });
const plainEnv = new nunjucks.Environment(null, { autoescape: false, throwOnUndefined: false });

// Every variable lookup of a compiled template goes through runtime.contextOrFrameLookup;
// wrapping it lets a render list the names that resolved to nothing. Rendering is
// synchronous, so one module-level collector is enough.
let missing: Set<string> | null = null;
// deno-lint-ignore no-explicit-any
const runtime = (nunjucks as any).runtime;
const lookup = runtime.contextOrFrameLookup;
runtime.contextOrFrameLookup = (context: unknown, frame: unknown, name: string) => {
  const v = lookup(context, frame, name);
  if (v === undefined && missing) missing.add(name);
  return v;
};

/** The parts of a stored template that rendering needs. */
export interface TemplateSource {
  id: string;
  updated_at: Date;
  html: string | null;
  text: string | null;
}

/** The contact values a template can use. */
export interface ContactFields {
  email: string;
  first_name: string | null;
  last_name: string | null;
  company: string | null;
  fields: Record<string, unknown>;
}

/** A rendered message body. */
export interface Rendered {
  subject: string;
  html?: string;
  text?: string;
  /** Variables the template used that neither the contact nor the personalizations had. */
  missingVariables: string[];
}

const cache = new Map<string, nunjucks.Template>();
const CACHE_MAX = 5_000;

function compiled(key: string, src: string, env: nunjucks.Environment): nunjucks.Template {
  let t = cache.get(key);
  if (!t) {
    t = new nunjucks.Template(src, env, undefined, true);
    if (cache.size >= CACHE_MAX) cache.delete(cache.keys().next().value!);
    cache.set(key, t);
  }
  return t;
}

/**
 * Checks that `src` compiles; returns the compiler's message when it does not.
 * Used to refuse a broken template when it is saved, not when it is sent.
 */
export function templateError(src: string): string | null {
  try {
    new nunjucks.Template(src, plainEnv, undefined, true);
    return null;
  } catch (e) {
    return e instanceof Error ? e.message.replace(/\s+/g, " ").trim() : String(e);
  }
}

/**
 * The render context: contact fields, then custom fields, then the send's personalizations
 * (which win over both), then `extra` — values the service owns, such as `unsubscribe_url`,
 * which a personalization must not replace.
 */
export function renderContext(
  contact: ContactFields,
  personalizations: Record<string, unknown>,
  extra: Record<string, unknown> = {},
): Record<string, unknown> {
  const base: Record<string, unknown> = { email: contact.email };
  if (contact.first_name != null) base.first_name = contact.first_name;
  if (contact.last_name != null) base.last_name = contact.last_name;
  if (contact.company != null) base.company = contact.company;
  return { ...base, ...contact.fields, ...personalizations, ...extra };
}

/** Renders `subjectSrc` (the send's, fixed at acceptance) and the template's HTML and text with `context`. */
export function render(tpl: TemplateSource, subjectSrc: string, context: Record<string, unknown>): Rendered {
  const v = tpl.updated_at.getTime();
  missing = new Set();
  try {
    const subject = compiled(`subject:${subjectSrc}`, subjectSrc, plainEnv).render(context).replace(/[\r\n]+/g, " ")
      .trim();
    const html = tpl.html ? compiled(`${tpl.id}:${v}:html`, tpl.html, htmlEnv).render(context) : undefined;
    const text = tpl.text ? compiled(`${tpl.id}:${v}:text`, tpl.text, plainEnv).render(context) : undefined;
    return { subject, html, text, missingVariables: [...missing].sort() };
  } finally {
    missing = null;
  }
}
