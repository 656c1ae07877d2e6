/**
 * REST handlers for templates: `GET|POST /api/v1/templates`, `GET|PATCH|DELETE
 * /api/v1/templates/:id` and the preview `POST /api/v1/templates/:id/render`.
 */
import type { Deps, Principal } from "../context.ts";
import { AppError } from "../errors.ts";
import { json, parseJson, readJson } from "../rest/problem.ts";
import * as service from "./service.ts";
import { type RenderedTemplate, renderedView, type TemplateList, templateView } from "./view.ts";

/** GET /api/v1/templates → 200 {data: [...]}, newest first (at most 500). */
export async function getTemplates(deps: Deps, p: Principal): Promise<Response> {
  return json({ data: (await service.listTemplates(deps, p, 500)).map(templateView) } satisfies TemplateList);
}

/** POST /api/v1/templates → 201 the template. */
export async function postTemplate(deps: Deps, p: Principal, req: Request): Promise<Response> {
  return json(templateView(await service.createTemplate(deps, p, await readJson(req))), 201);
}

/** GET /api/v1/templates/:id → 200 the template. */
export async function getTemplate(deps: Deps, p: Principal, id: string): Promise<Response> {
  const t = await service.getTemplate(deps, p, id);
  if (!t) throw new AppError("not_found", "template not found");
  return json(templateView(t));
}

/** PATCH /api/v1/templates/:id → 200 the template. */
export async function patchTemplate(deps: Deps, p: Principal, req: Request, id: string): Promise<Response> {
  return json(templateView(await service.updateTemplate(deps, p, id, await readJson(req))));
}

/** DELETE /api/v1/templates/:id → 204. */
export async function deleteTemplate(deps: Deps, p: Principal, id: string): Promise<Response> {
  await service.deleteTemplate(deps, p, id);
  return new Response(null, { status: 204 });
}

/** POST /api/v1/templates/:id/render → 200 {subject, html, text, missingVariables}; sends nothing. */
export async function postRender(deps: Deps, p: Principal, req: Request, id: string): Promise<Response> {
  // No body at all: render with nothing but the template's own values.
  const text = await req.text();
  const body = text.trim() === "" ? {} : parseJson(text);
  const rendered = await service.renderTemplatePreview(deps, p, id, body);
  return json(renderedView(rendered) satisfies RenderedTemplate);
}
