/**
 * The graphile-worker schemas (each a job queue with its own tables) and which tasks use them.
 *
 * Webhook jobs have a queue of their own. In one queue, a runner that fetches only webhook
 * jobs scanned every waiting delivery job on each fetch that found none (graphile-worker
 * filters by task after its `(priority, run_at)` index: ~10 ms with 20,000 deliveries
 * queued, on every `jobs:insert` notice), and a runner that fetches both kept a new
 * webhook job behind up to 500 delivery jobs in its local queue (a lag p50 of 1.5 s in the
 * webhooks bench).
 */

/** Every task but dispatch_webhook (and dispatch_webhook jobs queued before migration 0020). */
export const MAIN_JOBS = "graphile_worker";
/** dispatch_webhook jobs queued since migration 0020. */
export const WEBHOOK_JOBS = "graphile_worker_webhooks";
/** Both, for what reads or frees every job (heartbeats, metrics). */
export const JOB_SCHEMAS = [MAIN_JOBS, WEBHOOK_JOBS] as const;
