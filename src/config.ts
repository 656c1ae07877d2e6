/**
 * The one place that reads the environment. Everything else receives a frozen
 * {@link Config}; tests build one with {@link loadConfig} and their own values.
 */
import { z } from "zod";

const bool = z.enum(["true", "false", "1", "0"]).transform((v) => v === "true" || v === "1");

const EnvSchema = z.object({
  PORT: z.coerce.number().int().min(0).max(65535).default(8080),
  HOST: z.string().min(1).default("127.0.0.1"),
  DATABASE_URL: z.string().url().optional(),
  PP_DATA_DIR: z.string().min(1).default("./.data"),
  SMTP_URL: z.string().regex(/^smtps?:\/\//, "must start with smtp:// or smtps://").optional(),
  PP_ROLE: z.enum(["api", "worker", "all"]).default("all"),
  PP_WORKER_THREAD: bool.default(true),
  PP_PUBLIC_URL: z.string().url().optional(),
  PP_ADMIN_TOKEN: z.string().min(16).optional(),
  PP_METRICS_TOKEN: z.string().min(16).optional(),
  PP_SECRET: z.string().min(16).optional(),
  PP_SEED: bool.optional(),
  PP_DELIVERY_CONFIRMATION: z.enum(["smtp", "reports"]).default("smtp"),
  PP_WORKER_CONCURRENCY: z.coerce.number().int().min(1).max(200).default(100),
  PP_WORKER_POLL_MS: z.coerce.number().int().min(50).default(100),
  PP_SMTP_POOL_SIZE: z.coerce.number().int().min(1).max(100).default(20),
  PP_SMTP_MAX_ATTEMPTS: z.coerce.number().int().min(1).max(25).default(8),
  PP_SCHEDULE_HORIZON_S: z.coerce.number().int().min(1).max(86_400).default(600),
  PP_SHUTDOWN_TIMEOUT_MS: z.coerce.number().int().min(100).max(600_000).default(15_000),
  PP_SMTP_TIMEOUT_MS: z.coerce.number().int().min(100).max(600_000).default(30_000),
  PP_LARGE_BODY_TIMEOUT_MS: z.coerce.number().int().min(100).max(3_600_000).default(60_000),
  PP_RENDER_TIMEOUT_MS: z.coerce.number().int().min(50).max(60_000).default(2000),
  PP_RENDER_WORKERS: z.coerce.number().int().min(1).max(16).default(2),
  PP_DB_POOL_SIZE: z.coerce.number().int().min(2).max(200).default(50),
  PP_LOG_LEVEL: z.enum(["debug", "info", "warn", "error"]).default("info"),
  PP_BOUNCE_DOMAIN: z.string().regex(/^[A-Za-z0-9.-]+$/, "must be a domain name").optional(),
  PP_INBOUND_SMTP_PORT: z.coerce.number().int().min(0).max(65535).optional(),
  PP_SUBMISSION_PORT: z.coerce.number().int().min(0).max(65535).optional(),
  PP_SUBMISSION_INSECURE: bool.optional(),
  PP_TLS_CERT: z.string().optional(),
  PP_TLS_KEY: z.string().optional(),
  PP_INBOUND_SECRET: z.string().min(16).optional(),
  PP_INBOUND_PARSE_TIMEOUT_MS: z.coerce.number().int().min(1).max(60_000).default(2000),
  PP_TRUST_PROXY: bool.optional(),
  PP_LIVE_KEY_CHECK_MS: z.coerce.number().int().min(100).max(60_000).default(30_000),
  PP_RATE_LIMIT: z.string().regex(/^\d+(:\d+)?$/, "must be RATE or RATE:BURST (requests per second)").default(
    "100:200",
  ),
  PP_DNS_SERVER: z.string().regex(/^[^:\s]+:\d{1,5}$/, "must be host:port").optional(),
  // At least the 7 days of the reputation window (accounts/reputation.ts), which counts sends.
  PP_RETENTION_DAYS: z.coerce.number().int().min(7).max(3650).default(30),
  PP_WEBHOOK_ALLOW_PRIVATE: bool.optional(),
  PP_WEBHOOK_TIMEOUT_MS: z.coerce.number().int().min(100).max(60_000).default(10_000),
});

/** Runtime configuration, parsed once at start. Defaults are those of API.md. */
export interface Config {
  /** HTTP port; 0 picks a free one. Default 8080. */
  port: number;
  /** Bind address. Default 127.0.0.1. */
  host: string;
  /** Postgres URL; undefined starts the embedded Postgres in `${dataDir}/postgres`. */
  databaseUrl?: string;
  /** Embedded database, outbox and generated secrets. Default ./.data. */
  dataDir: string;
  /** Relay for live mail; undefined writes `.eml` files to `${dataDir}/outbox`. */
  smtpUrl?: string;
  /** Which halves run in this process. Default all. */
  role: "api" | "worker" | "all";
  /**
   * Role `all`: run the worker on a thread of its own (its own event loop, so deliveries never
   * delay an HTTP answer); false runs both on one loop. Default true.
   */
  workerThread: boolean;
  /** Base of tracking and unsubscribe links; undefined means http://HOST:PORT. */
  publicUrl?: string;
  /** Ops token; generated and saved in the data dir when unset. */
  adminToken?: string;
  /** Bearer token of `GET /metrics` (the admin token works too); unset: only the admin token. */
  metricsToken?: string;
  /** HMAC key; generated and saved in the data dir when unset. */
  secret?: string;
  /** Seed the dev account on an empty database. Default: only when DATABASE_URL is unset. */
  seed: boolean;
  /** Whether SMTP 250 is also `delivered` (smtp, default) or reports decide (reports). */
  deliveryConfirmation: "smtp" | "reports";
  /** Jobs run at once per worker process. Default 100. */
  workerConcurrency: number;
  /** How often the worker looks for due scheduled jobs and due webhook deliveries, ms. Default 100. */
  workerPollMs: number;
  /** Pooled SMTP connections per worker process. Default 20. */
  smtpPoolSize: number;
  /** Delivery attempts before a send is `failed` (4xx, dropped connections). Default 8. */
  smtpMaxAttempts: number;
  /**
   * A send scheduled further ahead than this (seconds) gets its delivery job only when its
   * time comes within it (see sends/jobs.ts, promote_scheduled). Default 600.
   */
  scheduleHorizonS: number;
  /** How long a SIGTERM waits for in-flight work before the process exits anyway, ms. Default 15,000. */
  shutdownTimeoutMs: number;
  /** Longest an SMTP relay may take to connect, greet or answer one command, ms. Default 30,000. */
  smtpTimeoutMs: number;
  /**
   * Longest a request body over 4 MiB (or a submitted message) may hold one of the few slots for
   * large bodies while it arrives, ms; past it the answer is 408 request_timeout (SMTP: 451).
   * Default 60,000: 40 MiB in a minute is 5.6 Mbit/s.
   */
  largeBodyTimeoutMs: number;
  /** Longest one template compile or render may take, ms; past it the send is `failed` (render_failed). Default 2000. */
  renderTimeoutMs: number;
  /** Render sandbox processes per service process (see mail/render.ts). Default 2. */
  renderWorkers: number;
  /** Postgres connections per process for the service, opened as needed. Default 50. */
  dbPoolSize: number;
  /** Lowest log level written. Default info. */
  logLevel: "debug" | "info" | "warn" | "error";
  /** VERP return-path domain (`bounces+<token>@domain`); unset: the from address is the return path. */
  bounceDomain?: string;
  /** Port of the inbound SMTP listener for DSNs and ARF reports (roles all/worker); unset: no listener. */
  inboundSmtpPort?: number;
  /** HMAC key of `POST /api/v1/events/inbound`; unset: that endpoint answers 401. */
  inboundSecret?: string;
  /** Time limit of parsing one inbound report (off the event loop); a slower one is dropped. Default 2000 ms. */
  inboundParseTimeoutMs: number;
  /** Port of the SMTP submission listener (roles all/api; submission/smtp.ts); unset: no listener. */
  submissionPort?: number;
  /** Let AUTH go over plain text from any address, not only loopback, when there is no TLS. Default false. */
  submissionInsecure: boolean;
  /**
   * Certificate and key (PEM, or a path to a PEM file) for the submission listener's
   * STARTTLS; both or neither.
   */
  tls?: { cert: string; key: string };
  /** Requests per second per API key and the burst allowed; rate 0 turns limits off. Default 100 and 200. */
  rateLimit: { rate: number; burst: number };
  /** Behind a reverse proxy: take the client address from X-Forwarded-For. Default false. */
  trustProxy: boolean;
  /** How often the keys of open live event streams are re-checked, ms: a revoked key's streams end by then. Default 30,000. */
  liveKeyCheckMs: number;
  /** DNS server for domain verification (`host:port`); unset: the system resolver. */
  dnsServer?: { ipAddr: string; port: number };
  /**
   * Days finished sends, their events and outbox files are kept (retention/service.ts);
   * at least 7, the reputation window. Default 30.
   */
  retentionDays: number;
  /** Let webhook endpoints resolve to loopback, private or link-local addresses. Default false. */
  webhookAllowPrivate: boolean;
  /** How long a webhook attempt may take before it counts as failed. Default 10,000 ms. */
  webhookTimeoutMs: number;
}

/**
 * Parses an environment map (normally `Deno.env.toObject()`) into a frozen Config.
 * Throws with every bad variable named when one does not parse.
 */
export function loadConfig(env: Record<string, string | undefined>): Readonly<Config> {
  const clean = Object.fromEntries(Object.entries(env).filter(([, v]) => v !== undefined && v !== ""));
  const parsed = EnvSchema.safeParse(clean);
  if (!parsed.success) {
    const lines = parsed.error.issues.map((i) => `${i.path.join(".")}: ${i.message}`);
    throw new Error(`invalid configuration: ${lines.join("; ")}`);
  }
  const e = parsed.data;
  if ((e.PP_TLS_CERT === undefined) !== (e.PP_TLS_KEY === undefined)) {
    throw new Error("invalid configuration: PP_TLS_CERT and PP_TLS_KEY are set together or not at all");
  }
  return Object.freeze({
    port: e.PORT,
    host: e.HOST,
    databaseUrl: e.DATABASE_URL,
    dataDir: e.PP_DATA_DIR,
    smtpUrl: e.SMTP_URL,
    role: e.PP_ROLE,
    workerThread: e.PP_WORKER_THREAD,
    publicUrl: e.PP_PUBLIC_URL,
    adminToken: e.PP_ADMIN_TOKEN,
    metricsToken: e.PP_METRICS_TOKEN,
    secret: e.PP_SECRET,
    seed: e.PP_SEED ?? e.DATABASE_URL === undefined,
    deliveryConfirmation: e.PP_DELIVERY_CONFIRMATION,
    workerConcurrency: e.PP_WORKER_CONCURRENCY,
    workerPollMs: e.PP_WORKER_POLL_MS,
    smtpPoolSize: e.PP_SMTP_POOL_SIZE,
    smtpMaxAttempts: e.PP_SMTP_MAX_ATTEMPTS,
    scheduleHorizonS: e.PP_SCHEDULE_HORIZON_S,
    shutdownTimeoutMs: e.PP_SHUTDOWN_TIMEOUT_MS,
    smtpTimeoutMs: e.PP_SMTP_TIMEOUT_MS,
    largeBodyTimeoutMs: e.PP_LARGE_BODY_TIMEOUT_MS,
    renderTimeoutMs: e.PP_RENDER_TIMEOUT_MS,
    renderWorkers: e.PP_RENDER_WORKERS,
    dbPoolSize: e.PP_DB_POOL_SIZE,
    logLevel: e.PP_LOG_LEVEL,
    bounceDomain: e.PP_BOUNCE_DOMAIN,
    inboundSmtpPort: e.PP_INBOUND_SMTP_PORT,
    inboundSecret: e.PP_INBOUND_SECRET,
    inboundParseTimeoutMs: e.PP_INBOUND_PARSE_TIMEOUT_MS,
    submissionPort: e.PP_SUBMISSION_PORT,
    submissionInsecure: e.PP_SUBMISSION_INSECURE ?? false,
    tls: e.PP_TLS_CERT && e.PP_TLS_KEY ? { cert: e.PP_TLS_CERT, key: e.PP_TLS_KEY } : undefined,
    trustProxy: e.PP_TRUST_PROXY ?? false,
    liveKeyCheckMs: e.PP_LIVE_KEY_CHECK_MS,
    retentionDays: e.PP_RETENTION_DAYS,
    webhookAllowPrivate: e.PP_WEBHOOK_ALLOW_PRIVATE ?? false,
    webhookTimeoutMs: e.PP_WEBHOOK_TIMEOUT_MS,
    rateLimit: {
      rate: Number(e.PP_RATE_LIMIT.split(":")[0]),
      burst: Number(e.PP_RATE_LIMIT.split(":")[1] ?? Number(e.PP_RATE_LIMIT.split(":")[0]) * 2),
    },
    dnsServer: e.PP_DNS_SERVER
      ? { ipAddr: e.PP_DNS_SERVER.split(":")[0], port: Number(e.PP_DNS_SERVER.split(":")[1]) }
      : undefined,
  });
}
