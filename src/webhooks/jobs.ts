/**
 * The `dispatch_webhook` task: one signed POST of one delivery (Standard Webhooks, signed with
 * the npm `standardwebhooks` package), its outcome recorded with the next attempt's job.
 *
 * - A `2xx` within PP_WEBHOOK_TIMEOUT_MS (10 s) is success; anything else (another status, a
 *   redirect, a timeout, a refused or reset connection, an address not allowed) is a failed
 *   attempt, retried after RETRY_DELAYS_S; the last failure ends the delivery `failed`.
 * - Every retry keeps the delivery's `webhook-id` (`msg_<delivery id>`) and body; the
 *   timestamp and signature are the attempt's own.
 * - Each attempt resolves the endpoint's host and checks every address (address.ts); the
 *   request then goes over a keep-alive client pinned to the checked address (Deno's fetch
 *   with a `tcp` transport: the URL's host still names the site, for Host and TLS). Redirects
 *   are never followed. (node:http's keep-alive agent was not used: under Deno it sent a
 *   POST again when an attempt on a reused connection was cut at its timeout.)
 * - A job carries one delivery, or a group queued together (migration 0011), in the
 *   webhooks' own queue (jobs/schemas.ts). Its deliveries are loaded at once and posted
 *   GROUP_PARALLEL at a time; each outcome is recorded (a group commit) while the next POST
 *   goes out, and the job ends when every outcome is. A throw (the database gone
 *   mid-attempt) leaves the job to graphile-worker's retries; a retried group skips what is
 *   no longer pending.
 */
import type { Task } from "graphile-worker";
import { LRUCache } from "lru-cache";
import { Webhook } from "standardwebhooks";
import type { Deps } from "../context.ts";
import { decryptSecret } from "../crypto.ts";
import { countWebhookAttempt, type WebhookOutcome } from "../metrics/metrics.ts";
import { AddressNotAllowed, addressToDial } from "./address.ts";
import { DispatchWebhookPayload } from "./inputs.ts";
import * as repo from "./repo.ts";
import { GroupCommit } from "../db/group_commit.ts";

/** Seconds before each retry (API.md): 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h; 8 attempts in all. */
export const RETRY_DELAYS_S = [5, 300, 1800, 7200, 18_000, 36_000, 36_000];
/** Bytes of an answer kept with its attempt. */
const KEPT_BODY = 1024;
/** Deliveries of one grouped job in flight at once. */
const GROUP_PARALLEL = 10;
/** How long the secret before a rotation keeps being signed with. */
const ROTATION_OVERLAP_MS = 24 * 3600_000;

/** What one POST got: a status and the start of the body, or an error; `outcome` for the metrics. */
interface PostResult {
  status: number | null;
  body: string | null;
  error: string | null;
  outcome: WebhookOutcome;
}

/** Keep-alive clients by the address they are pinned to, at most 256 (the least used is closed). */
const clients = new LRUCache<string, Deno.HttpClient>({
  max: 256,
  dispose: (client) => client.close(),
});

function clientFor(address: string, port: number): Deno.HttpClient {
  const key = `${address}|${port}`;
  let client = clients.get(key);
  if (!client) {
    client = Deno.createHttpClient({ proxy: { transport: "tcp", hostname: address, port }, poolIdleTimeout: 60_000 });
    clients.set(key, client);
  }
  return client;
}

/**
 * Checked addresses by host for 30 s: a lookup per POST went to the resolver's thread pool
 * for every event. Only allowed answers are kept (the connection still goes to the checked
 * address); a refusal is looked up again next time.
 */
const checked = new LRUCache<string, string>({ max: 1_000, ttl: 30_000 });

async function dialable(host: string, allowPrivate: boolean): Promise<string> {
  const key = `${allowPrivate}|${host}`;
  let address = checked.get(key);
  if (!address) checked.set(key, address = await addressToDial(host, allowPrivate));
  return address;
}

/** POSTs `body` to `url` on a client pinned to an allowed address, reading at most KEPT_BODY; never rejects. */
async function post(
  url: URL,
  headers: Record<string, string>,
  body: string,
  opts: { timeoutMs: number; allowPrivate: boolean },
): Promise<PostResult> {
  const signal = AbortSignal.timeout(opts.timeoutMs);
  try {
    const address = await dialable(url.hostname, opts.allowPrivate);
    const port = Number(url.port) || (url.protocol === "https:" ? 443 : 80);
    const res = await fetch(url, {
      method: "POST",
      headers,
      body,
      redirect: "manual",
      signal,
      client: clientFor(address, port),
    });
    let text = "";
    if (res.body) {
      const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
      while (text.length < KEPT_BODY) {
        const { value, done } = await reader.read();
        if (done) break;
        text += value;
      }
      // Enough kept: the rest is not read.
      await reader.cancel().catch(() => {});
    }
    const ok = res.status >= 200 && res.status < 300;
    return {
      status: res.status,
      body: text.slice(0, KEPT_BODY),
      error: null,
      outcome: ok ? "succeeded" : "http_error",
    };
  } catch (err) {
    const timedOut = signal.aborted;
    const message = timedOut ? `no answer within ${opts.timeoutMs} ms` : String((err as Error)?.message ?? err);
    const outcome = timedOut ? "timeout" : err instanceof AddressNotAllowed ? "refused" : "network_error";
    return { status: null, body: null, error: message.slice(0, 500), outcome };
  }
}

