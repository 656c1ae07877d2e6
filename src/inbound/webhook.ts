/**
 * `POST /api/v1/events/inbound` (the documented JSON body) and `POST /api/v1/events/inbound/ses`
 * (Amazon SES notifications in an SNS envelope): relays that report by webhook instead of
 * by mail. No API key: a call is authenticated by `X-PP-Signature` (Stripe style),
 *
 *     X-PP-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(PP_INBOUND_SECRET, "<t>.<raw body>")>
 *
 * and refused (401 `unauthorized`) when the header is missing, no `v1` matches, `t` is more
 * than 5 minutes from now (a replayed old call), or PP_INBOUND_SECRET is unset. Several
 * `v1=` are allowed, so a sender can sign with an old and a new secret while rotating.
 *
 * SES: AWS signs SNS messages itself (X.509, `SigningCertURL`), but checking that needs
 * AWS's certificates fetched from amazonaws.com, which this service does not reach. So the
 * SES endpoint takes the same X-PP-Signature: the relay or forwarder (e.g. a small function
 * subscribed to the SNS topic, which can check AWS's signature) signs what it forwards.
 */
import { createHmac, timingSafeEqual } from "node:crypto";
import { Buffer } from "node:buffer";
import type { Deps } from "../context.ts";
import { AppError } from "../errors.ts";
import { BODY_LIMITS, readBody } from "../rest/body.ts";
import { json, problemResponse } from "../rest/problem.ts";
import { parseInput } from "../validation.ts";
import { type InboundEvent, SesNotification, SnsEnvelope, WebhookBody } from "./inputs.ts";
import { sesEvents } from "./ses.ts";
import { recordInbound } from "./service.ts";

/** The signature header (lower case, as Headers reads it). */
export const SIGNATURE_HEADER = "x-pp-signature";

/** Largest accepted distance between the signature's `t` and now, in seconds. */
export const SIGNATURE_TOLERANCE_S = 300;

function hmacHex(secret: string, t: string, body: Uint8Array): string {
  return createHmac("sha256", secret).update(`${t}.`).update(body).digest("hex");
}

/**
 * The `X-PP-Signature` value for `body` at unix time `t` (default now). For senders and tests;
 * the body must be sent byte for byte as signed.
 */
export function signatureHeader(secret: string, body: string | Uint8Array, t = Math.floor(Date.now() / 1000)): string {
  const bytes = typeof body === "string" ? new TextEncoder().encode(body) : body;
  return `t=${t},v1=${hmacHex(secret, String(t), bytes)}`;
}

/**
 * Why `header` does not authenticate `body`, or null when it does: unset secret, missing or
 * malformed header, timestamp outside ±{@link SIGNATURE_TOLERANCE_S}, or no matching `v1`.
 */
export function signatureProblem(
  secret: string | undefined,
  header: string | null,
  body: Uint8Array,
  nowMs = Date.now(),
): string | null {
  if (!secret) return "inbound webhooks are disabled (PP_INBOUND_SECRET is not set)";
  if (!header) return `the ${SIGNATURE_HEADER} header is missing`;
  let t: string | null = null;
  const v1: string[] = [];
  for (const item of header.split(",")) {
    const [k, v] = item.split("=", 2).map((s) => s?.trim());
    if (k === "t") t = v ?? null;
    else if (k === "v1" && v) v1.push(v);
  }
  if (!t || !/^\d{1,12}$/.test(t) || v1.length === 0) return `the ${SIGNATURE_HEADER} header is malformed`;
  if (Math.abs(nowMs / 1000 - Number(t)) > SIGNATURE_TOLERANCE_S) {
    return "the signature timestamp is more than 5 minutes from now";
  }
  const want = Buffer.from(hmacHex(secret, t, body), "hex");
  const ok = v1.some((sig) => {
    if (!/^[0-9a-f]{64}$/i.test(sig)) return false;
    return timingSafeEqual(Buffer.from(sig, "hex"), want);
  });
  return ok ? null : "the signature does not match";
}

/** The raw body, once authenticated; throws 401 otherwise. */
async function authenticatedBody(deps: Deps, req: Request, route: string): Promise<Uint8Array> {
  const body = await readBody(req, BODY_LIMITS.inbound);
  const problem = signatureProblem(deps.config.inboundSecret, req.headers.get(SIGNATURE_HEADER), body);
  if (problem) {
    deps.log.warn("inbound webhook refused", { route, reason: problem });
    throw new AppError("unauthorized", problem);
  }
  return body;
}

