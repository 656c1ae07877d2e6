/**
 * The REST shim under `/api/v1`: its routes, and the dispatch that answers 404 for an unknown
 * path, 405 (with Allow) for a known path with another method, 401 without a tenant's API
 * key, and otherwise runs the route through the middleware (middleware.ts).
 */
import { authenticate } from "../accounts/service.ts";
import { type Deps, forRequest, type Principal } from "../context.ts";
import { AppError } from "../errors.ts";
import type { RateLimiter } from "../ratelimit.ts";
import { z } from "zod";
import * as batches from "../batches/rest.ts";
import { CreateBatchInput, CreateSegmentSendInput } from "../batches/inputs.ts";
import { BatchAccepted, BatchCancelled, BatchRescheduled, BatchView, SegmentSendAccepted } from "../batches/view.ts";
import { CreateSendInput, ListSendsInput, RescheduleInput } from "../sends/inputs.ts";
import { SendPage, SendView, SendWithEvents } from "../sends/view.ts";
import { CreateWebhookEndpointInput, UpdateWebhookEndpointInput } from "../webhooks/inputs.ts";
import { WebhookEndpointCreated, WebhookEndpointJson, WebhookEndpointList } from "../webhooks/view.ts";
import * as sends from "../sends/rest.ts";
import * as webhooks from "../webhooks/rest.ts";
import * as templates from "../templates/rest.ts";
import * as stats from "../stats/rest.ts";
import { StatsInput } from "../stats/inputs.ts";
import { StatsList } from "../stats/view.ts";
import { CreateTemplateInput, RenderTemplateInput, UpdateTemplateInput } from "../templates/inputs.ts";
import { RenderedTemplate, TemplateJson, TemplateList } from "../templates/view.ts";
import { BODY_LIMITS } from "./body.ts";
import { requestIdFor } from "./request_id.ts";
import { tenantCall } from "./middleware.ts";
import { ID_PARAM, OPENAPI_PATH, openApiHandler, type RouteDoc } from "./openapi.ts";
import { methodNotAllowed, problemResponse } from "./problem.ts";

/** A route's handler: the caller, the bounded request, the path's parameters. */
export type Handler = (deps: Deps, p: Principal, req: Request, params: Record<string, string>) => Promise<Response>;

/**
 * A path pattern (`/api/v1/sends/:id`) as an anchored RegExp with named groups. Routing by
 * the pathname alone: URLPattern matched every part of the URL, ~5% of a GraphQL read's CPU.
 */
function path(pattern: string): RegExp {
  return new RegExp(`^${pattern.replace(/:(\w+)/g, "(?<$1>[^/]+)")}$`);
}

/**
 * The REST routes: method, path pattern, handler; `idempotent` routes honour Idempotency-Key;
 * `maxBody` is the route's body limit in bytes (default `BODY_LIMITS.rest`); `doc` describes
 * the route in `/api/v1/openapi.json` (rest/openapi.ts), which lists every route.
 */
/** One REST route (see ROUTES). */
export interface Route {
  method: string;
  pattern: RegExp;
  handler: Handler;
  idempotent?: boolean;
  maxBody?: number;
  doc?: RouteDoc;
}

