import nodemailer from "nodemailer";
import { closedLoop, pct, round, type Scenario } from "../lib.ts";
import type { Bench } from "../stack.ts";

/** SMTP connections, and HTTP requests in flight for the comparison (issue 16). */
const CLIENTS = 8;

/** The message both transports send: the bench template's size, HTML and text. */
const HTML = `<html><body><p>Hi there,</p><p>Order <b>S-1</b> is confirmed.</p>` +
  `<p><a href="https://shop.example.com/orders/S-1">See your order</a></p></body></html>`;
const TEXT = "Hi there, order S-1 is confirmed.";

/**
 * SMTP submission ("smtp submission"): messages accepted per second over CLIENTS SMTP
 * connections (nodemailer's pool, AUTH with the live key, one recipient each: a `250` per
 * message, after its send is durable), beside the same sends over REST (`POST /api/v1/sends`,
 * CLIENTS requests in flight) in the same run. Both are due at once, so delivery runs during
 * both. Target: ≥ 0.5× REST.
 */
export async function submission(b: Bench): Promise<Record<string, Scenario>> {
  b.log("smtp submission");
  const transport = nodemailer.createTransport({
    host: "127.0.0.1",
    port: b.submissionPort,
    secure: false,
    ignoreTLS: true,
    pool: true,
    maxConnections: CLIENTS,
    maxMessages: Infinity,
    auth: { user: "bench", pass: b.key },
  });
  const smtpSend = async (tag: string) => {
    const info = await transport.sendMail({
      from: "Example Shop <orders@example.com>",
      to: b.uniq(tag),
      subject: "Order S-1 confirmed",
      html: HTML,
      text: TEXT,
      headers: { "X-PP-Tags": `bench=${tag}` },
    });
    if (!info.response.startsWith("250 ")) throw new Error(info.response);
  };
  const restSend = async (tag: string) => {
    const r = await fetch(`${b.base}/api/v1/sends`, {
      method: "POST",
      headers: b.auth,
      body: JSON.stringify({
        templateId: b.templateId,
        to: b.uniq(tag),
        personalizations: { order_id: "S-1" },
        tags: { bench: tag },
      }),
    });
    await r.body?.cancel();
    if (r.status !== 202) throw new Error(`REST answered ${r.status}`);
  };
  try {
    // Warm both paths (the parse worker loads on the first message).
    await Promise.all(Array.from({ length: CLIENTS }, () => smtpSend("sub-warm")));
    await restSend("sub-warm");
    const [smtp, smtpCpu] = await b.cpu.measure(() => closedLoop(CLIENTS, b.loadS, () => smtpSend("sub-smtp")));
    const [rest, restCpu] = await b.cpu.measure(() => closedLoop(CLIENTS, b.loadS, () => restSend("sub-rest")));
    const smtpRate = smtp.n / smtp.seconds, restRate = rest.n / rest.seconds;
    return {
      "smtp submission": {
        value: round(smtpRate),
        unit: `messages/s accepted over ${CLIENTS} SMTP connections`,
        target: "≥ 0.5× the same sends over REST",
        baseline: round(restRate),
        ratio: round(smtpRate / restRate, 2),
        pass: smtpRate >= 0.5 * restRate,
        details: {
          ...smtpCpu,
          p50_ms: round(pct(smtp.lat, 50), 1),
          p99_ms: round(pct(smtp.lat, 99), 1),
          rest_p50_ms: round(pct(rest.lat, 50), 1),
          rest_p99_ms: round(pct(rest.lat, 99), 1),
          ...Object.fromEntries(Object.entries(restCpu).map(([k, v]) => [`rest_${k}`, v])),
        },
      },
    };
  } finally {
    transport.close();
  }
}
