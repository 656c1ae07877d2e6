/**
 * Test harness: a fresh database per stack (on DATABASE_URL's server, else on one
 * embedded Postgres per test process), a real SMTP server (npm smtp-server) in-process,
 * and the whole service started as main.ts starts it, reached over real HTTP.
 */
import { Buffer } from "node:buffer";
import { SMTPServer } from "smtp-server";
import { simpleParser } from "mailparser";
import nodemailer from "nodemailer";
import pg from "pg";
import { loadConfig } from "../src/config.ts";
import { embeddedStopper, startEmbeddedPostgres } from "../src/db/embedded.ts";
import { signatureHeader } from "../src/inbound/webhook.ts";
import { type Service, startService } from "../src/server.ts";
import { assert, assertEquals } from "./assert.ts";

export const ADMIN_TOKEN = "test-admin-token-0123456789";

let serverUrl: Promise<string> | null = null;

/**
 * A TCP port free right now on loopback (the kernel picks it), for a server a test starts
 * itself: a random guess can hit a port in use after thousands of test connections.
 */
export function freePort(): number {
  const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (l.addr as Deno.NetAddr).port;
  l.close();
  return port;
}

/** The URL of a Postgres server to create test databases on. */
function testServerUrl(): Promise<string> {
  serverUrl ??= (async () => {
    const fromEnv = Deno.env.get("DATABASE_URL");
    if (fromEnv) return fromEnv;
    const dir = await Deno.makeTempDir({ prefix: "pp-test-pg-" });
    await Deno.chmod(dir, 0o755); // initdb runs as user postgres when we are root
    const port = freePort();
    const stop = await embeddedStopper(`${dir}/postgres`);
    // Stop the server when the test process ends, whatever happens: normal end, Deno.exit,
    // an uncaught error (unload), or an interrupt (a signal ends the process without unload).
    globalThis.addEventListener("unload", stop);
    for (const signal of ["SIGINT", "SIGTERM", "SIGHUP"] as const) {
      Deno.addSignalListener(signal, () => {
        stop();
        Deno.exit(130);
      });
    }
    const embedded = await startEmbeddedPostgres(`${dir}/postgres`, port);
    return embedded.url;
  })();
  return serverUrl;
}

/** Creates an empty database and returns its URL. */
export async function freshDatabase(): Promise<string> {
  const base = await testServerUrl();
  const name = `pp_test_${crypto.randomUUID().replaceAll("-", "").slice(0, 16)}`;
  const client = new pg.Client({ connectionString: base });
  await client.connect();
  await client.query(`create database ${name}`);
  await client.end();
  const u = new URL(base);
  u.pathname = `/${name}`;
  return u.toString();
}

/** Drops a database made by freshDatabase (test databases do not pile up on a shared server). */
export async function dropDatabase(url: string): Promise<void> {
  const name = new URL(url).pathname.slice(1);
  const client = new pg.Client({ connectionString: await testServerUrl() });
  await client.connect();
  // pool.end() returns before the server has closed every backend; wait for them rather than
  // killing them (a killed connection's error would surface in the test run).
  for (let i = 0; i < 100; i++) {
    const r = await client.query("select count(*)::int as n from pg_stat_activity where datname = $1", [name]);
    if (r.rows[0].n === 0) break;
    await new Promise((res) => setTimeout(res, 20));
  }
  await client.query(`drop database if exists ${name}`).catch(() =>
    client.query(`drop database if exists ${name} with (force)`)
  );
  await client.end();
}

/** A message the sink accepted. */
export interface ReceivedMail {
  from: string;
  to: string[];
  raw: string;
  subject: string;
  html: string;
  text: string;
  messageId: string;
  headers: Map<string, unknown>;
  /** The files mailparser found (inline ones with `related` and `contentId`). */
  attachments: MailAttachment[];
}

/** What mailparser gives for one file of a message. */
export interface MailAttachment {
  filename?: string;
  contentType: string;
  contentDisposition: string;
  contentId?: string;
  related?: boolean;
  content: Uint8Array;
}

/** A real SMTP server on loopback. `reply` decides per recipient: null accepts, else a code and message. */
export interface SmtpSink {
  url: string;
  messages: ReceivedMail[];
  /** Rejects RCPT for matching recipients; the function sees the address and the attempt number (1-based). */
  reply: (rcpt: string, attempt: number) => { code: number; message: string } | null;
  /** Refuses MAIL FROM when it returns a reply (a relay refusing the sender). */
  replyMailFrom: (from: string) => { code: number; message: string } | null;
  close(): Promise<void>;
}