/** Every REST route; openapi.json (rest/openapi.ts) is written from this list. */
export const ROUTES: Route[] = [
  {
    method: "POST",
    pattern: path("/api/v1/sends"),
    handler: (d, p, r) => sends.postSend(d, p, r),
    idempotent: true,
    maxBody: BODY_LIMITS.send,
    doc: {
      tag: "Sends",
      summary: "Send an email through a template, now or at `scheduledAt`",
      description: "To one recipient (`to`: an address or a contact uuid), or with `segmentId` instead of `to` " +
        "to every subscribed member of a segment (expanded by a job; answered with its batch).",
      body: z.union([CreateSendInput, CreateSegmentSendInput]),
      responses: {
        202: {
          description: "Accepted: the Send, or for a segment the batch that expands it",
          schema: z.union([SendView, SegmentSendAccepted]),
        },
      },
      problems: [
        "template_not_found",
        "contact_not_found",
        "segment_not_found",
        "domain_not_verified",
        "sending_paused",
        "quota_exceeded",
      ],
    },
  },
  {
    method: "GET",
    pattern: path("/api/v1/sends"),
    handler: (d, p, r) => sends.getSends(d, p, r),
    doc: {
      tag: "Sends",
      summary: "List sends, newest first",
      query: ListSendsInput,
      responses: {
        200: { description: "A page of sends; pass `nextCursor` as `cursor` for the next", schema: SendPage },
      },
    },
  },
  {
    method: "POST",
    pattern: path("/api/v1/sends/batch"),
    handler: (d, p, r) => batches.postBatch(d, p, r),
    idempotent: true,
    maxBody: BODY_LIMITS.batch,
    doc: {
      tag: "Batches",
      summary: "Send one template to 1–1,000 recipients, all or nothing",
      description: "One bad recipient rejects the whole request, with its index in `errors` (`recipients.3.to`).",
      body: CreateBatchInput,
      responses: { 202: { description: "Accepted: the batch and each of its sends, in order", schema: BatchAccepted } },
      problems: [
        "batch_too_large",
        "template_not_found",
        "contact_not_found",
        "domain_not_verified",
        "sending_paused",
        "quota_exceeded",
      ],
    },
  },
  {
    method: "GET",
    pattern: path("/api/v1/sends/:id"),
    handler: (d, p, _r, a) => sends.getSend(d, p, a.id),
    doc: {
      tag: "Sends",
      summary: "A send with its events, oldest first",
      params: ID_PARAM,
      responses: { 200: { description: "The send", schema: SendWithEvents } },
    },
  },
  {
    method: "PATCH",
    pattern: path("/api/v1/sends/:id"),
    handler: (d, p, r, a) => sends.patchSend(d, p, r, a.id),
    doc: {
      tag: "Sends",
      summary: "Reschedule a scheduled or queued send",
      description: "A time ahead makes it `scheduled` for then; a time past or now makes it `queued`, due at once. " +
        "Its quota unit stays reserved. A send already `sending` or finished answers 409 `not_reschedulable`.",
      params: ID_PARAM,
      body: RescheduleInput,
      responses: { 200: { description: "The send at its new time", schema: SendView } },
      problems: ["not_reschedulable"],
    },
  },
  {
    method: "POST",
    pattern: path("/api/v1/sends/:id/cancel"),
    handler: (d, p, _r, a) => sends.postCancel(d, p, a.id),
    idempotent: true,
    doc: {
      tag: "Sends",
      summary: "Cancel a scheduled or queued send",
      params: ID_PARAM,
      responses: { 200: { description: "The send, now `cancelled`", schema: SendView } },
      problems: ["not_cancellable"],
    },
  },
  {
    method: "GET",
    pattern: path("/api/v1/batches/:id"),
    handler: (d, p, _r, a) => batches.getBatch(d, p, a.id),
    doc: {
      tag: "Batches",
      summary: "A batch (or segment send) with its sends counted by status",
      params: ID_PARAM,
      responses: { 200: { description: "The batch", schema: BatchView } },
    },
  },
  {
    method: "PATCH",
    pattern: path("/api/v1/batches/:id"),
    handler: (d, p, r, a) => batches.patchBatch(d, p, r, a.id),
    doc: {
      tag: "Batches",
      summary: "Reschedule every send of a batch that is still scheduled or queued",
      description: "As `PATCH /api/v1/sends/{id}` for each; the others are left as they are. A segment send still " +
        "expanding answers 409 `not_reschedulable`.",
      params: ID_PARAM,
      body: RescheduleInput,
      responses: { 200: { description: "The batch, and how many sends this call moved", schema: BatchRescheduled } },
      problems: ["not_reschedulable"],
    },
  },
  {
    method: "POST",
    pattern: path("/api/v1/batches/:id/cancel"),
    handler: (d, p, _r, a) => batches.postCancelBatch(d, p, a.id),
    idempotent: true,
    doc: {
      tag: "Batches",
      summary: "Cancel every send of a batch that is still scheduled or queued",
      params: ID_PARAM,
      responses: { 200: { description: "The batch, and how many sends this call cancelled", schema: BatchCancelled } },
    },
  },
  {
    method: "GET",
    pattern: path("/api/v1/stats"),
    handler: (d, p, r) => stats.getStats(d, p, r),
    doc: {
      tag: "Stats",
      summary: "Counts and rates by day, week or month, for all sends or one tag",
      description: "From a rollup the event pipeline keeps current: every period of the range (empty ones as " +
        "zeros), oldest first. Opens and clicks count sends (the first of each), not every event.",
      query: StatsInput,
      responses: { 200: { description: "One row per period", schema: StatsList } },
    },
  },
  {
    method: "GET",
    pattern: path("/api/v1/templates"),
    handler: (d, p) => templates.getTemplates(d, p),
    doc: {
      tag: "Templates",
      summary: "The account's templates, newest first",
      responses: { 200: { description: "Every template (at most 500)", schema: TemplateList } },
    },
  },
  {
    method: "POST",
    pattern: path("/api/v1/templates"),
    handler: (d, p, r) => templates.postTemplate(d, p, r),
    maxBody: BODY_LIMITS.template,
    doc: {
      tag: "Templates",
      summary: "Create a template",
      description:
        "Subject, HTML and text are nunjucks, checked in the render sandbox: one that does not compile is a 422.",
      body: CreateTemplateInput,
      responses: { 201: { description: "The template", schema: TemplateJson } },
    },
  },
  {
    method: "GET",
    pattern: path("/api/v1/templates/:id"),
    handler: (d, p, _r, a) => templates.getTemplate(d, p, a.id),
    doc: {
      tag: "Templates",
      summary: "A template",
      params: ID_PARAM,
      responses: { 200: { description: "The template", schema: TemplateJson } },
    },
  },
  {
    method: "PATCH",
    pattern: path("/api/v1/templates/:id"),
    handler: (d, p, r, a) => templates.patchTemplate(d, p, r, a.id),
    maxBody: BODY_LIMITS.template,
    doc: {
      tag: "Templates",
      summary: "Change some of a template's fields",
      description: "Sends not yet rendered use the new version. `null` clears an optional field.",
      params: ID_PARAM,
      body: UpdateTemplateInput,
      responses: { 200: { description: "The template", schema: TemplateJson } },
    },
  },
  {
    method: "DELETE",
    pattern: path("/api/v1/templates/:id"),
    handler: (d, p, _r, a) => templates.deleteTemplate(d, p, a.id),
    doc: {
      tag: "Templates",
      summary: "Delete a template",
      description: "New sends of it answer 422 `template_not_found`; sends accepted before still go out.",
      params: ID_PARAM,
      responses: { 204: { description: "Deleted" } },
    },
  },
  {
    method: "POST",
    pattern: path("/api/v1/templates/:id/render"),
    handler: (d, p, r, a) => templates.postRender(d, p, r, a.id),
    doc: {
      tag: "Templates",
      summary: "Render a template as a send to `to` would be (a preview); sends and creates nothing",
      description: "Through the same sandbox as delivery. A contact's fields fill the variables, then the " +
        "personalizations; `missingVariables` names what nothing filled. Links are not rewritten for tracking.",
      params: ID_PARAM,
      body: RenderTemplateInput,
      responses: { 200: { description: "The rendered parts", schema: RenderedTemplate } },
      problems: ["contact_not_found"],
    },
  },
  {
    method: "GET",
    pattern: path("/api/v1/webhooks"),
    handler: (d, p) => webhooks.getEndpoints(d, p),
    doc: {
      tag: "Webhooks",
      summary: "The account's webhook endpoints",
      responses: { 200: { description: "Every endpoint", schema: WebhookEndpointList } },
    },
  },
  {
    method: "POST",
    pattern: path("/api/v1/webhooks"),
    handler: (d, p, r) => webhooks.postEndpoint(d, p, r),
    doc: {
      tag: "Webhooks",
      summary: "Add an endpoint that every event (or the listed `eventTypes`) is POSTed to",
      description: "Signed as Standard Webhooks with the `secret` answered here, and only here. A URL that " +
        "resolves to a loopback, private or link-local address is refused (422).",
      body: CreateWebhookEndpointInput,
      responses: { 201: { description: "The endpoint and its secret", schema: WebhookEndpointCreated } },
    },
  },
  {
    method: "GET",
    pattern: path("/api/v1/webhooks/:id"),
    handler: (d, p, _r, a) => webhooks.getEndpoint(d, p, a.id),
    doc: {
      tag: "Webhooks",
      summary: "A webhook endpoint",
      params: ID_PARAM,
      responses: { 200: { description: "The endpoint", schema: WebhookEndpointJson } },
    },
  },
  {
    method: "PATCH",
    pattern: path("/api/v1/webhooks/:id"),
    handler: (d, p, r, a) => webhooks.patchEndpoint(d, p, r, a.id),
    doc: {
      tag: "Webhooks",
      summary: "Change an endpoint's URL, event types, description, or enable it again",
      params: ID_PARAM,
      body: UpdateWebhookEndpointInput,
      responses: { 200: { description: "The endpoint", schema: WebhookEndpointJson } },
    },
  },
  {
    method: "DELETE",
    pattern: path("/api/v1/webhooks/:id"),
    handler: (d, p, _r, a) => webhooks.deleteEndpoint(d, p, a.id),
    doc: {
      tag: "Webhooks",
      summary: "Remove an endpoint",
      params: ID_PARAM,
      responses: { 204: { description: "Removed" } },
    },
  },
];