/** Signers by sealed secret (a rotation seals a new one, so an entry never goes stale): decrypting is not free. */
const signers = new LRUCache<string, Webhook>({ max: 1_000 });

/** The `webhook-signature` value: `v1,…` with the current secret, and the previous one during the overlap. */
function signature(deps: Deps, d: repo.DeliveryToDispatch, msgId: string, at: Date, body: string): string {
  const sealed = [d.secret_enc];
  if (d.previous_secret_enc && d.rotated_at && Date.now() - d.rotated_at.getTime() < ROTATION_OVERLAP_MS) {
    sealed.push(d.previous_secret_enc);
  }
  return sealed.map((enc) => {
    let signer = signers.get(enc);
    if (!signer) signers.set(enc, signer = new Webhook(decryptSecret(deps.secrets.secret, enc)));
    return signer.sign(msgId, at, body);
  }).join(" ");
}

/** Builds the `dispatch_webhook` task for a process. */
export function dispatchWebhookTask(deps: Deps): Task {
  const postOpts = { timeoutMs: deps.config.webhookTimeoutMs, allowPrivate: deps.config.webhookAllowPrivate };
  // The loads and outcomes of the attempts running at once are read and written in groups
  // (one statement each, GroupCommit): a transaction per attempt held the backlog behind the drain.
  const loads = new GroupCommit<string, repo.DeliveryToDispatch | undefined>(async (ids) => {
    const found = await repo.deliveriesToDispatch(deps.db, ids);
    return ids.map((id) => found.get(id));
  });
  const outcomes = new GroupCommit<repo.AttemptOutcome, boolean>((os) => repo.recordAttempts(deps.db, os));
  /**
   * One attempt of one delivery, loaded already. Resolves once the POST is done, with the
   * recording of its outcome (and the next attempt's job when it failed) still under way:
   * the lane goes on to its next POST meanwhile, and the job awaits every recording.
   */
  async function attempt(d: repo.DeliveryToDispatch): Promise<{ recorded: Promise<void> }> {
    if (!d.enabled) return { recorded: repo.failDelivery(deps.db, d.id) };
    const url = new URL(d.url);
    const body = d.body;
    const msgId = `msg_${d.id}`;
    const at = new Date();
    const headers = {
      "content-type": "application/json",
      "user-agent": "PigeonPerch-Webhooks/1",
      "webhook-id": msgId,
      "webhook-timestamp": String(Math.floor(at.getTime() / 1000)),
      "webhook-signature": signature(deps, d, msgId, at, body),
    };
    const t0 = performance.now();
    const r = await post(url, headers, body, postOpts);
    const durationMs = Math.round(performance.now() - t0);
    countWebhookAttempt(r.outcome);
    const ok = r.outcome === "succeeded";
    const attempt = d.attempts + 1;
    const delay = RETRY_DELAYS_S[attempt - 1];
    const nextAttemptAt = ok || delay === undefined ? null : new Date(Date.now() + delay * 1000);
    const recorded = outcomes.add({
      deliveryId: d.id,
      endpointId: d.endpoint_id,
      ok,
      responseStatus: r.status,
      responseBody: r.body,
      error: r.error ?? (ok ? null : `answered ${r.status}`),
      durationMs,
      nextAttemptAt,
    });
    return {
      recorded: recorded.then((disabled) => {
        const facts = { deliveryId: d.id, endpointId: d.endpoint_id, attempt, status: r.status, ms: durationMs };
        if (ok) deps.log.debug("webhook delivered", facts);
        else deps.log.info("webhook attempt failed", { ...facts, err: r.error, retryAt: nextAttemptAt?.toISOString() });
        if (disabled) {
          deps.log.warn("webhook endpoint disabled after failing for 5 days", { endpointId: d.endpoint_id });
        }
      }),
    };
  }

  return async (payload) => {
    const p = DispatchWebhookPayload.parse(payload);
    const ids = "deliveryId" in p ? [p.deliveryId] : p.deliveryIds;
    // Deleted ones, and those done already (a redelivery raced this job), are skipped.
    const due = (await Promise.all(ids.map((id) => loads.add(id)))).filter((d) => d?.status === "pending");
    // A group's deliveries a few at a time: each waits on its receiver, not on the others.
    // Each recording gets its handler at once: one rejected while the lanes still post would
    // otherwise be an unhandled rejection, which ends the thread and the process.
    const recordings: Promise<void>[] = [];
    let failure: { err: unknown } | null = null;
    let next = 0;
    await Promise.all(Array.from({ length: Math.min(GROUP_PARALLEL, due.length) }, async () => {
      // After a failed recording (the database gone) no more POSTs: each would be sent again.
      while (next < due.length && !failure) {
        const { recorded } = await attempt(due[next++]!);
        recordings.push(recorded.catch((err) => void (failure ??= { err })));
      }
    }));
    await Promise.all(recordings);
    // The job fails: graphile-worker retries it, and the retry skips what was recorded.
    if (failure) throw (failure as { err: unknown }).err;
  };
}