/** Starts an SMTP sink on a free port. */
export async function startSmtpSink(): Promise<SmtpSink> {
  const attempts = new Map<string, number>();
  const sink: SmtpSink = {
    url: "",
    messages: [],
    reply: () => null,
    replyMailFrom: () => null,
    close: () => new Promise((r) => server.close(() => r())),
  };
  const server = new SMTPServer({
    authOptional: true,
    disabledCommands: ["STARTTLS"],
    logger: false,
    onMailFrom(address, _session, cb) {
      const r = sink.replyMailFrom(address.address);
      if (!r) return cb();
      cb(Object.assign(new Error(r.message), { responseCode: r.code }));
    },
    onRcptTo(address, _session, cb) {
      const n = (attempts.get(address.address) ?? 0) + 1;
      attempts.set(address.address, n);
      const r = sink.reply(address.address, n);
      if (!r) return cb();
      const err = new Error(r.message) as Error & { responseCode: number };
      err.responseCode = r.code;
      cb(err);
    },
    onData(stream, session, cb) {
      const chunks: Uint8Array[] = [];
      stream.on("data", (c: Uint8Array) => chunks.push(c));
      stream.on("end", async () => {
        const raw = new TextDecoder().decode(concat(chunks));
        const parsed = await simpleParser(raw);
        sink.messages.push({
          from: session.envelope.mailFrom ? session.envelope.mailFrom.address : "",
          to: session.envelope.rcptTo.map((r) => r.address),
          raw,
          subject: parsed.subject ?? "",
          html: typeof parsed.html === "string" ? parsed.html : "",
          text: parsed.text ?? "",
          messageId: parsed.messageId ?? "",
          headers: parsed.headers as Map<string, unknown>,
          attachments: parsed.attachments as unknown as MailAttachment[],
        });
        cb();
      });
    },
  });
  // A client that dies mid-session (a worker killed with SIGKILL) resets its connection:
  // that is the client's fault, not the sink's, and must not crash the test.
  server.on("error", () => {});
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", () => r()));
  // deno-lint-ignore no-explicit-any
  const port = ((server as any).server.address() as { port: number }).port;
  sink.url = `smtp://127.0.0.1:${port}`;
  return sink;
}

function concat(chunks: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(chunks.reduce((n, c) => n + c.length, 0));
  let i = 0;
  for (const c of chunks) {
    out.set(c, i);
    i += c.length;
  }
  return out;
}

/** A response read as JSON. */
export interface JsonResponse {
  status: number;
  headers: Headers;
  // deno-lint-ignore no-explicit-any
  body: any;
}

/** A tenant made through the ops API: an account, a key, a verified domain and a template. */
export interface TestTenant {
  accountId: string;
  key: string;
  apiKeyId: string;
  templateId: string;
  domain: string;
}

/** A running service with its sink and database, and client helpers. */
export interface Stack {
  service: Service;
  url: string;
  sink: SmtpSink;
  databaseUrl: string;
  dataDir: string;
  /** A direct pool on the test database, for assertions on what was written. */
  pg: pg.Pool;
  api(
    method: string,
    path: string,
    opts?: { key?: string; body?: unknown; raw?: string; headers?: Record<string, string> },
  ): Promise<JsonResponse>;
  gql(query: string, variables?: Record<string, unknown>, token?: string): Promise<JsonResponse>;
  tenant(
    opts?: {
      domain?: string;
      mode?: "LIVE" | "TEST";
      monthlyLimit?: number | null;
      template?: Record<string, unknown>;
    },
  ): Promise<TestTenant>;
  count(sql: string, params?: unknown[]): Promise<number>;
  stop(): Promise<void>;
}

/**
 * Starts the whole service on a fresh database (or `databaseUrl`, which the caller owns) with
 * an SMTP sink as SMTP_URL (unless `smtp: false`). With `openapi: true` (or PP_TEST_OPENAPI=1)
 * every `api` answer is checked against the service's /api/v1/openapi.json (tests/openapi_check.ts).
 */