/**
 * The dispatch of `/api/…` requests (the inbound webhooks excepted, see app.ts); `limiter`
 * is the per-key rate limiter, null when rate limits are off.
 */
export function createRestRouter(deps: Deps, limiter: RateLimiter | null) {
  const openapi = openApiHandler(ROUTES, deps.log);
  return async function rest(req: Request, url: URL): Promise<Response> {
    try {
      if (url.pathname === OPENAPI_PATH) return openapi(req); // public: no key
      const candidates = ROUTES.filter((r) => r.pattern.test(url.pathname));
      if (candidates.length === 0) throw new AppError("not_found", `no route for ${url.pathname}`);
      const match = candidates.find((r) => r.method === req.method);
      if (!match) return methodNotAllowed(req.method, candidates.map((r) => r.method).join(", "), deps.log);
      const principal = await authenticate(deps, req.headers);
      if (!principal || principal.kind !== "tenant") {
        throw new AppError("unauthorized", "a valid API key is required (X-API-Key or Authorization: Bearer)");
      }
      const params = match.pattern.exec(url.pathname)?.groups ?? {};
      const scoped = forRequest(deps, requestIdFor(req));
      return await tenantCall(scoped, limiter, match, principal, req, params as Record<string, string>);
    } catch (err) {
      return problemResponse(err, forRequest(deps, requestIdFor(req)).log, { method: req.method, path: url.pathname });
    }
  };
}
