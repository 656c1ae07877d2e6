/**
 * Every metric of `GET /metrics` (API.md "Describing and observing the service"), in one
 * prom-client registry. Counters and histograms count what this process did (each process
 * of a deployment exposes its own: scrape them all and sum); the `pp_jobs_*` gauges are read
 * from the database at scrape time (service.ts) and so are the same in every process.
 *
 * Labels stay bounded: a `route` is a route pattern, a `status` an HTTP or send status, a
 * `task`, `reason` or `outcome` one of a fixed list; never an id, an account or an address.
 * Increments sit where the thing happens (one call, no allocation per send beyond it); the
 * HTTP metrics are recorded in one place, rest/observe.ts.
 */
import type { Kysely } from "kysely";
import {
  collectDefaultMetrics,
  Counter,
  Gauge,
  Histogram,
  type MetricObjectWithValues,
  type MetricValue,
  Registry,
} from "prom-client";
import type { Database } from "../db/tables.ts";

/** The registry `GET /metrics` exposes (nothing is put in prom-client's global one). */
export const registry = new Registry();

/** Metrics as prom-client's `getMetricsAsJSON()` gives them: what crosses from the worker thread. */
export type MetricsJson = MetricObjectWithValues<MetricValue<string>>[];

/**
 * This event loop's own counts (the `pp_*` counters and histograms), for the worker thread
 * to hand to the process's /metrics (service.ts adds them up). Gauges stay out: the
 * database-wide ones are read by the scraping loop, and the process metrics are its too.
 */
export async function ownCounts(): Promise<MetricsJson> {
  const all = await registry.getMetricsAsJSON();
  // MetricType is a string enum at run time ("counter", "gauge", …).
  const counts = new Set(["counter", "histogram"]);
  return all.filter((m) => m.name.startsWith("pp_") && counts.has(String(m.type)));
}

// prom-client's process metrics: CPU, resident memory, heap, event loop lag, open fds.
collectDefaultMetrics({ register: registry });

/** Sends accepted (single sends, batches and segment pages alike; suppressed ones too), counted by acceptSends. */
export const sendsAccepted = new Counter({
  name: "pp_sends_accepted_total",
  help: "Sends accepted by this process (single, batch and segment sends; suppressed ones included).",
  registers: [registry],
});

/**
 * The status a send ended in, as far as this process took it: `delivered` (relay 250 with
 * PP_DELIVERY_CONFIRMATION=smtp), `sent` (relay 250 with `reports`: reports decide later),
 * `bounced` (a 5xx to RCPT TO or DATA), `failed` (relay refusal, attempts exhausted, render
 * failure, internal error), `suppressed` (at acceptance).
 */
export type FinishedStatus = "delivered" | "sent" | "bounced" | "failed" | "suppressed";

/** Sends that reached a final status in this process, by {@link FinishedStatus}. */
export const sendsFinished = new Counter<"status">({
  name: "pp_sends_finished_total",
  help: "Sends whose delivery ended in this process, by status (delivered, sent, bounced, failed, suppressed).",
  labelNames: ["status"],
  registers: [registry],
});

/** One label object per status, made once: a hot path's count allocates no object of its own. */
const FINISHED = {
  delivered: { status: "delivered" },
  sent: { status: "sent" },
  bounced: { status: "bounced" },
  failed: { status: "failed" },
  suppressed: { status: "suppressed" },
} as const satisfies Record<FinishedStatus, { status: FinishedStatus }>;

/** Counts `n` sends (default 1) that ended in `status` in `pp_sends_finished_total`. */
export function countFinished(status: FinishedStatus, n = 1): void {
  sendsFinished.inc(FINISHED[status], n);
}

/**
 * Seconds from acceptance (or from the scheduled time, for a scheduled send) to the relay's
 * `250`, one observation per send that went out. Includes retries after 4xx answers.
 */
export const deliverySeconds = new Histogram({
  name: "pp_delivery_seconds",
  help: "Seconds from acceptance (or the scheduled time) to the relay's 250, per send delivered by this process.",
  buckets: [0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600, 21600],
  registers: [registry],
});

/**
 * Why a render failed: `template_error` (the tenant's template threw: unknown filter, a call
 * of nothing, a gadget refused), `timeout` (PP_RENDER_TIMEOUT_MS), `crashed` (its sandbox ran
 * out of memory or died).
 */
export type RenderFailure = "template_error" | "timeout" | "crashed";

/**
 * Renders (of sends and previews, not the compile checks of a save) that failed in this
 * process's sandboxes, by {@link RenderFailure}. A send whose render failed ends `failed`
 * with `render_failed`.
 */
export const renderFailures = new Counter<"reason">({
  name: "pp_render_failures_total",
  help: "Template renders that failed in this process, by reason (template_error, timeout, crashed).",
  labelNames: ["reason"],
  registers: [registry],
});

/** Accounts whose sending this process paused for their bounce or complaint rate (accounts/reputation.ts). */
export const reputationPauses = new Counter({
  name: "pp_reputation_pauses_total",
  help: "Accounts paused by this process for their bounce or complaint rate.",
  registers: [registry],
});

