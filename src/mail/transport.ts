/**
 * Where messages go: a pooled SMTP relay (SMTP_URL) or, without one, `.eml` files in
 * `$PP_DATA_DIR/outbox`. Sandbox sends (`pp_test_` keys) always go to the outbox.
 */
import nodemailer from "nodemailer";
import type { DkimOptions } from "./dkim.ts";
import net from "node:net";
import { join } from "node:path";

/** One message, ready to hand to a transport. */
export interface OutgoingMessage {
  /** The send id; names the outbox file. */
  sendId: string;
  from: { name?: string; address: string };
  to: string;
  replyTo?: string;
  subject: string;
  html?: string;
  text?: string;
  /** Fixed at send creation, with angle brackets. */
  messageId: string;
  headers?: Record<string, string>;
  /** SMTP envelope, when the return path differs from From (VERP bounces). */
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
}

/** Sends messages; `close` ends pooled connections. */
export interface Mailer {
  send(msg: OutgoingMessage, sandbox: boolean): Promise<DeliveryResult>;
  close(): void;
}

/**
 * Builds the mailer for a process. With `smtpUrl`, live mail goes through a pool of
 * `poolSize` connections; each socket has TCP_NODELAY, or every message would wait
 * ~40 ms on Nagle and delayed ACKs (see DESIGN.md).
 */
export function createMailer(opts: { smtpUrl?: string; outboxDir: string; poolSize: number }): Mailer {
  const outbox = nodemailer.createTransport({ streamTransport: true, buffer: true, newline: "\r\n" });
  let outboxReady: Promise<void> | null = null;
  const smtp = opts.smtpUrl ? createSmtpPool(opts.smtpUrl, opts.poolSize) : null;

  async function toOutbox(msg: OutgoingMessage): Promise<DeliveryResult> {
    outboxReady ??= Deno.mkdir(opts.outboxDir, { recursive: true });
    await outboxReady;
    const info = await outbox.sendMail(mailOptions(msg));
    const file = join(opts.outboxDir, `${msg.sendId}.eml`);
    await Deno.writeFile(file, info.message as Uint8Array);
    // The file name only: tenants need not learn the server's paths.
    return { response: `outbox:${msg.sendId}.eml`, outbox: true };
  }

  return {
    async send(msg, sandbox) {
      if (sandbox || !smtp) return await toOutbox(msg);
      const info = await smtp.sendMail(mailOptions(msg));
      return { response: info.response, outbox: false };
    },
    close() {
      smtp?.close();
      outbox.close();
    },
  };
}

function mailOptions(msg: OutgoingMessage) {
  return {
    from: msg.from,
    to: msg.to,
    replyTo: msg.replyTo,
    subject: msg.subject,
    html: msg.html,
    text: msg.text,
    messageId: msg.messageId,
    headers: msg.headers,
    envelope: msg.envelope,
    dkim: msg.dkim,
  };
}

function createSmtpPool(url: string, poolSize: number) {
  const u = new URL(url);
  const secure = u.protocol === "smtps:";
  return nodemailer.createTransport({
    pool: true,
    url,
    maxConnections: poolSize,
    maxMessages: Infinity,
    // The sender decides about retries; a message is not silently requeued here.
    maxRequeues: 0,
    connectionTimeout: 10_000,
    greetingTimeout: 10_000,
    socketTimeout: 30_000,
    getSocket: secure ? undefined : noDelaySocket,
  });
}

/** Opens the relay connection with TCP_NODELAY (nodemailer's getSocket hook). */
function noDelaySocket(
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