export async function startStack(
  opts: { smtp?: boolean; env?: Record<string, string>; databaseUrl?: string; openapi?: boolean } = {},
): Promise<Stack> {
  const databaseUrl = opts.databaseUrl ?? await freshDatabase();
  const sink = await startSmtpSink();
  const dataDir = await Deno.makeTempDir({ prefix: "pp-test-data-" });
  const config = loadConfig({
    DATABASE_URL: databaseUrl,
    PORT: "0",
    PP_DATA_DIR: dataDir,
    PP_ADMIN_TOKEN: ADMIN_TOKEN,
    PP_WORKER_POLL_MS: "100",
    PP_LOG_LEVEL: "warn",
    ...(opts.smtp === false ? {} : { SMTP_URL: sink.url }),
    ...opts.env,
  });
  const service = await startService(config);
  const pool = new pg.Pool({ connectionString: databaseUrl, max: 3 });
  pool.on("error", () => {}); // idle clients closing at the end of a test are not failures
  const url = service.url;

  let openapi: Promise<{ check(method: string, path: string, answer: JsonResponse): void }> | undefined;
  const api: Stack["api"] = async (method, path, o = {}) => {
    const headers = new Headers(o.headers);
    if (o.key) headers.set("x-api-key", o.key);
    let body: string | undefined = o.raw;
    if (o.body !== undefined) {
      body = JSON.stringify(o.body);
      headers.set("content-type", "application/json");
    }
    const res = await fetch(url + path, { method, headers, body });
    const text = await res.text();
    let parsed: unknown = text;
    try {
      parsed = JSON.parse(text);
    } catch { /* not JSON */ }
    const answer = { status: res.status, headers: res.headers, body: parsed };
    if (opts.openapi ?? Deno.env.get("PP_TEST_OPENAPI") === "1") {
      openapi ??= import("./openapi_check.ts").then((m) => m.openApiChecker(url));
      (await openapi).check(method, path, answer);
    }
    return answer;
  };

  const gql: Stack["gql"] = async (query, variables = {}, token) => {
    const headers: Record<string, string> = { "content-type": "application/json" };
    if (token) headers.authorization = `Bearer ${token}`;
    const res = await fetch(url + "/graphql", { method: "POST", headers, body: JSON.stringify({ query, variables }) });
    return { status: res.status, headers: res.headers, body: await res.json() };
  };

  const mustGql = async (query: string, variables: Record<string, unknown>, token: string) => {
    const r = await gql(query, variables, token);
    if (r.body.errors) throw new Error(`graphql failed: ${JSON.stringify(r.body.errors)}`);
    return r.body.data;
  };

  const tenant: Stack["tenant"] = async (t = {}) => {
    const domain = t.domain ?? "shop.test";
    const { createAccount } = await mustGql(
      `mutation($i: CreateAccountInput!) { createAccount(input: $i) { id } }`,
      { i: { name: "Test shop", monthlyLimit: t.monthlyLimit ?? null } },
      ADMIN_TOKEN,
    );
    const { createApiKey } = await mustGql(
      `mutation($i: CreateApiKeyInput!) { createApiKey(input: $i) { key apiKey { id } } }`,
      { i: { accountId: createAccount.id, mode: t.mode ?? "LIVE" } },
      ADMIN_TOKEN,
    );
    const key = createApiKey.key;
    const { addDomain } = await mustGql(`mutation($n: String!) { addDomain(name: $n) { id } }`, { n: domain }, key);
    await mustGql(`mutation($id: ID!) { markDomainVerified(id: $id) { id } }`, { id: addDomain.id }, ADMIN_TOKEN);
    const { createTemplate } = await mustGql(
      `mutation($i: CreateTemplateInput!) { createTemplate(input: $i) { id } }`,
      {
        i: {
          name: "Order confirmation",
          subject: "Order {{ order_id }} confirmed",
          html: "<p>Hi {{ first_name }} {{ last_name }} of {{ company }} ({{ email }}), order {{ order_id }}</p>",
          text: "Hi {{ first_name }}, order {{ order_id }}",
          fromEmail: `orders@${domain}`,
          fromName: "Shop",
          // Tracking rewrites the HTML; tests that compare bodies exactly keep it off, and the
          // tracking tests turn it on (template or per send).
          trackOpens: false,
          trackClicks: false,
          ...t.template,
        },
      },
      key,
    );
    return {
      accountId: createAccount.id,
      key,
      apiKeyId: createApiKey.apiKey.id,
      templateId: createTemplate.id,
      domain,
    };
  };

  const count: Stack["count"] = async (sql, params = []) => {
    const r = await pool.query(sql, params);
    return Number(Object.values(r.rows[0])[0]);
  };

  return {
    service,
    url,
    sink,
    databaseUrl,
    dataDir,
    pg: pool,
    api,
    gql,
    tenant,
    count,
    async stop() {
      await service.stop();
      await pool.end();
      await sink.close();
      if (!opts.databaseUrl) await dropDatabase(databaseUrl);
      await Deno.remove(dataDir, { recursive: true }).catch(() => {});
    },
  };
}

/** Polls `fn` until it returns a truthy value, or throws after `timeoutMs`. */
export async function waitFor<T>(fn: () => Promise<T> | T, timeoutMs = 5000, what = "condition"): Promise<T> {
  const until = Date.now() + timeoutMs;
  while (true) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > until) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

