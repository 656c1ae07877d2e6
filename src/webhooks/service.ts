/**
 * Outbound webhooks (API.md "Outbound webhooks", Standard Webhooks): an account's endpoints,
 * their secrets (`whsec_` + base64 of 24 random bytes, shown once, sealed at rest with
 * PP_SECRET like DKIM keys), tests, redeliveries and the delivery log. Deliveries are queued
 * by the database when events are recorded (migrations 0010, 0023) and sent by each worker's
 * dispatcher (jobs.ts).
 */
import { Buffer } from "node:buffer";
import type { Deps, Principal } from "../context.ts";
import { requireTenant } from "../context.ts";
import { encryptSecret } from "../crypto.ts";
import { AppError, invalid } from "../errors.ts";
import { decodeCursor } from "../pagination.ts";
import { isUuid, parseInput } from "../validation.ts";
import { AddressNotAllowed, assertPublicHost } from "./address.ts";
import { CreateWebhookEndpointInput, UpdateWebhookEndpointInput } from "./inputs.ts";
import * as repo from "./repo.ts";
import { registerCollector, webhookBacklog, webhookOldestDueSeconds } from "../metrics/metrics.ts";

// The webhook backlog, read at every scrape (from the webhook queue: repo.ts backlog).
registerCollector("webhooks", async (db) => {
  const { pending, oldestDueS } = await repo.backlog(db);
  webhookBacklog.set(pending);
  webhookOldestDueSeconds.set(oldestDueS);
});

/** A new endpoint secret. */
function newSecret(): string {
  return `whsec_${Buffer.from(crypto.getRandomValues(new Uint8Array(24))).toString("base64")}`;
}

/** 422 on `url` unless its host resolves, and only to allowed addresses (address.ts). */
async function checkUrl(deps: Deps, url: string): Promise<void> {
  try {
    await assertPublicHost(new URL(url).hostname, deps.config.webhookAllowPrivate);
  } catch (err) {
    if (err instanceof AddressNotAllowed) {
      throw invalid("url", "resolves to a loopback, private or link-local address");
    }
    throw invalid("url", "does not resolve");
  }
}

function notFound(): AppError {
  return new AppError("not_found", "webhook endpoint not found");
}

/** `id` when it can name a row, else the 404 of `missing` (a malformed id names nothing). */
function uuidOr(id: string, missing: () => AppError): string {
  if (!isUuid(id)) throw missing();
  return id;
}

/** Creates an endpoint; the secret is answered here only. */
export async function createEndpoint(deps: Deps, p: Principal, input: unknown) {
  const t = requireTenant(p);
  const v = parseInput(CreateWebhookEndpointInput, input);
  await checkUrl(deps, v.url);
  const secret = newSecret();
  const endpoint = await repo.insertEndpoint(deps.db, {
    account_id: t.accountId,
    url: v.url,
    description: v.description ?? null,
    event_types: v.eventTypes ?? [],
    secret_enc: encryptSecret(deps.secrets.secret, secret),
  });
  deps.log.info("webhook endpoint created", { accountId: t.accountId, endpointId: endpoint.id });
  return { endpoint, secret };
}

/** Changes the given fields of an endpoint. */
export async function updateEndpoint(deps: Deps, p: Principal, id: string, input: unknown) {
  const t = requireTenant(p);
  const v = parseInput(UpdateWebhookEndpointInput, input);
  if (v.url !== undefined) await checkUrl(deps, v.url);
  const row = await repo.updateEndpoint(deps.db, t.accountId, uuidOr(id, notFound), {
    ...(v.url !== undefined ? { url: v.url } : {}),
    ...(v.eventTypes !== undefined ? { event_types: v.eventTypes ?? [] } : {}),
    ...(v.description !== undefined ? { description: v.description } : {}),
    ...(v.enabled !== undefined && v.enabled !== null ? { enabled: v.enabled } : {}),
  });
  if (!row) throw notFound();
  deps.log.info("webhook endpoint updated", { accountId: t.accountId, endpointId: row.id });
  return row;
}

/** Deletes an endpoint with its log; answers its id. */
export async function deleteEndpoint(deps: Deps, p: Principal, id: string) {
  const t = requireTenant(p);
  const gone = await repo.deleteEndpoint(deps.db, t.accountId, uuidOr(id, notFound));
  if (!gone) throw notFound();
  deps.log.info("webhook endpoint deleted", { accountId: t.accountId, endpointId: gone });
  return gone;
}

/** A new secret; deliveries are signed with both for a day, so a receiver can switch over. */
export async function rotateSecret(deps: Deps, p: Principal, id: string) {
  const t = requireTenant(p);
  const secret = newSecret();
  const endpoint = await repo.rotateSecret(
    deps.db,
    t.accountId,
    uuidOr(id, notFound),
    encryptSecret(deps.secrets.secret, secret),
  );
  if (!endpoint) throw notFound();
  deps.log.info("webhook secret rotated", { accountId: t.accountId, endpointId: endpoint.id });
  return { endpoint, secret };
}

/** The caller's endpoints. */
export function listEndpoints(deps: Deps, p: Principal) {
  return repo.listEndpoints(deps.db, requireTenant(p).accountId);
}

/** One of the caller's endpoints, or 404. */
export async function getEndpoint(deps: Deps, p: Principal, id: string) {
  const row = await repo.findEndpoint(deps.db, requireTenant(p).accountId, uuidOr(id, notFound));
  if (!row) throw notFound();
  return row;
}

/** Queues a `webhook.test` delivery to an endpoint; answers the delivery. */
export async function sendTest(deps: Deps, p: Principal, id: string) {
  const endpoint = await getEndpoint(deps, p, id);
  return await repo.queueDelivery(deps.db, {
    endpoint_id: endpoint.id,
    account_id: endpoint.account_id,
    event_type: "webhook.test",
    payload: { type: "webhook.test", timestamp: new Date().toISOString(), data: { endpointId: endpoint.id } },
  });
}

/** Sends a delivery again now, with the same webhook-id; answers the delivery. */
export async function redeliver(deps: Deps, p: Principal, deliveryId: string) {
  const t = requireTenant(p);
  const d = await repo.redeliver(deps.db, t.accountId, uuidOr(deliveryId, deliveryNotFound));
  if (!d) throw deliveryNotFound();
  return d;
}

function deliveryNotFound(): AppError {
  return new AppError("not_found", "webhook delivery not found");
}

/** A page of an endpoint's deliveries, newest first, and whether more follow. */
export async function listDeliveries(
  deps: Deps,
  p: Principal,
  endpointId: string,
  opts: { first?: number | null; after?: string | null },
) {
  const endpoint = await getEndpoint(deps, p, endpointId);
  const limit = Math.min(Math.max(opts.first ?? 20, 1), 100);
  const rows = await repo.listDeliveries(deps.db, endpoint.account_id, endpoint.id, {
    limit: limit + 1,
    after: opts.after ? decodeCursor(opts.after, "after") : undefined,
  });
  return { rows: rows.slice(0, limit), hasMore: rows.length > limit };
}

/** A delivery's attempts, oldest first. */
export function attemptsOf(deps: Deps, deliveryId: string) {
  return repo.attemptsOf(deps.db, deliveryId);
}
