/**
 * The SMTP submission listener (API.md "SMTP submission"): every app that can send mail can
 * send through us. It runs in roles `all` and `api` when PP_SUBMISSION_PORT is set (see
 * src/server.ts), on the API's event loop, beside HTTP.
 *
 * A session: AUTH PLAIN or LOGIN with an API key as the password (any username; the same
 * hashed, cached lookup as HTTP), STARTTLS when PP_TLS_CERT and PP_TLS_KEY are set, and
 * without TLS AUTH only from loopback unless PP_SUBMISSION_INSECURE=true. Each MAIL FROM takes
 * one request from the key's rate limit (shared with HTTP); at most MAX_RECIPIENTS RCPT TO.
 * At the end of DATA the message is parsed once, off the event loop (parse_worker.ts), and
 * accepted (service.ts submitMessage) before the reply: a `250` means the sends are durable.
 * Refusals are the replies of errors.ts smtpReplyOf; each is logged with the session id, and
 * never with the key.
 */
import { SMTPServer, type SMTPServerDataStream, type SMTPServerSession } from "smtp-server";
import type { Deps, Tenant } from "../context.ts";
import { authenticate } from "../accounts/service.ts";
import { AppError, asAppError, smtpReplyOf } from "../errors.ts";
import { startParser } from "../mail/parse_pool.ts";
import { closeServer, joinChunks, listen, reply } from "../mail/smtp_listen.ts";
import { rateLimiterOf } from "../ratelimit.ts";
import { BODY_LIMITS, BodyLease, LARGE_BODY } from "../rest/body.ts";
import { isEmail } from "../validation.ts";
import type { ParsedMessage } from "./inputs.ts";
import { MAX_RECIPIENTS, submitMessage } from "./service.ts";

/**
 * Largest message, in bytes: the API's body limit for a send, which holds 25 MB of files (the
 * attachment limit, checked on the decoded files) in base64 with the message's text.
 */
export const MAX_MESSAGE_BYTES = BODY_LIMITS.send;
/** Time limit of parsing one message off the event loop: a 40 MiB message takes about a second. */
const PARSE_TIMEOUT_MS = 15_000;
/** How long `close()` lets open sessions finish before dropping them, ms. */
const CLOSE_TIMEOUT_MS = 5000;

/** A running listener. */
export interface Submission {
  /** The port it listens on (the real one when started with port 0). */
  port: number;
  /** Stops listening, lets messages being accepted finish, then resolves. */
  close(): Promise<void>;
}

/** The reply for a refusal: its code, its enhanced status, and the error's own words. */
function refusal(err: AppError | null, fallback = "Temporary failure, try again later"): Error {
  const r = smtpReplyOf(err);
  const text = err && err.status < 500 ? err.message.replace(/[\r\n]+/g, " ").slice(0, 400) : fallback;
  return reply(r.code, `${r.status} ${text}`);
}

/** Whether a connection comes from this host. */
function isLoopback(address: string): boolean {
  return address === "::1" || /^(::ffff:)?127\./.test(address);
}

/** A PEM given inline, or the file that holds it. */
function pem(value: string): string {
  return value.trimStart().startsWith("-----BEGIN") ? value : Deno.readTextFileSync(value);
}

/** The tenant a session authenticated as. */
function tenantOf(session: SMTPServerSession): Tenant {
  return session.user as unknown as Tenant;
}

