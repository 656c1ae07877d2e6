/**
 * The `retention` task (hourly, on graphile-worker's cron: accounts/jobs.ts CRONTAB): one
 * run of retention/service.ts, logged as one line of counts.
 */
import type { Task } from "graphile-worker";
import { z } from "zod";
import type { Deps } from "../context.ts";
import { runRetention } from "./service.ts";

// Cron adds `_cron` to the payload; a job added by hand (SQL) may carry anything or nothing.
const Payload = z.looseObject({});

/** Builds `retention`; a worker stopping ends a run early (the next run goes on). */
export function retentionTask(deps: Deps): Task {
  return async (payload, helpers) => {
    Payload.parse(payload ?? {});
    const report = await runRetention(deps, { signal: helpers.abortSignal });
    deps.log.info("retention run", { ...report });
  };
}
