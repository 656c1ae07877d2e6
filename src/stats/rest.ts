/** REST handler for stats: `GET /api/v1/stats?from&to&interval&tag`. */
import type { Deps, Principal } from "../context.ts";
import { json } from "../rest/problem.ts";
import * as service from "./service.ts";
import type { StatsList } from "./view.ts";

/** GET /api/v1/stats → 200 {data: [StatsRow]}, oldest first. */
export async function getStats(deps: Deps, p: Principal, req: Request): Promise<Response> {
  const q = Object.fromEntries(new URL(req.url).searchParams);
  return json({ data: await service.stats(deps, p, q) } satisfies StatsList);
}
