/**
 * Retention: what the service keeps and for how long (PP_RETENTION_DAYS, default 30).
 *
 * A run deletes sends that finished before the window (created and last changed before it,
 * in a final status: sent, delivered, bounced, failed, cancelled, suppressed), their events,
 * batches left without sends, attachment files no send refers to any more (and none accepted
 * in the last hour), webhook deliveries that are over (succeeded or failed) with their
 * attempts, expired idempotency keys (24 h, idempotency/service.ts) and outbox files
 * of the deleted sends or older than the window. A send still scheduled, queued
 * or sending is never deleted, however old.
 *
 * Kept: accounts, keys, domains, templates, contacts (with their status, so suppressions
 * stay), segments, contact events without a send, and monthly usage (account_usage), which
 * counts units, not rows. The reputation window (7 days) lies inside the retention window,
 * which the config enforces (at least 7 days).
 *
 * Every statement touches at most RETENTION_CHUNK rows and is its own transaction, so no
 * lock is held longer than one slice; rows another transaction holds are skipped and taken
 * by the next run.
 */
import { join } from "node:path";
import type { Kysely } from "kysely";
import type { Deps } from "../context.ts";
import type { Database } from "../db/tables.ts";
import { deleteExpiredKeys } from "../idempotency/service.ts";
import * as files from "../attachments/repo.ts";
import * as repo from "./repo.ts";

/** Most rows one statement deletes. */
export const RETENTION_CHUNK = 10_000;
/** Most attachment blobs one statement deletes (each may be 25 MB). */
const BLOB_CHUNK = 100;
/** A blob used by an acceptance within this many seconds stays, even with no reference yet. */
export const BLOB_GRACE_S = 3600;

/** Outbox files are `<send id>.eml` (mail/transport.ts). */
const OUTBOX_FILE = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\.eml$/;

/** What one run deleted (counts only), and how long it took. */
export interface RetentionReport {
  days: number;
  sends: number;
  events: number;
  batches: number;
  idempotencyKeys: number;
  outboxFiles: number;
  /** Attachment blobs no send refers to any more. */
  attachments: number;
  /** Webhook deliveries that were over (their attempts went with them). */
  webhookDeliveries: number;
  /** Hours of the reputation rollup. */
  reputationHours: number;
  /** Delete statements run. */
  statements: number;
  ms: number;
  /** True when a shutdown stopped the run early; the next run goes on. */
  aborted: boolean;
}

/**
 * Runs retention once over every account, deleting in slices of at most `chunk` rows per
 * statement until nothing older than the window is left (or `signal` aborts: a worker
 * stopping). Safe to run concurrently with itself and with traffic.
 */
export async function runRetention(
  deps: Deps,
  opts: { signal?: AbortSignal; chunk?: number } = {},
): Promise<RetentionReport> {
  const t0 = performance.now();
  const { db, config } = deps;
  const chunk = opts.chunk ?? RETENTION_CHUNK;
  const stopped = () => opts.signal?.aborted ?? false;
  const report: RetentionReport = {
    days: config.retentionDays,
    sends: 0,
    events: 0,
    batches: 0,
    idempotencyKeys: 0,
    outboxFiles: 0,
    attachments: 0,
    webhookDeliveries: 0,
    reputationHours: 0,
    statements: 0,
    ms: 0,
    aborted: false,
  };
  const cutoff = await repo.cutoffFor(db, config.retentionDays);
  /** Runs a delete of at most `limit` rows until one deletes fewer (or the run stops); how many went. */
  const slices = async (slice: () => Promise<number>, limit: number): Promise<number> => {
    let total = 0, n: number;
    do {
      if (stopped()) break;
      n = await slice();
      report.statements++;
      total += n;
    } while (n === limit);
    return total;
  };
  const outbox = join(config.dataDir, "outbox"); // where server.ts points the mailer's outbox
  const hasOutbox = await Deno.stat(outbox).then((s) => s.isDirectory, () => false);

  for (const accountId of await repo.allIds(db, "accounts")) {
    if (stopped()) break;
    let after: repo.SendCursor | null = null;
    while (!stopped()) {
      const slice = await repo.finishedSendsBefore(db, accountId, cutoff, after, chunk);
      if (slice.ids.length === 0) break;
      report.events += await deleteEvents(db, slice.ids, chunk, report, stopped);
      const deleted = await repo.deleteSends(db, slice.ids);
      report.statements++;
      report.sends += deleted.length;
      if (hasOutbox) report.outboxFiles += await removeFiles(outbox, deleted.map((id) => `${id}.eml`));
      if (slice.ids.length < chunk) break;
      after = slice.next;
    }
    report.batches += await slices(() => repo.deleteEmptyBatches(db, accountId, cutoff, chunk), chunk);
    report.reputationHours += await repo.deleteReputationHoursBefore(db, accountId, cutoff);
    // After the sends: their references went with them.
    const blobChunk = Math.min(chunk, BLOB_CHUNK);
    report.attachments += await slices(
      () => files.deleteUnreferencedBlobs(db, accountId, BLOB_GRACE_S, blobChunk),
      blobChunk,
    );
  }
  // Three rows an email with one endpoint (queued, sent, delivered), kept as long as sends.
  for (const endpointId of await repo.allIds(db, "webhook_endpoints")) {
    report.webhookDeliveries += await slices(
      () => repo.deleteOldWebhookDeliveries(db, endpointId, cutoff, chunk),
      chunk,
    );
  }
  if (!stopped()) {
    const keys = await deleteExpiredKeys(db, chunk, opts.signal);
    report.idempotencyKeys = keys.deleted;
    report.statements += keys.statements;
  }
  if (hasOutbox && !stopped()) report.outboxFiles += await removeOldFiles(outbox, cutoff, stopped);
  report.aborted = stopped();
  report.ms = Math.round(performance.now() - t0);
  return report;
}

/** Deletes the events of these sends, a slice per statement, until none is left. */
async function deleteEvents(
  db: Kysely<Database>,
  sendIds: string[],
  chunk: number,
  report: RetentionReport,
  stopped: () => boolean,
): Promise<number> {
  let total = 0, n: number;
  do {
    n = await repo.deleteEventsOfSends(db, sendIds, chunk);
    report.statements++;
    total += n;
  } while (n === chunk && !stopped());
  return total;
}

/** Removes these files of the outbox (missing ones are fine: not every send went there); returns how many. */
async function removeFiles(dir: string, names: string[]): Promise<number> {
  let removed = 0;
  // A few at a time: each is a syscall on the thread pool.
  for (let i = 0; i < names.length; i += 64) {
    const done = await Promise.all(
      names.slice(i, i + 64).map((name) => Deno.remove(join(dir, name)).then(() => true, () => false)),
    );
    removed += done.filter(Boolean).length;
  }
  return removed;
}

/** Removes outbox files last written before the cutoff (those of sends deleted earlier or never stored); returns how many. */
async function removeOldFiles(dir: string, cutoff: Date, stopped: () => boolean): Promise<number> {
  const old: string[] = [];
  for await (const entry of Deno.readDir(dir)) {
    if (stopped()) break;
    if (!entry.isFile || !OUTBOX_FILE.test(entry.name)) continue;
    const info = await Deno.stat(join(dir, entry.name)).catch(() => null);
    if (info?.mtime && info.mtime < cutoff) old.push(entry.name);
  }
  return await removeFiles(dir, old);
}
