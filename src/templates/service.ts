/** Templates: stored nunjucks subject/HTML/text with sender defaults. Syntax is checked on save. */
import type { Deps, Principal } from "../context.ts";
import { requireTenant } from "../context.ts";
import { AppError } from "../errors.ts";
import { isUuid, parseInput } from "../validation.ts";
import { CreateTemplateInput, RenderTemplateInput, UpdateTemplateInput } from "./inputs.ts";
import * as repo from "./repo.ts";
import { assertCompiles, type ContactFields, renderContext, type Rendered, RenderError } from "../mail/render.ts";
import { SharedCache } from "../cache.ts";
import { getContact } from "../contacts/service.ts";

/**
 * Templates as sends read them, by `account:template` (misses too), in every process: a
 * change made anywhere drops the entry when it commits (src/cache.ts); this TTL bounds a
 * change never announced. Delivery reads the template afresh.
 */
const templateCache = new SharedCache<repo.TemplateRow | undefined>("template", { ttlMs: 60_000 });

/** One of an account's templates as a send reads it (cached), or undefined. */
export function templateForSend(
  deps: Pick<Deps, "db">,
  accountId: string,
  templateId: string,
): Promise<repo.TemplateRow | undefined> {
  return templateCache.getOrLoad(`${accountId}:${templateId}`, () => repo.findTemplate(deps.db, accountId, templateId));
}

function columns(v: Partial<CreateTemplateInput>) {
  const out: Record<string, unknown> = {};
  const map: Record<string, string> = {
    name: "name",
    subject: "subject",
    html: "html",
    text: "text",
    fromEmail: "from_email",
    fromName: "from_name",
    replyTo: "reply_to",
    trackOpens: "track_opens",
    trackClicks: "track_clicks",
  };
  for (const [k, col] of Object.entries(map)) {
    const val = (v as Record<string, unknown>)[k];
    if (val === undefined) continue;
    // Tracking flags are not nullable: null means "back to the default" (on).
    out[col] = val === null && (k === "trackOpens" || k === "trackClicks") ? true : val;
  }
  return out;
}

/** Creates a template for the caller's account. */
export async function createTemplate(deps: Deps, p: Principal, input: unknown) {
  const t = requireTenant(p);
  const v = parseInput(CreateTemplateInput, input);
  await assertCompiles(deps.renderer, { subject: v.subject, html: v.html, text: v.text });
  const row = await repo.insertTemplate(deps.db, {
    ...(columns(v) as { name: string; subject: string }),
    account_id: t.accountId,
    updated_at: new Date(),
  });
  templateCache.drop(`${t.accountId}:${row.id}`); // a send may have asked for this id before it existed
  deps.log.info("template created", { accountId: t.accountId, templateId: row.id });
  return row;
}

/** Changes the given fields of one of the caller's templates; sends not yet rendered use the new version. */
export async function updateTemplate(deps: Deps, p: Principal, id: string, input: unknown) {
  const t = requireTenant(p);
  const v = parseInput(UpdateTemplateInput, input);
  await assertCompiles(deps.renderer, { subject: v.subject, html: v.html, text: v.text });
  const set = columns(v);
  if (!isUuid(id)) throw new AppError("not_found", "template not found");
  // One transaction: an update that would leave neither html nor text is rolled back.
  const row = await deps.db.transaction().execute(async (trx) => {
    const r = await repo.updateTemplate(trx, t.accountId, id, set);
    if (!r) throw new AppError("not_found", "template not found");
    if (!r.html && !r.text) {
      throw new AppError("validation_failed", "html: html or text is required", [{
        path: "html",
        message: "html or text is required",
      }]);
    }
    return r;
  });
  templateCache.drop(`${t.accountId}:${id}`);
  deps.log.info("template updated", { accountId: t.accountId, templateId: id });
  return row;
}

/** One of the caller's templates, or null. */
export async function getTemplate(deps: Deps, p: Principal, id: string) {
  const t = requireTenant(p);
  return isUuid(id) ? (await repo.findTemplate(deps.db, t.accountId, id)) ?? null : null;
}

/** The caller's templates, newest first. */
export function listTemplates(deps: Deps, p: Principal, first = 100) {
  const t = requireTenant(p);
  return repo.listTemplates(deps.db, t.accountId, Math.min(Math.max(first, 1), 500));
}

/** Marks one of the caller's templates deleted: new sends of it are refused (`template_not_found`); accepted ones still go out. */
export async function deleteTemplate(deps: Deps, p: Principal, id: string): Promise<void> {
  const t = requireTenant(p);
  if (!isUuid(id) || !await repo.deleteTemplate(deps.db, t.accountId, id)) {
    throw new AppError("not_found", "template not found");
  }
  templateCache.drop(`${t.accountId}:${id}`);
  deps.log.info("template deleted", { accountId: t.accountId, templateId: id });
}

/**
 * Renders one of the caller's templates as a send to `to` would be (the contact's fields,
 * then the personalizations), in the same sandbox as delivery; sends and creates nothing.
 * An unknown address renders as a new contact would (only `email`); without `to`, `email` is
 * left out, so a template using it lists it in `missingVariables`. Links are not rewritten
 * for tracking, and `unsubscribe_url` is a placeholder. A template that fails is a 422
 * `validation_failed` naming `template`.
 */
export async function renderTemplatePreview(deps: Deps, p: Principal, id: string, input: unknown): Promise<Rendered> {
  const t = requireTenant(p);
  const v = parseInput(RenderTemplateInput, input ?? {});
  const tpl = isUuid(id) ? await repo.findTemplate(deps.db, t.accountId, id) : undefined;
  if (!tpl) throw new AppError("not_found", "template not found");
  let contact: ContactFields = { email: v.to ?? "", first_name: null, last_name: null, company: null, fields: {} };
  if (v.to && isUuid(v.to)) {
    const found = await getContact(deps, p, { id: v.to });
    if (!found) throw new AppError("contact_not_found", "no contact of this account has that id");
    contact = found;
  } else if (v.to) {
    contact = (await getContact(deps, p, { email: v.to })) ?? contact;
  }
  const context = renderContext(contact, v.personalizations ?? {}, {
    unsubscribe_url: `${deps.publicUrl}/u/preview`,
  });
  if (!v.to) delete context.email;
  try {
    return await deps.renderer.render(tpl, tpl.subject, context);
  } catch (err) {
    if (!(err instanceof RenderError)) throw err;
    throw new AppError("validation_failed", `template: ${err.message}`, [{ path: "template", message: err.message }]);
  }
}
