/** REST handlers for batches: `POST /api/v1/sends/batch`, `GET|PATCH /api/v1/batches/:id`, `POST …/cancel`. */
import type { Deps, Principal } from "../context.ts";
import { json, readJson } from "../rest/problem.ts";
import { quotaHeaders } from "../rest/quota.ts";
import * as service from "./service.ts";
import type { BatchCancelled, BatchRescheduled, BatchView } from "./view.ts";

/** A batch as REST shows it, with its counts by status. */
export function batchJson(b: Awaited<ReturnType<typeof service.getBatch>>): BatchView {
  return {
    id: b.id,
    status: b.status,
    templateId: b.template_id,
    segmentId: b.segment_id,
    count: b.count,
    counts: Object.fromEntries(b.counts.map((c) => [c.status, c.count])),
    error: b.error_code ? { code: b.error_code, message: b.error_message ?? "" } : null,
    createdAt: b.created_at,
    updatedAt: b.updated_at,
  };
}

/** POST /api/v1/sends/batch → 202 {batchId, count, sends}. */
export async function postBatch(deps: Deps, p: Principal, req: Request): Promise<Response> {
  const { batch, quota } = await service.createBatchSend(deps, p, await readJson(req));
  return json(batch, 202, quotaHeaders(quota));
}

/** GET /api/v1/batches/:id → 200 batch with counts. */
export async function getBatch(deps: Deps, p: Principal, id: string): Promise<Response> {
  return json(batchJson(await service.getBatch(deps, p, id)));
}

/** PATCH /api/v1/batches/:id with {scheduledAt} → 200 batch with counts and `rescheduled`. */
export async function patchBatch(deps: Deps, p: Principal, req: Request, id: string): Promise<Response> {
  const b = await service.rescheduleBatch(deps, p, id, await readJson(req));
  return json({ ...batchJson(b), rescheduled: b.rescheduled } satisfies BatchRescheduled);
}

/** POST /api/v1/batches/:id/cancel → 200 batch with counts and `cancelled`. */
export async function postCancelBatch(deps: Deps, p: Principal, id: string): Promise<Response> {
  const b = await service.cancelBatch(deps, p, id);
  return json({ ...batchJson(b), cancelled: b.cancelled } satisfies BatchCancelled);
}
