/**
 * Where messages go: a pooled SMTP relay (SMTP_URL) or, without one, `.eml` files in
 * `$PP_DATA_DIR/outbox`. Sandbox sends (`pp_test_` keys) always go to the outbox.
 *
 * Every message is built by mime.ts (nodemailer's MailComposer cost ~10x the event-loop time),
 * DKIM-signed by our own signer (dkim.ts, with libcrypto RSA: nodemailer's `dkim` option signs
 * with node:crypto, ~6x slower under Deno), and handed on as `raw` bytes with an explicit envelope,
 * dot-stuffed by nodemailer's DataStream with our faster loop in it (dot_stuff.ts).
 */
import nodemailer from "nodemailer";
import { Buffer } from "node:buffer";
import net from "node:net";
import { join } from "node:path";
import { type DkimOptions, signDkim } from "./dkim.ts";
import { buildMime, type MimeMessage } from "./mime.ts";
import { installFastDotStuffing } from "./dot_stuff.ts";
import { type RsaSigner, rsaSigner } from "./rsa_sign.ts";
import type { Logger } from "../log.ts";

/** One message, ready to hand to a transport: what buildMime writes, and how to send it. */
export interface OutgoingMessage extends MimeMessage {
  /** The send id; names the outbox file. */
  sendId: string;
  /** SMTP envelope: the return path (VERP bounces; default From) and the recipients (default To). */
  envelope?: { from: string; to: string[] };
  /** DKIM signing with the from domain's key, when it has one. */
  dkim?: DkimOptions;
}

/** What a transport answered. */
export interface DeliveryResult {
  /** The relay's final reply (`250 …`), or `outbox:<sendId>.eml`. */
  response: string;
  /** True when the message was written to the outbox instead of a relay. */
  outbox: boolean;
  /** Envelope recipients the relay refused while it took the others (nodemailer goes on past them). */
  rejected: { address: string; code: number | null; response: string }[];
}

/** Sends messages; `close` ends pooled connections. */
export interface Mailer {
  send(msg: OutgoingMessage, sandbox: boolean): Promise<DeliveryResult>;
  close(): void;
}

/**
 * Builds the mailer for a process. With `smtpUrl`, live mail goes through a pool of
 * `poolSize` connections; each socket has TCP_NODELAY, or every message would wait
 * ~40 ms on Nagle and delayed ACKs (see DESIGN.md). `log` (default: a stderr logger at
 * PP_LOG_LEVEL) hears once which RSA backend DKIM uses; `signer` (default: the process-wide
 * one, see rsa_sign.ts) is for tests. A DKIM key that cannot sign rejects the send: unsigned
 * mail from a domain that publishes DKIM would fail DMARC.
 */
export function createMailer(
  opts: { smtpUrl?: string; outboxDir: string; poolSize: number; timeoutMs: number; log?: Logger; signer?: RsaSigner },
): Mailer {
  let outboxReady: Promise<void> | null = null;
  installFastDotStuffing();
  const smtp = opts.smtpUrl ? createSmtpPool(opts.smtpUrl, opts.poolSize, opts.timeoutMs) : null;
  let signer = opts.signer;

  /** The message as it goes out: composed, then signed when it has a DKIM key. */
  async function build(msg: OutgoingMessage): Promise<Uint8Array> {
    const message: Uint8Array = buildMime(msg);
    if (!msg.dkim) return message;
    signer ??= rsaSigner(opts.log);
    return await signDkim(message, msg.dkim, { signer });
  }

  async function toOutbox(raw: Uint8Array, msg: OutgoingMessage): Promise<DeliveryResult> {
    outboxReady ??= Deno.mkdir(opts.outboxDir, { recursive: true });
    await outboxReady;
    // Owner-only: a message holds its recipient's personal data and live tracking links.
    await Deno.writeFile(join(opts.outboxDir, `${msg.sendId}.eml`), raw, { mode: 0o600 });
    // The file name only: tenants need not learn the server's paths.
    return { response: `outbox:${msg.sendId}.eml`, outbox: true, rejected: [] };
  }

  return {
    async send(msg, sandbox) {
      const raw = await build(msg);
      if (sandbox || !smtp) return await toOutbox(raw, msg);
      const info = await smtp.sendMail({
        raw: Buffer.from(raw.buffer, raw.byteOffset, raw.byteLength),
        envelope: { from: msg.envelope?.from ?? msg.from.address, to: msg.envelope?.to ?? [msg.to] },
      });
      const refused = (info as { rejectedErrors?: { recipient?: string; responseCode?: number; response?: string }[] })
        .rejectedErrors ?? [];
      return {
        response: info.response,
        outbox: false,
        rejected: refused.map((e) => ({
          address: String(e.recipient ?? ""),
          code: typeof e.responseCode === "number" ? e.responseCode : null,
          response: String(e.response ?? "").slice(0, 500),
        })),
      };
    },
    close() {
      smtp?.close();
    },
  };
}

/**
 * The relay pool. A relay that refuses connections fails the attempt at once; one that
 * hangs (after connecting, or mid-transaction) fails it after `timeoutMs` of silence, and
 * holds only its own connection meanwhile: the pool's other connections go on. Either way
 * the send is retried with backoff (sends/jobs.ts).
 */
function createSmtpPool(url: string, poolSize: number, timeoutMs: number) {
  const u = new URL(url);
  const secure = u.protocol === "smtps:";
  return nodemailer.createTransport({
    pool: true,
    url,
    maxConnections: poolSize,
    maxMessages: Infinity,
    // The sender decides about retries; a message is not silently requeued here.
    maxRequeues: 0,
    connectionTimeout: timeoutMs,
    greetingTimeout: timeoutMs,
    socketTimeout: timeoutMs,
    getSocket: secure ? undefined : noDelaySocket,
  });
}

/** Opens the relay connection with TCP_NODELAY (nodemailer's getSocket hook; the benchmark's raw baseline uses it too). */
export function noDelaySocket(
  options: { host?: string; port?: number | string },
  callback: (err: Error | null, socketOptions?: { connection?: net.Socket } | false) => void,
): void {
  const socket = net.connect({ host: options.host ?? "127.0.0.1", port: Number(options.port ?? 25) });
  socket.setNoDelay(true);
  let done = false;
  socket.once("connect", () => {
    if (done) return;
    done = true;
    callback(null, { connection: socket });
  });
  socket.once("error", (err: Error) => {
    if (done) return;
    done = true;
    callback(err);
  });
}
