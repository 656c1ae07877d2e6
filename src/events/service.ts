/** Reading a send's events (recording is done by the tasks that cause them). */
import type { Deps, Principal } from "../context.ts";
import { requireTenant } from "../context.ts";
import type { EventType } from "../db/tables.ts";
import { invalid } from "../errors.ts";
import { isUuid } from "../validation.ts";
import * as repo from "./repo.ts";

/** A send's events, oldest first; `after` is an event id (the connection cursor). */
export async function sendEvents(
  deps: Deps,
  p: Principal,
  sendId: string,
  opts: { type?: EventType | null; first?: number | null; after?: string | null } = {},
) {
  const t = requireTenant(p);
  if (!isUuid(sendId)) return [];
  if (opts.after != null && !/^\d{1,18}$/.test(opts.after)) throw invalid("after", "is not a cursor from this API");
  return await repo.listEvents(deps.db, t.accountId, sendId, {
    type: opts.type ?? undefined,
    afterId: opts.after ?? undefined,
    limit: Math.min(Math.max(opts.first ?? 100, 1), 1000),
  });
}
