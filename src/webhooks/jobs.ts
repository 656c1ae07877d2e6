/**
 * The webhook dispatcher: each worker process claims due deliveries from `webhook_queue`
 * (migration 0023) as it has room for them and POSTs each one, signed (Standard Webhooks,
 * sign.ts); each outcome is recorded with a group commit.
 *
 * - A `2xx` within PP_WEBHOOK_TIMEOUT_MS (10 s) is success; anything else (another status, a
 *   redirect, a timeout, a refused or reset connection, an address not allowed) is a failed
 *   attempt, retried after RETRY_DELAYS_S; the last failure ends the delivery `failed`.
 * - Every retry keeps the delivery's `webhook-id` (`msg_<delivery id>`) and body; the
 *   timestamp and signature are the attempt's own.
 * - Each attempt resolves the endpoint's host and checks every address (address.ts); the
 *   request then goes over a keep-alive connection to the checked address (http.ts, the
 *   dispatcher's own client: the URL's host still names the site, for Host and TLS).
 *   Redirects are never followed. (node:http's keep-alive agent was not used: under Deno it
 *   sent a POST again when an attempt on a reused connection was cut at its timeout.)
 * - Up to IN_FLIGHT POSTs at once per process. A claim takes as many due deliveries as there
 *   is room for, and leases them (repo.claimDue). An outcome is recorded again until the
 *   database takes it; a delivery whose outcome never was (its process killed, or stopped
 *   while the database was away) is claimed again when its lease runs out and goes out again
 *   with the same `webhook-id`. Claims are made every PP_WORKER_POLL_MS, and as soon
 *   as CLAIM_AT slots are free while the queue still had more.
 */
import { LRUCache } from "lru-cache";
import type { Deps } from "../context.ts";
import { decryptSecret } from "../crypto.ts";
import { countWebhookAttempt, type WebhookOutcome } from "../metrics/metrics.ts";
import { AddressNotAllowed, addressToDial } from "./address.ts";
import { HttpTimeout, PostClient } from "./http.ts";
import { sign, type SigningKey, signingKey } from "./sign.ts";
import * as repo from "./repo.ts";
import { GroupCommit } from "../db/group_commit.ts";
import { isDatabaseUnavailable } from "../errors.ts";

/** Seconds before each retry (API.md): 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h; 8 attempts in all. */
export const RETRY_DELAYS_S = [5, 300, 1800, 7200, 18_000, 36_000, 36_000];
/** Bytes of an answer kept with its attempt (a character cut at the end is decoded as U+FFFD). */
const KEPT_BODY = 1024;
/**
 * POSTs in flight per process at most: the 20 jobs × 10 lanes of the graphile-worker tasks
 * this replaced (migration 0023).
 */
const IN_FLIGHT = 200;
/** Attempts at most whose POST is done or under way and whose outcome is not recorded yet. */
const UNRECORDED = 1_000;
/** The first wait before recording an outcome again (doubling to 10×). */
const RECORD_RETRY_MS = 500;
/**
 * Claimed deliveries waiting for a slot, at most: a claim takes up to IN_FLIGHT + AHEAD less
 * what is posting or waiting. Under load a claim's round trip is 15–25 ms, and with only the
 * free slots to fill each claim took ~90 and the next could not start until it returned:
 * claims in series capped the dispatcher at ~4,500/s during an acceptance burst.
 */
const AHEAD = IN_FLIGHT;
/** Room (free slots and places ahead) that makes a claim at once while the queue had more than the last claim took. */
const CLAIM_AT = 50;
/** How long a claim holds a delivery beyond its POST's timeout: time to record the outcome. */
const LEASE_MARGIN_S = 10;
/** How long the secret before a rotation keeps being signed with. */
const ROTATION_OVERLAP_MS = 24 * 3600_000;

