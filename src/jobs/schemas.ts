/**
 * The graphile-worker schemas (each a job queue with its own tables). One since migration
 * 0023: webhook deliveries had a schema of their own (migration 0020) and now have a queue
 * table (webhooks/jobs.ts).
 */

/** Every task's jobs. */
export const MAIN_JOBS = "graphile_worker";
/** Every schema, for what reads or frees every job (heartbeats, metrics). */
export const JOB_SCHEMAS = [MAIN_JOBS] as const;