/** Waits until a send reaches one of `statuses` and returns it as REST shows it. */
export async function waitForStatus(stack: Stack, key: string, id: string, statuses: string[], timeoutMs = 5000) {
  return await waitFor(
    async () => {
      const r = await stack.api("GET", `/api/v1/sends/${id}`, { key });
      return statuses.includes(r.body.status) ? r.body : null;
    },
    timeoutMs,
    `send ${id} to become ${statuses.join("|")}`,
  );
}

/** Waits until a send is done with (delivered, bounced or failed) and returns it as REST shows it. */
export async function waitForOutcome(stack: Stack, key: string, id: string, timeoutMs = 5000): Promise<Json> {
  return await waitForStatus(stack, key, id, ["delivered", "bounced", "failed"], timeoutMs);
}

/** Waits until a send is done with and asserts it was delivered (else its error shows); returns it. */
export async function waitDelivered(stack: Stack, key: string, id: string, timeoutMs = 5000): Promise<Json> {
  const done = await waitForOutcome(stack, key, id, timeoutMs);
  assertEquals(done.status, "delivered", JSON.stringify(done.error));
  return done;
}

/**
 * Row counts of everything a request could create: a failed request must leave them as
 * they were (API.md). Jobs count only those a request queues; the worker's own follow-ups
 * (reputation checks after a bounce, cron) come and go on their own schedule.
 */
export async function snapshot(stack: Stack) {
  const n = (sql: string) => stack.count(sql);
  return {
    sends: await n("select count(*) from sends"),
    contacts: await n("select count(*) from contacts"),
    events: await n("select count(*) from email_events"),
    batches: await n("select count(*) from batches"),
    jobs: await n(
      `select count(*) from graphile_worker.jobs
       where task_identifier in ('deliver_send', 'expand_segment', 'record_event')`,
    ),
    usageRows: await n("select count(*) from account_usage"),
    usageUsed: await n("select coalesce(sum(used), 0) from account_usage"),
    templates: await n("select count(*) from templates"),
    domains: await n("select count(*) from domains"),
    apiKeys: await n("select count(*) from api_keys"),
    accounts: await n("select count(*) from accounts"),
    attachmentBlobs: await n("select count(*) from attachment_blobs"),
    attachmentRefs: await n("select count(*) from send_attachments"),
  };
}

/** What snapshot() returns. */
export type Snapshot = Awaited<ReturnType<typeof snapshot>>;

/**
 * Waits until the worker has nothing due and nothing in flight, so that counts only move by
 * the request under test (scheduled and held sends wait on jobs with a future run_at).
 */
export async function settle(stack: Stack) {
  await waitFor(
    async () =>
      (await stack.count(
          `select (select count(*) from graphile_worker.jobs where run_at <= now())
            + (select count(*) from webhook_queue where run_at <= now())`,
        )) === 0 &&
      (await stack.count("select count(*) from sends where status in ('sending', 'sent')")) === 0,
    20_000,
    "the worker to settle",
  );
}

/** Runs `fn` and asserts that the database is exactly as before (a short pause lets stray writes land). */
export async function createsNothing<T>(stack: Stack, fn: () => Promise<T>): Promise<T> {
  await settle(stack);
  const before = await snapshot(stack);
  const out = await fn();
  await new Promise((r) => setTimeout(r, 50));
  assertEquals(await snapshot(stack), before, "a failed request must create nothing");
  return out;
}

/**
 * The flags of `deno task start` between `deno run` and `main.ts` (permissions, runtime and
 * V8 flags), so that tests and the bench start main.ts as it is started in production, from
 * the one place that says how.
 */
export async function startTaskFlags(): Promise<string[]> {
  const denoJson = JSON.parse(await Deno.readTextFile(new URL("../deno.json", import.meta.url)));
  const words: string[] = denoJson.tasks.start.command.split(/\s+/);
  return words.slice(words.indexOf("run") + 1, words.indexOf("main.ts"));
}

/** Spawns main.ts as `deno task start` would (e.g. a worker) and resolves once it says it listens. */
export async function spawnMain(env: Record<string, string>): Promise<{ child: Deno.ChildProcess; url: string }> {
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", ...await startTaskFlags(), new URL("../main.ts", import.meta.url).pathname],
    env: { PORT: "0", PP_LOG_LEVEL: "warn", PP_ADMIN_TOKEN: ADMIN_TOKEN, ...env },
    stdout: "piped",
    stderr: "inherit",
  }).spawn();
  return { child, url: await untilListening(child) };
}

/**
 * Reads a spawned main.ts's stdout until it says where it listens, and returns that URL; the
 * rest of stdout is drained, so the child never blocks on a full pipe.
 */