function parseJson(body: Uint8Array): unknown {
  try {
    return JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(body));
  } catch {
    throw new AppError("invalid_json", "the request body is not valid JSON");
  }
}

/** POST /api/v1/events/inbound → 202 {accepted, ignored}. */
export async function postInbound(deps: Deps, req: Request): Promise<Response> {
  const body = parseInput(WebhookBody, parseJson(await authenticatedBody(deps, req, "inbound")));
  const now = new Date().toISOString();
  const events: InboundEvent[] = body.events.map((e) => {
    const data: Record<string, unknown> = { source: "webhook" };
    if (e.type === "bounced") data.bounceType = e.bounceType ?? (e.status?.startsWith("4.") ? "soft" : "hard");
    if (e.status) data.status = e.status;
    if (e.diagnostic) data.diagnostic = e.diagnostic;
    return { type: e.type, sendId: e.sendId, messageId: e.messageId, occurredAt: e.occurredAt ?? now, data };
  });
  return json(await recordInbound(deps, events, "webhook"), 202);
}

/**
 * POST /api/v1/events/inbound/ses: an SNS envelope. `Notification` → its SES message's
 * events, 202 {accepted, ignored}; `SubscriptionConfirmation` / `UnsubscribeConfirmation`
 * → 200, nothing done (subscribing is the forwarder's business). A body that is the SES
 * notification itself (SNS "raw message delivery") is read as such.
 */
export async function postSes(deps: Deps, req: Request): Promise<Response> {
  const raw = parseJson(await authenticatedBody(deps, req, "ses")) as Record<string, unknown> | null;
  let message: unknown = raw;
  if (raw === null || typeof raw !== "object" || !("mail" in raw)) {
    const sns = parseInput(SnsEnvelope, raw);
    if (sns.Type === "SubscriptionConfirmation" || sns.Type === "UnsubscribeConfirmation") {
      // Only the host: the URL's query is a token that confirms the subscription.
      let host: string | undefined;
      try {
        host = sns.SubscribeURL ? new URL(sns.SubscribeURL).host : undefined;
      } catch { /* not a URL: nothing to log */ }
      deps.log.info("inbound ses: SNS confirmation not acted on", { type: sns.Type, host, topic: sns.TopicArn });
      return json({ status: "ignored", type: sns.Type }, 200);
    }
    if (sns.Type !== "Notification" || sns.Message === undefined) {
      throw new AppError(
        "validation_failed",
        "Type: must be Notification, SubscriptionConfirmation or UnsubscribeConfirmation with a Message",
        [
          { path: sns.Type === "Notification" ? "Message" : "Type", message: "must be a Notification with a Message" },
        ],
      );
    }
    try {
      message = JSON.parse(sns.Message);
    } catch {
      throw new AppError("validation_failed", "Message: must be a JSON string (the SES notification)", [
        { path: "Message", message: "must be a JSON string (the SES notification)" },
      ]);
    }
  }
  const notification = parseInput(SesNotification, message);
  const events = sesEvents(notification);
  if (events.length === 0) {
    deps.log.info("inbound ses: notification type not recorded", {
      type: notification.notificationType ?? notification.eventType,
    });
    return json({ accepted: 0, ignored: 0 }, 202);
  }
  return json(await recordInbound(deps, events, "ses"), 202);
}

/**
 * The router's entry for both paths (`kind` says which): POST only, errors as problem+json.
 * Kept here so src/app.ts only forwards, before its API-key check.
 */
export async function handleInbound(deps: Deps, req: Request, kind: "json" | "ses"): Promise<Response> {
  const path = new URL(req.url).pathname;
  try {
    if (req.method !== "POST") {
      const res = problemResponse(
        new AppError("method_not_allowed", `${req.method} is not allowed here; use POST`),
        deps.log,
      );
      res.headers.set("allow", "POST");
      return res;
    }
    return kind === "ses" ? await postSes(deps, req) : await postInbound(deps, req);
  } catch (err) {
    return problemResponse(err, deps.log, { method: req.method, path });
  }
}
