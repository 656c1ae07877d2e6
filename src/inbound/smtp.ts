/**
 * The inbound SMTP listener for reports that come back by mail: delivery status
 * notifications sent to our VERP return path (`bounces+<token>@PP_BOUNCE_DOMAIN`) and ARF
 * complaint reports sent to a feedback-loop address on that domain. It runs in roles
 * `all`/`worker` when PP_INBOUND_SMTP_PORT is set (see src/server.ts).
 *
 * Answers: a recipient outside the bounce domain is refused (550: we relay nothing);
 * anything accepted at DATA is answered 250 even when it is garbage, an auto-reply or a
 * report on a send we do not know — a reporting MTA would only retry it, and nothing
 * better would come of that. Only our own failure to queue the events is a 451, so the
 * report comes again. No AUTH, no STARTTLS: reports are authenticated by the VERP token's
 * HMAC, not by the connection.
 *
 * Reports are parsed off the event loop (mail/parse_pool.ts) within PP_INBOUND_PARSE_TIMEOUT_MS;
 * a report that passes it is dropped (250, logged). A DSN recipient group is recorded only
 * when its `Final-Recipient` is the send's address, and one report records at most one
 * event per (send, type) (see recordInbound).
 */
import { SMTPServer, type SMTPServerDataStream, type SMTPServerSession } from "smtp-server";
import type { Deps } from "../context.ts";
import type { InboundEvent } from "./inputs.ts";
import { type InboundReport, REPORT_LIMITS, resolveSend } from "./parse.ts";
import { startParser } from "../mail/parse_pool.ts";
import { closeServer, joinChunks, listen, reply } from "../mail/smtp_listen.ts";
import { recordInbound } from "./service.ts";

/** Largest message accepted, in bytes (reports with the returned original are small). */
export const MAX_MESSAGE_BYTES = REPORT_LIMITS.maxBytes;

/** How long `close()` lets open sessions finish before dropping them, ms. */
const CLOSE_TIMEOUT_MS = 5000;

/** A running listener. */
export interface InboundSmtp {
  /** The port it listens on (the real one when started with port 0). */
  port: number;
  /** Stops listening, lets reports being read finish queueing, then resolves. */
  close(): Promise<void>;
}

/** True when `address` is at the bounce domain (or one of its subdomains), or no domain is set. */
function inBounceDomain(address: string, bounceDomain: string | undefined): boolean {
  if (!bounceDomain) return true;
  const domain = address.slice(address.lastIndexOf("@") + 1).toLowerCase();
  const want = bounceDomain.toLowerCase();
  return domain === want || domain.endsWith(`.${want}`);
}

/**
 * The events a message's report items record: each item tied to its send (see
 * {@link resolveSend}); items that name no send, and DSN groups without a Final-Recipient,
 * are dropped. Items of one message mostly share their references, so each distinct one is
 * resolved and logged once: a report with hundreds of groups writes a handful of lines.
 */
function toEvents(deps: Deps, reports: InboundReport[], session: string): InboundEvent[] {
  const refs = new Map<string, ReturnType<typeof resolveSend>>();
  const events: InboundEvent[] = [];
  let unnamed = 0;
  let noRecipient = 0;
  for (const r of reports) {
    const key = JSON.stringify([r.verpTokens, r.original.sendId, r.original.messageId]);
    let ref = refs.get(key);
    if (!ref) {
      ref = resolveSend(r, deps.secrets.secret);
      refs.set(key, ref);
      if (ref.badToken) {
        // Forged, or an MTA rewrote (lower-cased) the return path; the headers may still say.
        deps.log.warn("inbound report: VERP token did not verify", { session, source: r.source, via: ref.via });
      }
    }
    if (!ref.sendId) {
      unnamed++;
      continue;
    }
    if (r.source === "dsn" && r.recipient === undefined) {
      // RFC 3464 requires Final-Recipient in every recipient group: without one, the group
      // cannot be the send's recipient.
      noRecipient++;
      continue;
    }
    const data: Record<string, unknown> = {
      source: r.source,
      via: ref.via,
      bounceType: r.bounceType,
      action: r.action,
      status: r.status,
      diagnostic: r.diagnostic,
      feedbackType: r.feedbackType,
      reporter: r.reporter,
      remoteMta: r.remoteMta,
    };
    for (const k of Object.keys(data)) if (data[k] === undefined) delete data[k];
    events.push({ sendId: ref.sendId, type: r.type, recipient: r.recipient, occurredAt: r.occurredAt, data });
  }
  if (unnamed > 0) deps.log.warn("inbound report names no send, dropped", { session, items: unnamed });
  if (noRecipient > 0) {
    deps.log.warn("inbound report: recipient groups without Final-Recipient, dropped", { session, items: noRecipient });
  }
  return events;
}