/** What one POST got: a status and the start of the body, or an error; `outcome` for the metrics. */
interface PostResult {
  status: number | null;
  body: string | null;
  error: string | null;
  outcome: WebhookOutcome;
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

const decoder = new TextDecoder();
const encoder = new TextEncoder();

/** POSTs `body` to `url` at an allowed address of its host, keeping at most KEPT_BODY of the answer; never rejects. */
async function post(
  client: PostClient,
  url: URL,
  headers: Record<string, string>,
  body: string,
  opts: { timeoutMs: number; allowPrivate: boolean },
): Promise<PostResult> {
  try {
    const address = await dialable(url.hostname, opts.allowPrivate);
    const port = Number(url.port) || (url.protocol === "https:" ? 443 : 80);
    const res = await client.post({ address, port, url }, headers, encoder.encode(body), {
      timeoutMs: opts.timeoutMs,
      keep: KEPT_BODY,
    });
    const ok = res.status >= 200 && res.status < 300;
    return {
      status: res.status,
      body: decoder.decode(res.body),
      error: null,
      outcome: ok ? "succeeded" : "http_error",
    };
  } catch (err) {
    const message = String((err as Error)?.message ?? err);
    const outcome = err instanceof HttpTimeout
      ? "timeout"
      : err instanceof AddressNotAllowed
      ? "refused"
      : "network_error";
    return { status: null, body: null, error: message.slice(0, 500), outcome };
  }
}

/** Signing keys by sealed secret (a rotation seals a new one, so an entry never goes stale): decrypting is not free. */
const keys = new LRUCache<string, SigningKey>({ max: 1_000 });

/** The `webhook-signature` value: `v1,…` with the current secret, and the previous one during the overlap. */
function signature(deps: Deps, d: repo.DeliveryToDispatch, msgId: string, at: Date, body: string): string {
  const sealed = [d.secret_enc];
  if (d.previous_secret_enc && d.rotated_at && Date.now() - d.rotated_at.getTime() < ROTATION_OVERLAP_MS) {
    sealed.push(d.previous_secret_enc);
  }
  return sealed.map((enc) => {
    let key = keys.get(enc);
    if (!key) keys.set(enc, key = signingKey(decryptSecret(deps.secrets.secret, enc)));
    return sign(key, msgId, at, body);
  }).join(" ");
}

/** A running dispatcher. */
export interface WebhookDispatcher {
  /** No more claims; resolves when the POSTs in flight are recorded, or after `waitMs`. */
  stop(waitMs: number): Promise<void>;
}

/** Starts this process's dispatcher (the worker roles run one). */
export function startWebhookDispatcher(deps: Deps): WebhookDispatcher {
  const { config, log } = deps;
  const postOpts = { timeoutMs: config.webhookTimeoutMs, allowPrivate: config.webhookAllowPrivate };
  // A claimed delivery may wait ahead while the IN_FLIGHT before it run (each within one
  // timeout: there are never more waiting than posting), then its own POST takes one more.
  const leaseS = 2 * Math.ceil(config.webhookTimeoutMs / 1000) + LEASE_MARGIN_S;
  // A delivery may still start after waiting a timeout and half the margin: its POST then
  // ends within the lease with half the margin left to record it. (Waiting exactly one timeout
  // is common: the POSTs before it, to an endpoint that hangs, time out just then.)
  const staleAfterMs = config.webhookTimeoutMs + LEASE_MARGIN_S * 500;
  const client = new PostClient();
  const outcomes = new GroupCommit<repo.AttemptOutcome, boolean>((os) => repo.recordAttempts(deps.db, os));
  /** Attempts whose POST is under way, and those whose outcome is being recorded. */
  const posting = new Set<Promise<unknown>>();
  const recording = new Set<Promise<unknown>>();
  /** Claimed deliveries waiting for a slot, oldest due first, with when they were claimed (performance.now()). */
  const ahead: { d: repo.DeliveryToDispatch; at: number }[] = [];
  let stopping = false;
  let claiming = false;
  /** The claim under way, or the last one (settled). */
  let claimRun: Promise<void> = Promise.resolve();
  /** Whether the last claim filled every free slot: the queue may have more. */
  let more = false;
  /** Whether the last claim failed (the database away): logged once per outage. */
  let failing = false;

  /** Slots free: a POST each, while not too many outcomes wait for their group commit. */
  const free = () => Math.min(IN_FLIGHT - posting.size, UNRECORDED - posting.size - recording.size);

  /**
   * How many a claim may take now: room for the free slots and the places ahead. Those ahead
   * count against UNRECORDED too: while outcomes wait for the database, nothing is claimed
   * that could not be started (it would be held from the other workers).
   */
  const room = () =>
    Math.min(
      IN_FLIGHT + AHEAD - posting.size - ahead.length,
      UNRECORDED - posting.size - recording.size - ahead.length,
    );

  /** Tracks a step of an attempt in `set` until it settles; its end may free a slot, and make room for a claim. */
  const track = (set: Set<Promise<unknown>>, p: Promise<unknown>) => {
    set.add(p);
    void p.finally(() => {
      set.delete(p);
      start();
      if (more) void claim(CLAIM_AT);
    });
  };

  /**
   * Starts the deliveries waiting ahead while there are free slots (not once stopping: stop()
   * releases them). One that waited longer than STALE_AFTER_MS (slots held by a slow endpoint,
   * outcomes the database cannot take) is not sent but released: its lease could run out
   * during its POST, and another worker send it too; released, any worker may claim it.
   */
  function start(): void {
    const stale = performance.now() - staleAfterMs;
    const released: repo.DeliveryToDispatch[] = [];
    for (let n = free(); n > 0 && ahead.length && !stopping;) {
      const { d, at } = ahead.shift()!;
      if (at < stale) {
        released.push(d);
        continue;
      }
      // post() never rejects, and attempt() hands what can to its own handlers.
      track(posting, attempt(d).catch(unrecorded(d)));
      n--;
    }
    if (released.length) void release(released);
  }

  /** Ends the leases of claimed deliveries not sent; if that fails, they come back when the leases run out. */
  async function release(ds: repo.DeliveryToDispatch[]): Promise<void> {
    await repo.release(deps.db, ds).catch((err) =>
      log.warn("webhook dispatcher: claims not released; they are sent when their leases run out", {
        deliveries: ds.length,
        err: String(err),
      })
    );
  }

  /** Logs an attempt whose outcome could not be recorded; never rejects. */
  const unrecorded = (d: repo.DeliveryToDispatch) => (err: unknown) =>
    log.warn("webhook attempt not recorded; it goes out again when its claim runs out", {
      deliveryId: d.id,
      endpointId: d.endpoint_id,
      leaseS,
      err: String(err),
    });

  /**
   * Records an outcome, trying again while the database is away (the claim's lease may run
   * out meanwhile, and the delivery go out again from another worker: both attempts are then
   * kept). Gives up on another error, or when the dispatcher stops; then the lease brings the
   * delivery back.
   */
  async function record(o: repo.AttemptOutcome): Promise<boolean> {
    for (let delay = RECORD_RETRY_MS;; delay = Math.min(delay * 2, 10 * RECORD_RETRY_MS)) {
      try {
        return await outcomes.add(o);
      } catch (err) {
        if (stopping || !isDatabaseUnavailable(err)) throw err;
        await new Promise((r) => setTimeout(r, delay));
      }
    }
  }

  /** Signs and POSTs a delivery; a secret this process cannot unseal (another PP_SECRET) is a refused attempt. */
  async function signAndPost(d: repo.DeliveryToDispatch): Promise<PostResult> {
    const msgId = `msg_${d.id}`;
    const at = new Date();
    let sig: string;
    try {
      sig = signature(deps, d, msgId, at, d.body);
    } catch (err) {
      const error = `not sent: the endpoint's secret could not be unsealed (${(err as Error).message})`;
      return { status: null, body: null, error: error.slice(0, 500), outcome: "refused" };
    }
    const headers = {
      "content-type": "application/json",
      "user-agent": "PigeonPerch-Webhooks/1",
      "webhook-id": msgId,
      "webhook-timestamp": String(Math.floor(at.getTime() / 1000)),
      "webhook-signature": sig,
    };
    return await post(client, new URL(d.url), headers, d.body, postOpts);
  }

  /**
   * One attempt of one claimed delivery. Its slot is free once the POST is done: the
   * outcome's recording (a group commit) goes on while the next POST goes out.
   */
  async function attempt(d: repo.DeliveryToDispatch): Promise<void> {
    // Done already (a redelivery raced a claim): nothing to send.
    if (d.status !== "pending") return track(recording, repo.unqueue(deps.db, d.id).catch(unrecorded(d)));
    if (!d.enabled) return track(recording, repo.failDelivery(deps.db, d.id).catch(unrecorded(d)));
    const t0 = performance.now();
    const r = await signAndPost(d);
    const durationMs = Math.round(performance.now() - t0);
    countWebhookAttempt(r.outcome);
    const ok = r.outcome === "succeeded";
    const delay = RETRY_DELAYS_S[d.attempts];
    const nextAttemptAt = ok || delay === undefined ? null : new Date(Date.now() + delay * 1000);
    const recorded = record({
      deliveryId: d.id,
      endpointId: d.endpoint_id,
      ok,
      responseStatus: r.status,
      responseBody: r.body,
      error: r.error ?? (ok ? null : `answered ${r.status}`),
      durationMs,
      nextAttemptAt,
    }).then((disabled) => {
      const facts = { deliveryId: d.id, endpointId: d.endpoint_id, attempt: d.attempts + 1, status: r.status };
      if (ok) log.debug("webhook delivered", { ...facts, ms: durationMs });
      else log.info("webhook attempt failed", { ...facts, ms: durationMs, err: r.error, retryAt: nextAttemptAt });
      if (disabled) log.warn("webhook endpoint disabled after failing for 5 days", { endpointId: d.endpoint_id });
    }, unrecorded(d));
    track(recording, recorded);
  }

  /** Claims due deliveries while there is room for at least `minRoom`, and starts what slots are free for. */
  function claim(minRoom: number): Promise<void> {
    if (claiming || stopping) return claimRun;
    claiming = true;
    return claimRun = claimWhileRoom(minRoom);
  }

  async function claimWhileRoom(minRoom: number): Promise<void> {
    try {
      for (let n = room(); n >= minRoom && !stopping; n = room()) {
        const due = await repo.claimDue(deps.db, n, leaseS);
        // Stopped while it was under way: none of these will be sent here.
        if (stopping) {
          if (due.length) await release(due);
          break;
        }
        if (failing) log.info("webhook dispatcher: claiming again");
        failing = false;
        more = due.length === n;
        const at = performance.now();
        for (const d of due) ahead.push({ d, at });
        start();
        if (!more) break;
        minRoom = CLAIM_AT;
      }
    } catch (err) {
      if (!failing) log.warn("webhook dispatcher: claiming failed; trying again", { err: String(err) });
      failing = true;
    } finally {
      claiming = false;
    }
  }

  const timer = setInterval(() => void claim(1), config.workerPollMs);
  void claim(1);
  return {
    async stop(waitMs) {
      stopping = true;
      clearInterval(timer);
      let timeout: ReturnType<typeof setTimeout> | undefined;
      await Promise.race([
        (async () => {
          while (posting.size || recording.size || claiming) await Promise.all([...posting, ...recording, claimRun]);
        })(),
        new Promise((res) => timeout = setTimeout(res, waitMs)),
      ]);
      clearTimeout(timeout);
      client.close();
      // Those waiting ahead were never sent: due again now, not when their leases run out
      // (within a second: the stop has a deadline, and the leases are the fallback).
      const unsent = ahead.splice(0).map((a) => a.d);
      if (unsent.length) {
        await Promise.race([release(unsent), new Promise((res) => timeout = setTimeout(res, 1_000))]);
        clearTimeout(timeout);
      }
    },
  };
}