export async function untilListening(child: Deno.ChildProcess): Promise<string> {
  const reader = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  let out = "";
  while (!/listening on (\S+)/.test(out)) {
    const { value, done } = await reader.read();
    if (done) throw new Error(`main.ts exited before listening: ${out}`);
    out += value;
  }
  (async () => {
    while (!(await reader.read()).done) { /* drain */ }
  })();
  return out.match(/listening on (\S+)/)![1];
}

/**
 * A worker process (main.ts with PP_ROLE=worker) on the stack's database, delivering to the
 * stack's sink, with the stack's PP_SECRET (one deployment shares it: tracking tokens, DKIM
 * keys at rest) and a data dir of its own; `env` adds or overrides.
 */
export async function spawnWorker(
  stack: Stack,
  env: Record<string, string> = {},
): Promise<{ child: Deno.ChildProcess; url: string }> {
  return await spawnMain({
    DATABASE_URL: stack.databaseUrl,
    PP_ROLE: "worker",
    SMTP_URL: stack.sink.url,
    PP_DATA_DIR: await Deno.makeTempDir({ prefix: "pp-test-worker-" }),
    PP_SECRET: stack.service.deps.secrets.secret,
    ...env,
  });
}

/**
 * Polls `/healthz` every 50 ms while an attack runs. `stop()` resolves to the slowest answer
 * in ms (a request that failed, or answered other than 200, counts as Infinity), so a test
 * can assert the service stayed responsive throughout.
 */
export function watchHealth(url: string): { stop(): Promise<number>; readonly probes: number } {
  let running = true;
  let worst = 0;
  let probes = 0;
  const loop = (async () => {
    while (running) {
      const t0 = performance.now();
      try {
        const res = await fetch(`${url}/healthz`, { signal: AbortSignal.timeout(5_000) });
        await res.body?.cancel();
        worst = Math.max(worst, res.status === 200 ? performance.now() - t0 : Infinity);
      } catch {
        worst = Infinity;
      }
      probes++;
      await new Promise((r) => setTimeout(r, 50));
    }
  })();
  return {
    /** Probes answered (or failed) so far. */
    get probes() {
      return probes;
    },
    async stop() {
      running = false;
      await loop;
      return worst;
    },
  };
}

/**
 * Runs `work` while watchHealth probes `/healthz`; fails unless `/healthz` was probed and
 * every probe answered 200 within 1 s. Returns what `work` gave and how long it took (ms).
 */
export async function whileHealthy<T>(stack: Stack, work: () => Promise<T>): Promise<{ value: T; ms: number }> {
  const health = watchHealth(stack.url);
  const started = performance.now();
  const done = await work().then((value) => ({ value }), (error: unknown) => ({ error }));
  const ms = performance.now() - started;
  const worst = await health.stop();
  if ("error" in done) throw done.error; // what `work` failed with comes first
  const { value } = done;
  assert(health.probes > 0, "/healthz was probed");
  assert(worst < 1000, `/healthz took ${worst.toFixed(0)} ms (Infinity: it failed or answered other than 200)`);
  return { value, ms };
}

/** Test options shared by every file: the stack holds sockets across steps. */
export const opts = { sanitizeOps: false, sanitizeResources: false } as const;

/** A JSON value as a response carries it (tests read fields without declaring shapes). */
// deno-lint-ignore no-explicit-any
export type Json = any;

/** Resolves after `ms` milliseconds (e.g. to let a duplicate that should not exist arrive). */
export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** The mails the sink accepted for `address` (compared without case). */
export function mailsTo(stack: Stack, address: string): ReceivedMail[] {
  return stack.sink.messages.filter((m) => m.to.some((a) => a.toLowerCase() === address.toLowerCase()));
}

/** GraphQL with a tenant key (or the admin token), asserting no errors; returns `data`. */
export async function gql(
  stack: Stack,
  key: string,
  query: string,
  variables: Record<string, unknown> = {},
): Promise<Json> {
  const r = await stack.gql(query, variables, key);
  assertEquals(r.body.errors, undefined, JSON.stringify(r.body.errors));
  return r.body.data;
}

/** `Subscription.sendEvents` with every field of an event, for `subscribe`. */
export const SEND_EVENTS = `subscription($sendId: ID, $batchId: ID) {
  sendEvents(sendId: $sendId, batchId: $batchId) { id sendId contactId type occurredAt data }
}`;

/** One server-sent event, its data parsed (null when it has none). */
export interface Sse {
  event: string;
  data: Json;
}

/** A `sendEvents` subscription over server-sent events, read event by event. */
export interface SseStream {
  status: number;
  contentType: string;
  /**
   * The next event (`next` or `complete`; blocks of ":" ping lines are skipped), `{ event: "end" }`
   * once the stream closed; throws after `timeoutMs` (10 s unless given) without one.
   */
  next(timeoutMs?: number): Promise<Sse>;
  /** The `sendEvents` payloads of the next `n` events; throws on anything but a `next` event without errors. */
  take(n: number, timeoutMs?: number): Promise<Json[]>;
  close(): void;
}

