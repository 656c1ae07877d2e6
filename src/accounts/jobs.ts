/**
 * Reputation jobs: `reputation_check` recomputes one account after a bounce or a complaint
 * (queued with a job key, so a burst of bounces is one check), and `reputation_sweep` runs
 * on graphile-worker's cron for every account that sent in the window.
 */
import type { Task } from "graphile-worker";
import { z } from "zod";
import type { Deps } from "../context.ts";
import * as repo from "./repo.ts";
import { checkReputation, REPUTATION } from "./reputation.ts";

/**
 * The periodic jobs (graphile-worker crontab syntax): the reputation sweep, and retention
 * (retention/jobs.ts: old sends, events, expired idempotency keys, outbox files).
 */
export const CRONTAB = ["*/10 * * * * reputation_sweep", "17 * * * * retention"].join("\n");

const Payload = z.object({ accountId: z.uuid() });

/** Queues a reputation check of the account in ~2 s (accounts/repo.ts; one job per account at a time). */
export const queueReputationCheck = repo.queueReputationCheck;

/** Builds `reputation_check`. */
export function reputationCheckTask(deps: Deps): Task {
  return async (payload) => {
    const { accountId } = Payload.parse(payload);
    const r = await checkReputation(deps.db, accountId);
    if (r.paused) {
      deps.log.warn("sending paused by reputation", {
        accountId,
        sends: r.sends,
        bounceRate: r.bounceRate,
        complaintRate: r.complaintRate,
      });
    }
  };
}

/** Builds `reputation_sweep`: checks every enabled account with sends in the window. */
export function reputationSweepTask(deps: Deps): Task {
  return async () => {
    const accounts = await repo.listAccountsSentWithin(deps.db, REPUTATION.windowDays);
    for (const a of accounts) await checkReputation(deps.db, a.id);
  };
}
