/** REST handlers for sends (`/api/v1/sends…`): parse, call the service, shape the answer. */
import type { Deps, Principal } from "../context.ts";
import type { EmailEventsTable } from "../db/tables.ts";
import type { Selectable } from "kysely";
import { createSegmentSend } from "../batches/service.ts";
import { AppError } from "../errors.ts";
import { sendEvents } from "../events/service.ts";
import { encodeCursor } from "../pagination.ts";
import { json, readJson } from "../rest/problem.ts";
import { quotaHeaders } from "../rest/quota.ts";
import * as service from "./service.ts";
import { type SendEventView, type SendPage, sendView, type SendWithEvents } from "./view.ts";

function eventJson(e: Pick<Selectable<EmailEventsTable>, "type" | "occurred_at" | "data">): SendEventView {
  return { type: e.type, occurredAt: e.occurred_at, data: e.data };
}

/**
 * POST /api/v1/sends → 202 Send; with `segmentId` instead of `to`, a segment send:
 * 202 {batchId, segmentId, status: "queued"}. Both, or neither, is a 422.
 */
export async function postSend(deps: Deps, p: Principal, req: Request): Promise<Response> {
  const body = await readJson(req);
  const b = (body ?? {}) as Record<string, unknown>;
  if (b.segmentId != null) {
    if (b.to != null) {
      throw new AppError("validation_failed", "give either to or segmentId, not both", [
        { path: "segmentId", message: "give either to or segmentId, not both" },
      ]);
    }
    return json(await createSegmentSend(deps, p, body), 202);
  }
  const { send, quota } = await service.createSend(deps, p, body);
  return json(sendView(send), 202, quotaHeaders(quota));
}

/** GET /api/v1/sends → 200 {data, nextCursor}. */
export async function getSends(deps: Deps, p: Principal, req: Request): Promise<Response> {
  const q = Object.fromEntries(new URL(req.url).searchParams);
  const page = await service.listSends(deps, p, q);
  const last = page.rows.at(-1);
  return json(
    { data: page.rows.map(sendView), nextCursor: page.hasMore && last ? encodeCursor(last) : null } satisfies SendPage,
  );
}

/** GET /api/v1/sends/:id → 200 Send with its events, oldest first. */
export async function getSend(deps: Deps, p: Principal, id: string): Promise<Response> {
  const send = await service.getSend(deps, p, id);
  const events = await sendEvents(deps, p, send.id, { first: 1000 });
  return json({ ...sendView(send), events: events.map(eventJson) } satisfies SendWithEvents);
}

/** PATCH /api/v1/sends/:id with {scheduledAt} → 200 Send at its new time. */
export async function patchSend(deps: Deps, p: Principal, req: Request, id: string): Promise<Response> {
  return json(sendView(await service.rescheduleSend(deps, p, id, await readJson(req))));
}

/** POST /api/v1/sends/:id/cancel → 200 Send, now cancelled. */
export async function postCancel(deps: Deps, p: Principal, id: string): Promise<Response> {
  return json(sendView(await service.cancelSend(deps, p, id)));
}