/**
 * POSTs SEND_EVENTS with `variables` to /graphql with `Accept: text/event-stream`, as the tenant
 * `key` or with the bearer `token`, and reads its stream.
 */
export async function subscribe(
  stack: Stack,
  variables: Record<string, unknown>,
  auth: { key?: string; token?: string },
): Promise<SseStream> {
  const ac = new AbortController();
  const headers: Record<string, string> = { "content-type": "application/json", accept: "text/event-stream" };
  if (auth.key) headers["x-api-key"] = auth.key;
  if (auth.token) headers.authorization = `Bearer ${auth.token}`;
  const res = await fetch(`${stack.url}/graphql`, {
    method: "POST",
    headers,
    body: JSON.stringify({ query: SEND_EVENTS, variables }),
    signal: ac.signal,
  });
  const reader = res.body!.pipeThrough(new TextDecoderStream()).getReader();
  let buf = "";
  let reading: Promise<ReadableStreamReadResult<string>> | null = null;
  const next = async (timeoutMs = 10_000): Promise<Sse> => {
    const until = Date.now() + timeoutMs;
    while (true) {
      const i = buf.indexOf("\n\n");
      if (i >= 0) {
        const block = buf.slice(0, i);
        buf = buf.slice(i + 2);
        const lines = block.split("\n").filter((l) => !l.startsWith(":")); // ":" lines are pings
        if (lines.length === 0) continue;
        const event = lines.find((l) => l.startsWith("event:"))?.slice(6).trim() ?? "message";
        const data = lines.filter((l) => l.startsWith("data:")).map((l) => l.slice(5).trim()).join("\n");
        return { event, data: data ? JSON.parse(data) : null };
      }
      // One read in flight at a time, kept across timeouts so that no chunk is lost.
      reading ??= reader.read();
      let timer: ReturnType<typeof setTimeout> | undefined;
      const timeout = new Promise<never>((_, reject) => {
        timer = setTimeout(
          () => reject(new Error("timed out waiting for a server-sent event")),
          Math.max(0, until - Date.now()),
        );
      });
      try {
        const r = await Promise.race([reading, timeout]);
        reading = null;
        if (r.done) return { event: "end", data: null };
        buf += r.value;
      } finally {
        clearTimeout(timer);
      }
    }
  };
  const take = async (n: number, timeoutMs = 10_000) => {
    const out = [];
    while (out.length < n) {
      const e = await next(timeoutMs);
      if (e.event !== "next") throw new Error(`expected an event, got ${JSON.stringify(e)} after ${out.length}`);
      if (e.data.errors) throw new Error(`stream error: ${JSON.stringify(e.data.errors)}`);
      out.push(e.data.data.sendEvents);
    }
    return out;
  };
  return {
    status: res.status,
    contentType: res.headers.get("content-type") ?? "",
    next,
    take,
    close: () => {
      // Cancel the body, then abort: an abort alone can leave a piped body's connection open.
      reader.cancel().catch(() => {});
      ac.abort();
    },
  };
}

/** The account's emails used this month, as GraphQL shows it. */
export async function used(stack: Stack, key: string): Promise<number> {
  return (await gql(stack, key, `{ account { usage { used } } }`)).account.usage.used;
}

/** POST /api/v1/sends (with `headers`, e.g. an Idempotency-Key), asserting 202; returns the body. */
export async function send(
  stack: Stack,
  key: string,
  body: Record<string, unknown>,
  headers?: Record<string, string>,
): Promise<Json> {
  const r = await stack.api("POST", "/api/v1/sends", { key, body, headers });
  assertEquals(r.status, 202, JSON.stringify(r.body));
  return r.body;
}

/** GET /api/v1/sends/:id, asserting 200; returns the send with its events. */
export async function getSend(stack: Stack, key: string, id: string): Promise<Json> {
  const r = await stack.api("GET", `/api/v1/sends/${id}`, { key });
  assertEquals(r.status, 200, JSON.stringify(r.body));
  return r.body;
}

/** A contact's status as GraphQL shows it (`undefined` when there is no such contact). */
export async function contactStatus(stack: Stack, key: string, email: string): Promise<string | undefined> {
  const d = await gql(stack, key, `query($e: String!) { contact(email: $e) { status } }`, { e: email });
  return d.contact?.status;
}

/**
 * Sends a batch of `n` (addresses `<prefix>-<i>@example.test`) with `key` and waits until none
 * of them is pending; returns the send ids.
 */
