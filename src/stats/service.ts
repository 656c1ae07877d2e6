/**
 * Stats by day, week or month and by tag, from the send_stats rollup that the event pipeline
 * keeps current (migration 0016): a year of a busy account is a few hundred rows, never a scan
 * of its events. Needs a FULL key.
 */
import type { Deps, Principal } from "../context.ts";
import { requireTenant } from "../context.ts";
import { parseInput } from "../validation.ts";
import { StatsInput } from "./inputs.ts";
import * as repo from "./repo.ts";
import { type StatsRow, statsView } from "./view.ts";

/** The caller's stats for `input` (StatsInput): every period of the range, oldest first. */
export async function stats(deps: Deps, p: Principal, input: unknown): Promise<StatsRow[]> {
  const t = requireTenant(p);
  const q = parseInput(StatsInput, input);
  const rows = await repo.statsByPeriod(deps.db, t.accountId, { ...q, tag: q.tag ?? "" });
  return rows.map(statsView);
}
