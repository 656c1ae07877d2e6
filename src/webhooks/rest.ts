/**
 * REST handlers for webhook endpoints: `GET|POST /api/v1/webhooks`,
 * `GET|PATCH|DELETE /api/v1/webhooks/:id`. Event types go out as `email.<type>`.
 */
import type { Deps, Principal } from "../context.ts";
import { json, readJson } from "../rest/problem.ts";
import * as service from "./service.ts";
import {
  endpointView,
  type WebhookEndpointCreated,
  type WebhookEndpointJson,
  type WebhookEndpointList,
} from "./view.ts";
import type { EndpointRow } from "./repo.ts";

/** An endpoint as REST shows it. */
export function endpointJson(e: EndpointRow): WebhookEndpointJson {
  const v = endpointView(e);
  return { ...v, eventTypes: v.eventTypes.map((t) => `email.${t}` as const) };
}

/** GET /api/v1/webhooks → 200 {data: [...]}. */
export async function getEndpoints(deps: Deps, p: Principal): Promise<Response> {
  return json({ data: (await service.listEndpoints(deps, p)).map(endpointJson) } satisfies WebhookEndpointList);
}

/** POST /api/v1/webhooks → 201 the endpoint with its `secret` (shown once). */
export async function postEndpoint(deps: Deps, p: Principal, req: Request): Promise<Response> {
  const { endpoint, secret } = await service.createEndpoint(deps, p, await readJson(req));
  return json({ ...endpointJson(endpoint), secret } satisfies WebhookEndpointCreated, 201);
}

/** GET /api/v1/webhooks/:id → 200 the endpoint. */
export async function getEndpoint(deps: Deps, p: Principal, id: string): Promise<Response> {
  return json(endpointJson(await service.getEndpoint(deps, p, id)));
}

/** PATCH /api/v1/webhooks/:id → 200 the endpoint. */
export async function patchEndpoint(deps: Deps, p: Principal, req: Request, id: string): Promise<Response> {
  return json(endpointJson(await service.updateEndpoint(deps, p, id, await readJson(req))));
}

/** DELETE /api/v1/webhooks/:id → 204. */
export async function deleteEndpoint(deps: Deps, p: Principal, id: string): Promise<Response> {
  await service.deleteEndpoint(deps, p, id);
  return new Response(null, { status: 204 });
}