/**
 * What one webhook attempt came to: `succeeded` (a 2xx in time), `http_error` (another
 * status, a redirect included), `timeout` (no answer within PP_WEBHOOK_TIMEOUT_MS),
 * `network_error` (no connection, reset, DNS), `refused` (not sent: a private address, not
 * allowed, or a secret this process cannot unseal).
 */
export type WebhookOutcome = "succeeded" | "http_error" | "timeout" | "network_error" | "refused";

/** Webhook attempts made by this process, by {@link WebhookOutcome}: count one with {@link countWebhookAttempt}. */
export const webhookAttempts = new Counter<"outcome">({
  name: "pp_webhook_attempts_total",
  help: "Webhook attempts made by this process, by outcome (succeeded, http_error, timeout, network_error, refused).",
  labelNames: ["outcome"],
  registers: [registry],
});

/** Counts one webhook attempt (the webhooks domain calls this once per POST it made or refused). */
export function countWebhookAttempt(outcome: WebhookOutcome): void {
  webhookAttempts.inc({ outcome });
}

/**
 * Webhook deliveries waiting for an attempt (`pending`), database-wide. Set at scrape time
 * by a collector the webhooks domain registers ({@link registerCollector}); 0 until it does.
 */
export const webhookBacklog = new Gauge({
  name: "pp_webhook_backlog",
  help: "Webhook deliveries pending (waiting for their next attempt), database-wide, read at scrape time.",
  registers: [registry],
});

/** Seconds the oldest pending webhook delivery has been due, database-wide; 0 when none is; set like {@link webhookBacklog}. */
export const webhookOldestDueSeconds = new Gauge({
  name: "pp_webhook_oldest_due_seconds",
  help: "Seconds the oldest due pending webhook delivery has waited, database-wide (0: none), read at scrape time.",
  registers: [registry],
});

/**
 * graphile-worker jobs waiting, database-wide, by task and state: `due` (run_at passed, not
 * locked, attempts left: it should be running) or `scheduled` (run_at ahead: scheduled
 * sends, retries after backoff, cron-like follow-ups).
 */
export const jobsQueued = new Gauge<"task" | "state">({
  name: "pp_jobs_queued",
  help: "graphile-worker jobs waiting, database-wide, by task and state (due, scheduled), read at scrape time.",
  labelNames: ["task", "state"],
  registers: [registry],
});

/** graphile-worker jobs locked by a worker (running, or held by a dead one until it is freed), by task. */
export const jobsRunning = new Gauge<"task">({
  name: "pp_jobs_running",
  help: "graphile-worker jobs locked by a worker, database-wide, by task, read at scrape time.",
  labelNames: ["task"],
  registers: [registry],
});

/** graphile-worker jobs out of attempts (kept, never run again), by task. */
export const jobsFailed = new Gauge<"task">({
  name: "pp_jobs_failed",
  help: "graphile-worker jobs out of attempts (kept, not run again), database-wide, by task, read at scrape time.",
  labelNames: ["task"],
  registers: [registry],
});

/** How long the oldest due job of each task has waited past its run_at, seconds (0: none due): the queue's lag. */
export const jobsOldestDueSeconds = new Gauge<"task">({
  name: "pp_jobs_oldest_due_seconds",
  help: "Seconds the oldest due, unlocked job has waited past its run_at, database-wide, by task (0: none).",
  labelNames: ["task"],
  registers: [registry],
});

/**
 * HTTP answers of this process by `route` — a REST route's pattern (`/api/v1/sends/:id`), a
 * fixed path (`/graphql`, `/healthz`, `/metrics`, the inbound webhooks), `tracking` (opens,
 * clicks, unsubscribes) or `other` — and `status`, the HTTP status.
 */
export const httpRequests = new Counter<"route" | "status">({
  name: "pp_http_requests_total",
  help: "HTTP answers of this process, by route pattern and status.",
  labelNames: ["route", "status"],
  registers: [registry],
});

/** Seconds from a request's arrival to its answer's headers (a stream's body is not timed), by `route` as above. */
export const httpRequestSeconds = new Histogram<"route">({
  name: "pp_http_request_seconds",
  help: "Seconds from a request's arrival to its answer's headers, by route pattern.",
  labelNames: ["route"],
  buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
  registers: [registry],
});

/** Scrape-time collectors that failed (their gauges keep their last values), by collector name. */
export const collectErrors = new Counter<"collector">({
  name: "pp_metrics_collect_errors_total",
  help: "Scrape-time collectors that failed in this process (their gauges keep their last values), by collector.",
  labelNames: ["collector"],
  registers: [registry],
});

/** Reads database-wide values into gauges; runs at every scrape, so it must be cheap (index scans, no full scans). */
export type Collector = (db: Kysely<Database>) => Promise<void>;

/** The collectors registered so far, by name. */
export const collectors = new Map<string, Collector>();

/**
 * Registers `collect` to run at every scrape, before the registry is read; a later
 * registration under the same `name` replaces it. A domain whose state lives in its table
 * registers here once, at import, e.g. the webhooks domain:
 * `registerCollector("webhooks", async (db) => webhookBacklog.set(await repo.pendingCount(db)))`.
 */
export function registerCollector(name: string, collect: Collector): void {
  collectors.set(name, collect);
}