/**
 * Starts the listener on `deps.config.host`:`port` (0 picks a free port). Each message is
 * parsed off the event loop (parse_worker.ts); each report item is tied to its send by the envelope's VERP
 * token (verified), else by the returned original's `X-PP-Send-Id` / Message-ID, and queued
 * as a `record_event` job (`bounced` hard/soft, `delivered`, `complained`, with
 * `data.source` `dsn` or `arf`). Never throws on bad input.
 */
export async function startInboundSmtp(deps: Deps, port: number): Promise<InboundSmtp> {
  const { log, config } = deps;
  const inFlight = new Set<Promise<unknown>>();
  const parser = startParser<{ envelopeTo: string[] }, InboundReport[]>(log, {
    timeoutMs: config.inboundParseTimeoutMs,
    workerUrl: new URL("./parse_worker.ts", import.meta.url),
    what: "inbound report",
  });

  async function handle(raw: Uint8Array, session: SMTPServerSession): Promise<void> {
    const envelopeTo = session.envelope.rcptTo.map((r) => r.address);
    const bytes = raw.length;
    const reports = await parser.parse(raw, { envelopeTo });
    // Null: dropped by the parser, which logged why (time limit, failure).
    if (reports === null) return;
    if (reports.length === 0) {
      log.warn("inbound message is no report we record, dropped", { session: session.id, bytes });
      return;
    }
    const events = toEvents(deps, reports, session.id);
    if (events.length === 0) return;
    const result = await recordInbound(deps, events, reports[0].source);
    log.info("inbound report read", { session: session.id, reports: reports.length, ...result });
  }

  const server = new SMTPServer({
    banner: "Pigeon Perch Sends: delivery and feedback reports only",
    size: MAX_MESSAGE_BYTES,
    authOptional: true,
    disabledCommands: ["AUTH", "STARTTLS"],
    maxClients: 100,
    closeTimeout: CLOSE_TIMEOUT_MS,
    logger: false,
    onRcptTo(address, _session, cb) {
      if (inBounceDomain(address.address, config.bounceDomain)) return cb();
      cb(reply(550, "5.7.1 Relaying denied: this server only takes reports for its bounce domain"));
    },
    onData(stream: SMTPServerDataStream, session, cb) {
      const chunks: Uint8Array[] = [];
      let bytes = 0;
      stream.on("data", (c: Uint8Array) => {
        // Past the limit, keep draining the stream but stop holding it.
        bytes += c.length;
        if (bytes <= MAX_MESSAGE_BYTES) chunks.push(c);
      });
      stream.on("error", (err: Error) => {
        log.warn("inbound message stream failed", { session: session.id, err });
      });
      stream.on("end", () => {
        if (stream.sizeExceeded) {
          log.warn("inbound message too large, refused", { session: session.id, bytes });
          return cb(reply(552, "5.3.4 Message too large"));
        }
        const raw = joinChunks(chunks, bytes);
        const work = handle(raw, session).then(
          () => cb(),
          (err) => {
            // Our side failed (database): ask the reporter to try again later.
            log.error("inbound report could not be queued", { session: session.id, err });
            cb(reply(451, "4.3.0 Temporary failure, try again later"));
          },
        );
        inFlight.add(work);
        work.finally(() => inFlight.delete(work));
      });
    },
  });
  const actual = await listen(server, config.host, port, log, "inbound smtp");
  log.info("inbound smtp listening", { host: config.host, port: actual, bounceDomain: config.bounceDomain });

  return {
    port: actual,
    async close() {
      await closeServer(server, inFlight);
      parser.close();
    },
  };
}
