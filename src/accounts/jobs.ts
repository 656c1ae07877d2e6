/**
 * Reputation jobs: `reputation_check` recomputes one account after a bounce or a complaint
 * (queued with a job key, so a burst of bounces is one check), and `reputation_sweep` runs
 * on graphile-worker's cron for every account that sent in the window.
 */
import type { Task } from "graphile-worker";
import type { Kysely } from "kysely";
import { sql } from "kysely";
import { z } from "zod";
import type { Deps } from "../context.ts";
import type { Database } from "../db/tables.ts";
import { checkReputation, REPUTATION } from "./reputation.ts";

/**
 * The periodic jobs (graphile-worker crontab syntax): the reputation sweep, and retention
 * (retention/jobs.ts: old sends, events, expired idempotency keys, outbox files).
 */
export const CRONTAB = ["*/10 * * * * reputation_sweep", "17 * * * * retention"].join("\n");

const Payload = z.object({ accountId: z.uuid() });

/**
 * Queues a reputation check of the account in ~2 s; repeated calls before it runs keep one
 * job and its first time (job_key_mode preserve_run_at), so a stream of bounces cannot
 * postpone it.
 */
export async function queueReputationCheck(db: Kysely<Database>, accountId: string): Promise<void> {
  await sql`select graphile_worker.add_job('reputation_check', json_build_object('accountId', ${accountId}::text),
    run_at := now() + interval '2 seconds', job_key := ${"reputation:" + accountId},
    job_key_mode := 'preserve_run_at')`.execute(db);
}

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
    const accounts = await deps.db.selectFrom("accounts").select("id").where("sending_enabled", "=", true)
      .where((eb) =>
        eb.exists(
          eb.selectFrom("sends").select(sql`1`.as("x")).whereRef("sends.account_id", "=", "accounts.id")
            .where("sends.created_at", ">=", sql<Date>`now() - make_interval(days => ${REPUTATION.windowDays})`),
        )
      ).execute();
    for (const a of accounts) await checkReputation(deps.db, a.id);
  };
}