export async function sendBatchAndWait(
  stack: Stack,
  key: string,
  templateId: string,
  prefix: string,
  n: number,
): Promise<string[]> {
  const recipients = Array.from({ length: n }, (_, i) => ({ to: `${prefix}-${i}@example.test` }));
  const r = await stack.api("POST", "/api/v1/sends/batch", { key, body: { templateId, recipients } });
  assertEquals(r.status, 202, JSON.stringify(r.body));
  await waitFor(
    async () =>
      (await stack.count("select count(*) from sends where batch_id = $1 and status in ('queued','sending')", [
        r.body.batchId,
      ])) === 0,
    30_000,
    "the batch to go out",
  );
  return r.body.sends.map((s: { id: string }) => s.id);
}

/** The caller's account with its sending state and reputation, as GraphQL shows it. */
export async function accountState(stack: Stack, key: string): Promise<Json> {
  const r = await stack.gql(
    `{ account { sendingEnabled pausedBy pausedReason
        reputation { sends bounces complaints bounceRate complaintRate status } } }`,
    {},
    key,
  );
  return r.body.data.account;
}

/** The caller's account (as accountState reads it) once its sending is paused; fails after 10 s. */
export function untilPaused(stack: Stack, key: string): Promise<Json> {
  return waitFor(
    async () => {
      const x = await accountState(stack, key);
      return x.sendingEnabled === false ? x : null;
    },
    10_000,
    "the account to be paused",
  );
}

const INBOUND_SECRET = "inbound-secret-0123456789";
const BOUNCE_DOMAIN = "bounces.shop.test";
/**
 * The inbound side of a test stack: the webhook's HMAC secret, the VERP bounce domain, and
 * the env that turns on the inbound SMTP listener (free port) with delivery by reports.
 */
export const INBOUND = {
  secret: INBOUND_SECRET,
  bounceDomain: BOUNCE_DOMAIN,
  env: {
    PP_INBOUND_SMTP_PORT: "0",
    PP_BOUNCE_DOMAIN: BOUNCE_DOMAIN,
    PP_INBOUND_SECRET: INBOUND_SECRET,
    PP_DELIVERY_CONFIRMATION: "reports",
  },
} as const;

/** POST to an inbound webhook path, the raw body signed with INBOUND.secret (or as `o` says). */
export function postSigned(
  stack: Stack,
  path: string,
  body: unknown,
  o: { secret?: string; t?: number; header?: string | null; raw?: string } = {},
): Promise<JsonResponse> {
  const raw = o.raw ?? JSON.stringify(body);
  const headers: Record<string, string> = { "content-type": "application/json" };
  const sig = o.header === undefined ? signatureHeader(o.secret ?? INBOUND.secret, raw, o.t) : o.header;
  if (sig !== null) headers["x-pp-signature"] = sig;
  return stack.api("POST", path, { raw, headers });
}

/** Mails `raw` to the inbound listener with a null sender (`MAIL FROM:<>`), as MTAs send reports; the SMTP answer. */
export async function report(port: number, to: string, raw: string): Promise<string> {
  const tr = nodemailer.createTransport({ host: "127.0.0.1", port, secure: false, ignoreTLS: true });
  try {
    return (await tr.sendMail({ envelope: { from: "", to: [to] }, raw })).response;
  } finally {
    tr.close();
  }
}

/**
 * Sends one mail to `to` on an INBOUND stack and waits until the sink has it; the send is
 * `sent` (with PP_DELIVERY_CONFIRMATION=reports a 250 is only `sent`: reports decide `delivered`).
 */
export async function deliverSent(
  stack: Stack,
  tenant: TestTenant,
  to: string,
): Promise<{ send: Json; mail: ReceivedMail }> {
  const r = await stack.api("POST", "/api/v1/sends", { key: tenant.key, body: { templateId: tenant.templateId, to } });
  assertEquals(r.status, 202, JSON.stringify(r.body));
  const send = await waitForStatus(stack, tenant.key, r.body.id, ["sent", "delivered", "bounced", "failed"]);
  assertEquals(send.status, "sent", "with PP_DELIVERY_CONFIRMATION=reports a 250 is only `sent`");
  const mail = stack.sink.messages.find((m) => m.messageId === send.messageId);
  assert(mail, "the sink received the mail");
  return { send, mail };
}

/** Waits until the send has at least `count` events of `type`; returns the send as REST shows it. */
export async function waitForEvent(stack: Stack, key: string, id: string, type: string, count = 1): Promise<Json> {
  return await waitFor(
    async () => {
      const s = await getSend(stack, key, id);
      return s.events.filter((e: Json) => e.type === type).length >= count ? s : null;
    },
    5000,
    `${count} ${type} event(s) on ${id}`,
  );
}

