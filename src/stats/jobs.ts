/**
 * The `fold_stats` task: moves the stats deltas that the event pipeline's trigger inserted
 * (migration 0016) into the rollup, and the reputation deltas (migration 0021) into theirs,
 * then runs again after FOLD_INTERVAL_S. The next run is queued first, so a failed run
 * cannot end the cycle. Queries read the unfolded deltas too,
 * so stats are current either way; folding keeps what they read to a few rows per day.
 */
import type { Task } from "graphile-worker";
import type { Kysely } from "kysely";
import type { Deps } from "../context.ts";
import type { Database } from "../db/tables.ts";
import * as repo from "./repo.ts";
import { foldReputation } from "../accounts/repo.ts";

/** Seconds between folds: a few seconds of deltas (a row per recording statement) at most. */
export const FOLD_INTERVAL_S = 2;

/** (Re)starts the fold cycle: its next run in `delayS` seconds (the worker starts it at once). */
export async function scheduleFold(db: Kysely<Database>, delayS: number): Promise<void> {
  await repo.queueFold(db, delayS);
}

/** Builds the `fold_stats` task for a process. */
export function foldStatsTask(deps: Deps): Task {
  return async () => {
    await scheduleFold(deps.db, FOLD_INTERVAL_S);
    const n = await repo.foldDeltas(deps.db);
    const r = await foldReputation(deps.db);
    deps.log.debug("stats folded", { rows: n, reputationRows: r });
  };
}
