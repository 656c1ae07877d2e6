/**
 * Worker liveness. graphile-worker frees the jobs of a crashed worker only after 4 hours;
 * its local queue holds hundreds of locked jobs at a time, so a kill -9 stranded them.
 * Every worker process beats for its pools every HEARTBEAT_MS, and on each beat frees the
 * jobs of any pool whose beat is older than DEAD_AFTER_S (jobs/repo.ts). A redelivered send
 * keeps its Message-ID (fixed at acceptance); duplicates are bounded by what the dead
 * process had in flight at the relay.
 */
import type { Deps } from "../context.ts";
import * as repo from "./repo.ts";

/** How often a worker process says it is alive, ms. */
export const HEARTBEAT_MS = 5_000;
/** A pool silent for this long is dead, s: its jobs are freed within DEAD_AFTER_S + HEARTBEAT_MS. */
export const DEAD_AFTER_S = 30;

/** A running heartbeat. `stop` forgets this process's pools (call it once they hold no jobs). */
export interface Heartbeat {
  stop(): Promise<void>;
}

/**
 * Frees the jobs of pools this process knows are dead (its own runner, stopped by an outage)
 * at once, without waiting for their heartbeat to go stale.
 */
export async function freePools(deps: Deps, poolIds: string[]): Promise<void> {
  if (poolIds.length === 0) return;
  await deps.db.transaction().execute(async (trx) => {
    await repo.unlockPools(trx, poolIds);
    await repo.forget(trx, poolIds);
  });
}

/**
 * Beats for `poolIds()` (read on every beat: pools are created as the runner starts) and
 * reaps dead pools, at once and then every HEARTBEAT_MS. A beat that fails (Postgres away)
 * is logged and tried again at the next one; the first beat that works again calls
 * `onReconnect` with the time (performance.now()) of the first failed one (the worker
 * restarts its runner then, see worker.ts).
 */
export function startHeartbeat(
  deps: Deps,
  poolIds: () => string[],
  onReconnect: (downSince: number) => void,
): Heartbeat {
  const { db, log } = deps;
  let timer: ReturnType<typeof setTimeout> | undefined;
  let running: Promise<void> = Promise.resolve();
  let stopped = false;
  /** When the first failed beat of the current outage was, or null while the database answers. */
  let downSince: number | null = null;

  async function once() {
    try {
      await repo.beat(db, poolIds());
      if (downSince !== null) {
        const since = downSince;
        downSince = null;
        log.info("database reachable again");
        onReconnect(since);
      }
      const freed = await db.transaction().execute(async (trx) => {
        const dead = await repo.claimDeadPools(trx, DEAD_AFTER_S);
        if (dead.length) await repo.unlockPools(trx, dead);
        return dead;
      });
      if (freed.length) log.warn("jobs of dead workers freed", { pools: freed });
    } catch (err) {
      downSince ??= performance.now();
      log.warn("worker heartbeat failed; retrying", { err: String(err) });
    }
  }

  function schedule() {
    if (stopped) return;
    running = once().finally(() => {
      if (!stopped) timer = setTimeout(schedule, HEARTBEAT_MS);
    });
  }
  schedule();

  return {
    async stop() {
      stopped = true;
      clearTimeout(timer);
      await running;
      await repo.forget(db, poolIds()).catch((err) => log.warn("worker heartbeat not removed", { err }));
    },
  };
}