/** Waits until the send has at least `count` events of `type`; returns those events, oldest first. */
export async function waitForEvents(
  stack: Stack,
  key: string,
  id: string,
  type: string,
  count: number,
): Promise<Json[]> {
  return (await waitForEvent(stack, key, id, type, count)).events.filter((e: Json) => e.type === type);
}

/** The header block of a received mail as transmitted, up to the blank line (folded lines as they came). */
export function headerBlock(m: ReceivedMail): string {
  return m.raw.split(/\r?\n\r?\n/, 1)[0];
}

/** A header of the raw message as transmitted (unfolded), every occurrence, in order. */
export function rawHeader(m: ReceivedMail, name: string): string[] {
  return headerBlock(m).replace(/\r?\n(?=[ \t])/g, "").split(/\r?\n/)
    .filter((l) => l.toLowerCase().startsWith(name.toLowerCase() + ":"))
    .map((l) => l.slice(name.length + 1).trim());
}

/**
 * Asserts that `errors[]` names exactly the `expected` fields: each expected path is named
 * (itself or a key under it, like `personalizations.x`), and nothing else is.
 */
export function assertPaths(errors: unknown, expected: string[], show: string): void {
  const got = Array.isArray(errors) ? errors.map((e: { path?: unknown }) => String(e.path)) : [];
  const under = (p: string, e: string) => p === e || p.startsWith(e + ".");
  assert(got.length > 0, `errors[] is empty: ${show}`);
  for (const p of got) assert(expected.some((e) => under(p, e)), `unexpected path ${p}: ${show}`);
  for (const e of expected) assert(got.some((p) => under(p, e)), `no error names ${e}: ${show}`);
}

/**
 * Asserts a REST problem: status, media type, `code`, the body's `status`, `type` and
 * `title`, and the fields `errors[]` names: `paths` as assertPaths takes them, or
 * `{ exactly }` for exactly these `errors[].path`s, as many of each. Without either, a
 * validation_failed must still name some field.
 */
export function assertProblem(
  r: JsonResponse,
  status: number,
  code: string,
  paths?: string | string[] | { exactly: string[] },
): void {
  const show = JSON.stringify(r.body).slice(0, 2000);
  assertEquals(r.status, status, show);
  assertEquals(r.headers.get("content-type")?.split(";")[0].trim(), "application/problem+json", show);
  assertEquals(r.body.code, code, show);
  assertEquals(r.body.status, status, show);
  assert(typeof r.body.type === "string" && typeof r.body.title === "string", show);
  if (paths === undefined) {
    if (code === "validation_failed") assert(r.body.errors?.length > 0, show);
  } else if (typeof paths === "object" && !Array.isArray(paths)) {
    const got = (r.body.errors ?? []).map((e: { path: string }) => e.path).sort();
    assertEquals(got, [...paths.exactly].sort(), show);
  } else assertPaths(r.body.errors, [paths].flat(), show);
}

/** A TXT value as DNS carries it: character-strings of at most 255 bytes. */
export const txtChunks = (value: string): string[] => value.match(/.{1,255}/g) ?? [""];

/** mailauth's resolver over TXT `records` (name → values); any other name or type is ENOTFOUND. */
export function txtResolver(records: Map<string, string[]>): (name: string, type: string) => Promise<string[][]> {
  return (name, type) => {
    const v = type === "TXT" ? records.get(name.toLowerCase()) : undefined;
    if (!v) return Promise.reject(Object.assign(new Error("not found"), { code: "ENOTFOUND" }));
    return Promise.resolve(v.map(txtChunks));
  };
}

/** SHA-256 of `b` in hex: compares a delivered file with the one sent. */
export const sha256 = async (b: Uint8Array): Promise<string> =>
  Buffer.from(await crypto.subtle.digest("SHA-256", new Uint8Array(b))).toString("hex");

/** `n` random bytes (not compressible, like a PDF's streams). */
export function randomBytes(n: number): Uint8Array {
  const out = new Uint8Array(n);
  for (let i = 0; i < n; i += 65536) crypto.getRandomValues(out.subarray(i, Math.min(n, i + 65536)));
  return out;
}

/** The TXT records the tenant's domains ask for (DKIM keys among them), by lower-case name, for txtResolver. */
export async function dnsOf(stack: Stack, key: string): Promise<Map<string, string[]>> {
  const { body } = await stack.gql(`{ domains { dnsRecords { type name value } } }`, {}, key);
  const records = new Map<string, string[]>();
  for (const d of body.data.domains) {
    for (const r of d.dnsRecords) if (r.type === "TXT") records.set(r.name.toLowerCase(), [r.value]);
  }
  return records;
}