/** Starts the listener on `deps.config.host`:`port` (0 picks a free port). */
export async function startSubmission(deps: Deps, port: number): Promise<Submission> {
  const { log, config } = deps;
  const limiter = rateLimiterOf(deps);
  const inFlight = new Set<Promise<unknown>>();
  const parser = startParser<Record<string, never>, ParsedMessage>(log, {
    timeoutMs: PARSE_TIMEOUT_MS,
    workerUrl: new URL("./parse_worker.ts", import.meta.url),
    what: "submitted message",
  });

  /** Parses and accepts one message; resolves to the `250` text, or rejects with the reply. */
  async function accept(raw: Uint8Array, session: SMTPServerSession): Promise<string> {
    const t = tenantOf(session);
    const envelopeTo = session.envelope.rcptTo.map((r) => r.address);
    const bytes = raw.length;
    const parsed = await parser.parse(raw, {});
    if (parsed === null) throw reply(550, "5.6.0 The message could not be read as MIME");
    try {
      const r = await submitMessage(deps, t, envelopeTo, parsed);
      log.info("message submitted", {
        session: session.id,
        accountId: t.accountId,
        sends: r.sendIds.length,
        batchId: r.batchId,
        replayed: r.replayed,
        bytes,
      });
      return r.batchId
        ? `2.0.0 Accepted: batch ${r.batchId}, ${r.sendIds.length} sends`
        : `2.0.0 Accepted: send ${r.sendIds[0]}`;
    } catch (err) {
      const known = asAppError(err);
      if (known) {
        log.info("submitted message refused", { session: session.id, accountId: t.accountId, code: known.code });
      } else log.error("submitted message could not be accepted", { session: session.id, err });
      throw refusal(known);
    }
  }

  const tls = config.tls ? { key: pem(config.tls.key), cert: pem(config.tls.cert) } : null;
  const server = new SMTPServer({
    banner: "Pigeon Perch Sends submission",
    size: MAX_MESSAGE_BYTES,
    authMethods: ["PLAIN", "LOGIN"],
    // Decided per session in onAuth: plain text is fine from loopback.
    allowInsecureAuth: true,
    disabledCommands: tls ? [] : ["STARTTLS"],
    ...(tls ?? {}),
    maxClients: 200,
    closeTimeout: CLOSE_TIMEOUT_MS,
    logger: false,
    onAuth(auth, session, cb) {
      if (!session.secure && !config.submissionInsecure && !isLoopback(session.remoteAddress)) {
        return cb(reply(538, "5.7.11 Encryption required: use STARTTLS before AUTH"));
      }
      // The password is the key; header syntax is what authenticate reads.
      const key = String(auth.password ?? "");
      const headers = /^[\x21-\x7e]{1,200}$/.test(key) ? new Headers({ "x-api-key": key }) : null;
      (headers ? authenticate(deps, headers) : Promise.resolve(null)).then(
        (p) => {
          if (p?.kind !== "tenant") throw new AppError("unauthorized", "unknown or revoked API key");
          cb(null, { user: p as unknown as string });
        },
      ).catch((err) => {
        const known = asAppError(err);
        log.info("submission auth refused", { session: session.id, code: known?.code ?? "internal" });
        if (known?.code === "unauthorized") return cb(reply(535, "5.7.8 Authentication credentials invalid"));
        if (!known) log.error("submission auth failed", { session: session.id, err });
        cb(reply(454, "4.7.0 Temporary authentication failure, try again later"));
      });
    },
    onMailFrom(_address, session, cb) {
      const t = tenantOf(session);
      // One message, one request of the key's rate limit.
      const rate = limiter?.take(t.apiKeyId);
      if (rate && !rate.allowed) {
        log.info("submitted message refused", { session: session.id, accountId: t.accountId, code: "rate_limited" });
        return cb(
          reply(451, `4.7.0 Rate limited: more than ${rate.limit} requests per second; retry in ${rate.retryAfter} s`),
        );
      }
      cb();
    },
    onRcptTo(address, session, cb) {
      if (session.envelope.rcptTo.length >= MAX_RECIPIENTS) {
        return cb(reply(452, `4.5.3 Too many recipients: at most ${MAX_RECIPIENTS} per message`));
      }
      if (!isEmail(address.address)) return cb(reply(553, "5.1.3 Not a valid recipient address"));
      cb();
    },
    onData(stream: SMTPServerDataStream, session, cb) {
      const chunks: Uint8Array[] = [];
      let bytes = 0;
      let ended = false;
      // A large message holds one of the process's large-body slots, shared with HTTP, from
      // its 4 MiB mark until it is answered; without one, its client waits (the stream is
      // paused, so TCP stops it). Many connections cannot hold 40 MiB each. A message still
      // arriving at the slot's deadline gives it back and is refused (451) at its end.
      const lease = new BodyLease(config.largeBodyTimeoutMs);
      let leased = false;
      let timedOut = false;
      // Gone (closed or failed) before its end: a slot it was still waiting for is given back at once.
      let gone = false;
      lease.expired.then(() => {
        if (ended) return;
        timedOut = true;
        chunks.length = 0;
        lease.release();
      });
      stream.on("data", (c: Uint8Array) => {
        // Past the limit, keep draining the stream but stop holding it.
        bytes += c.length;
        if (bytes <= MAX_MESSAGE_BYTES && !timedOut) chunks.push(c);
        if (bytes > LARGE_BODY && !leased && !timedOut) {
          leased = true;
          stream.pause();
          lease.take().then(() => gone ? lease.release() : stream.resume());
        }
      });
      stream.on("error", (err: Error) => {
        gone = true;
        lease.release();
        log.warn("submitted message stream failed", { session: session.id, err });
      });
      // The client went away before the end: nothing to answer, the slot goes back.
      stream.on("close", () => {
        if (ended) return;
        gone = true;
        lease.release();
      });
      stream.on("end", () => {
        ended = true;
        if (stream.sizeExceeded) {
          lease.release();
          log.info("submitted message too large, refused", { session: session.id, bytes });
          return cb(reply(552, `5.3.4 Message too large: at most ${MAX_MESSAGE_BYTES} bytes`));
        }
        if (timedOut) {
          log.info("submitted message too slow, refused", { session: session.id, bytes });
          return cb(reply(451, `4.4.2 The message did not arrive within ${lease.deadlineMs} ms`));
        }
        const raw = joinChunks(chunks, bytes);
        chunks.length = 0;
        const work = accept(raw, session).then((text) => cb(null, text), (err) => cb(err))
          .finally(() => lease.release());
        inFlight.add(work);
        work.finally(() => inFlight.delete(work));
      });
    },
  });
  const actual = await listen(server, config.host, port, log, "submission");
  log.info("smtp submission listening", { host: config.host, port: actual, tls: tls !== null });

  return {
    port: actual,
    async close() {
      await closeServer(server, inFlight);
      parser.close();
    },
  };
}
