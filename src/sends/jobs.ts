/**
 * The `deliver_send` task: claim → render → mail → record. Safe to run twice: the claim
 * only takes a send that is still pending (or `sending` after a crash), so a send that
 * went out is never mailed again, and its Message-ID was fixed when it was created.
 */
import type { JobHelpers, Task } from "graphile-worker";
import type { Kysely } from "kysely";
import type { Deps } from "../context.ts";
import type { Database, EventType, SendsTable } from "../db/tables.ts";
import type { Insertable } from "kysely";
import { queueReputationCheck } from "../accounts/jobs.ts";
import { signingOptions } from "../domains/service.ts";
import { renderContext, type Rendered, RenderError } from "../mail/render.ts";
import { releaseUsage } from "../accounts/repo.ts";
import { rewriteHtml, signToken, trackingUrls } from "../mail/tracking.ts";
import type { Mailer } from "../mail/transport.ts";
import { GroupCommit } from "../db/group_commit.ts";
import { countFinished, deliverySeconds } from "../metrics/metrics.ts";
import { filesFor } from "../attachments/service.ts";
import { DeliverSendPayload } from "./inputs.ts";
import * as contactsRepo from "../contacts/repo.ts";
import * as repo from "./repo.ts";

/** How often deferred sends are looked at: a minute, or half the horizon when that is shorter. */
export function promoteIntervalS(scheduleHorizonS: number): number {
  return Math.min(60, scheduleHorizonS / 2);
}

/**
 * Queues the next `promote_scheduled` run in `delayS` seconds. One job key for every
 * process: adding it again replaces the waiting run, so there is always one.
 */
export async function schedulePromotion(db: Kysely<Database>, delayS: number): Promise<void> {
  await repo.queuePromotion(db, delayS);
}

/**
 * The `promote_scheduled` task: gives sends scheduled beyond the horizon their delivery jobs
 * once their time is within it (sends/repo.ts promoteDeferred), then runs again after
 * promoteIntervalS. The next run is queued first, so a failed run cannot end the cycle.
 */
export function promoteScheduledTask(deps: Deps): Task {
  return async () => {
    const { config } = deps;
    await schedulePromotion(deps.db, promoteIntervalS(config.scheduleHorizonS));
    let taken: number;
    do {
      const r = await repo.promoteDeferred(deps.db, config);
      taken = r.taken;
      if (r.queued) deps.log.info("scheduled sends queued for delivery", { count: r.queued });
    } while (taken === repo.PROMOTE_MAX);
  };
}

/** The `h=` list with a send's own header names after ours, each name once (`Sender` may be one of both). */
function withOwn(ours: string, own: Record<string, string>): string {
  return [...new Set([...ours.split(":"), ...Object.keys(own).map((k) => k.toLowerCase())])].join(":");
}

/** How long a send of a paused account waits before it looks again. */
export const PAUSED_RECHECK_MS = 30_000;

/** The SMTP reply code in a nodemailer error, if the server gave one. */
function smtpCode(err: unknown): number | null {
  const c = (err as { responseCode?: unknown })?.responseCode;
  return typeof c === "number" ? c : null;
}

/**
 * Whether a permanent (5xx) refusal is about the recipient or the message (RCPT TO, DATA):
 * a hard bounce. A 5xx to AUTH or MAIL FROM is the relay refusing us (bad credentials,
 * unauthorised sender): the send fails, and the recipient is not blamed.
 */
function isRecipientRefusal(err: unknown): boolean {
  const command = String((err as { command?: unknown })?.command ?? "");
  return command === "RCPT TO" || command === "DATA";
}

function errorText(err: unknown): string {
  const e = err as { response?: string; message?: string };
  return (e?.response ?? e?.message ?? String(err)).slice(0, 1000);
}

/** Builds the `deliver_send` task for a process's deps and mailer. */
export function deliverSendTask(deps: Deps, mailer: Mailer): Task {
  const { db, log, config } = deps;

  // Claims and outcomes of the deliveries running at once are written in groups, one
  // statement and one commit each (see GroupCommit): per-delivery commits capped the drain.
  const claims = new GroupCommit<string, repo.Claimed | undefined>(async (ids) => {
    const claimed = await repo.claimForDelivery(db, ids);
    return ids.map((id) => claimed.get(id));
  });
  const outcomes = new GroupCommit<repo.Outcome>((os) => repo.recordOutcomes(db, os));
  const finish = (
    send: repo.SendRow,
    set: Partial<Insertable<SendsTable>>,
    events: { type: EventType; data?: Record<string, unknown> }[],
    contactStatus?: "bounced",
  ) => outcomes.add({ send, set, events, contactStatus });

  /**
   * A delivery that throws unexpectedly (not an SMTP answer: a lost database connection, a
   * key that cannot be decrypted, a bug) is retried by graphile-worker with backoff; on its
   * last attempt the send is ended `failed` (`internal_error`), so none stays `sending`.
   */
  const task = async (payload: unknown, helpers: JobHelpers) => {
    const { sendId } = DeliverSendPayload.parse(payload);
    try {
      await deliver(sendId, helpers);
    } catch (err) {
      const { attempts, max_attempts } = helpers.job;
      if (attempts < max_attempts) throw err;
      const message = err instanceof Error ? err.message.slice(0, 500) : String(err).slice(0, 500);
      if (await repo.failUnfinished(db, sendId, "internal_error", message)) {
        countFinished("failed");
        log.error("send failed: delivery kept throwing", { sendId, attempts, err });
      }
    }
  };

  /** A send's cc and bcc without the addresses the account has suppressed, and those left out. */
  async function copiesFor(send: repo.SendRow) {
    const cc = send.cc ?? [], bcc = send.bcc ?? [];
    if (cc.length + bcc.length === 0) return { cc, bcc, dropped: [] };
    const suppressed = await contactsRepo.suppressedAmong(db, send.account_id, [...cc, ...bcc]);
    const keep = (a: string) => !suppressed.has(a.toLowerCase());
    const dropped = [...cc, ...bcc].filter((a) => !keep(a))
      .map((address) => ({ address, reason: suppressed.get(address.toLowerCase())! }));
    return { cc: cc.filter(keep), bcc: bcc.filter(keep), dropped };
  }

  async function deliver(sendId: string, helpers: JobHelpers) {
    const claimed = await claims.add(sendId);
    if (!claimed) {
      log.debug("deliver_send: nothing to do", { sendId });
      return;
    }
    const { send, template, contact } = claimed;
    if (!claimed.sendingEnabled) {
      // Paused: the send waits, queued, and looks again later. Not lost, not failed.
      await repo.updateSend(db, send.id, { status: "queued" });
      await repo.queueDeliveries(db, [send.id], new Date(Date.now() + PAUSED_RECHECK_MS), config);
      log.info("send held: account paused", { sendId, accountId: send.account_id });
      return;
    }

    const urls = trackingUrls(deps.publicUrl, deps.secrets.secret, send.id);
    let rendered: Rendered;
    try {
      // A submitted message is not a template: its parts go out as written, never rendered.
      rendered = template === null
        ? {
          subject: send.subject,
          html: send.content?.html ?? undefined,
          text: send.content?.text ?? undefined,
          missingVariables: [],
        }
        : await deps.renderer.render(
          template,
          send.subject,
          renderContext(contact, send.personalizations, { unsubscribe_url: urls.unsubscribe }),
        );
    } catch (err) {
      if (!(err instanceof RenderError)) throw err;
      // The tenant's template, not the delivery, failed: final, and its quota unit goes back.
      // Both in one transaction, so a crash between them can neither keep the unit nor
      // return it twice (a failed send is never claimed again).
      const failed = await db.transaction().execute(async (trx) => {
        // Only a send still pending or sending: one freed meanwhile (a worker restart) and
        // delivered elsewhere keeps its status, and its unit is not given back twice.
        if (!await repo.failUnfinished(trx, send.id, "render_failed", err.message)) return false;
        await releaseUsage(trx, send.account_id, [send.created_at]);
        return true;
      });
      if (failed) countFinished("failed");
      log.warn("send failed: template did not render", { sendId, accountId: send.account_id });
      return;
    }
    const tracked = rendered.html
      ? rewriteHtml(rendered.html, { trackClicks: send.track_clicks, trackOpens: send.track_opens, urls })
      : { html: undefined, links: [] };
    const missingVariables = rendered.missingVariables.length ? rendered.missingVariables : null;
    // Before the attempt: a key that cannot be decrypted is this deployment's fault, not the
    // relay's, so it fails the job (retried, then internal_error), not the delivery.
    const own = send.headers ?? {};
    const signed = await signingOptions(deps, send.account_id, send.from_email);
    // The send's own headers are signed too (h=), after ours.
    const dkim = signed && Object.keys(own).length
      ? { ...signed, headerFieldNames: withOwn(signed.headerFieldNames, own) }
      : signed;
    // Copies: each address the account has suppressed is left out (a suppressed event each),
    // the rest go in the envelope, Cc in the message too. The recipient (`to`) was checked at acceptance.
    const { cc, bcc, dropped } = await copiesFor(send);
    const envelopeTo = [...new Map([send.to_email, ...cc, ...bcc].map((a) => [a.toLowerCase(), a])).values()];
    // Also before the attempt: a blob that cannot be read is ours to retry, not a bounce.
    const attachments = send.attachments?.length ? await filesFor(db, send.account_id, send.attachments) : undefined;
    const started = performance.now();
    try {
      const result = await mailer.send({
        sendId: send.id,
        from: { name: send.from_name ?? undefined, address: send.from_email },
        to: send.to_email,
        cc,
        // A submitted message keeps the To and Cc it was written with.
        shown: send.content ? { to: send.content.to, cc: send.content.cc } : undefined,
        replyTo: send.reply_to ?? undefined,
        subject: rendered.subject,
        html: tracked.html,
        text: rendered.text,
        messageId: send.message_id,
        attachments,
        headers: {
          ...own,
          "X-PP-Send-Id": send.id,
          // RFC 8058: mailbox providers show an unsubscribe button that POSTs here.
          "List-Unsubscribe": `<${urls.unsubscribe}>`,
          "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
        },
        dkim,
        envelope: {
          // VERP: a bounce report to bounces+<token>@PP_BOUNCE_DOMAIN names its send.
          from: config.bounceDomain
            ? `bounces+${signToken(deps.secrets.secret, "bounce", send.id)}@${config.bounceDomain}`
            : send.from_email,
          to: envelopeTo,
        },
      }, send.sandbox);
      const now = new Date();
      const confirmed = config.deliveryConfirmation === "smtp";
      // The relay took the message for some recipients and refused others: the send's status
      // is its recipient's; each refused copy is an event of its own address.
      const refusedTo = result.rejected.find((r) => r.address.toLowerCase() === send.to_email.toLowerCase());
      const copyEvents = [
        ...dropped.map((d) => ({ type: "suppressed" as const, data: { address: d.address, reason: d.reason } })),
        ...result.rejected.filter((r) => r !== refusedTo).map((r) => ({
          type: "bounced" as const,
          data: {
            address: r.address,
            bounceType: r.code !== null && r.code >= 500 ? "hard" : "soft",
            smtpCode: r.code,
            response: r.response,
          },
        })),
      ];
      const hardCopies = result.rejected.filter((r) => r !== refusedTo && r.code !== null && r.code >= 500);
      if (hardCopies.length) await contactsRepo.markBounced(db, send.account_id, hardCopies.map((r) => r.address));
      const accepted = envelopeTo.filter((a) =>
        !result.rejected.some((r) => r.address.toLowerCase() === a.toLowerCase())
      );
      if (refusedTo) {
        // The copies went out, so the recipient cannot be retried alone: its refusal is final.
        const hard = refusedTo.code !== null && refusedTo.code >= 500;
        await finish(
          send,
          {
            status: hard ? "bounced" : "failed",
            sent_at: now,
            bounced_at: hard ? now : null,
            rendered_subject: rendered.subject,
            missing_variables: missingVariables,
            error_code: refusedTo.code ? `smtp_${refusedTo.code}` : "delivery_failed",
            error_message: refusedTo.response,
          },
          [
            {
              type: "sent",
              data: { response: result.response.slice(0, 500), sandbox: send.sandbox, recipients: accepted },
            },
            hard
              ? {
                type: "bounced",
                data: { bounceType: "hard", smtpCode: refusedTo.code, response: refusedTo.response },
              }
              : { type: "failed", data: { smtpCode: refusedTo.code, response: refusedTo.response } },
            ...copyEvents,
          ],
          hard ? "bounced" : undefined,
        );
        countFinished(hard ? "bounced" : "failed");
        if (hard) await queueReputationCheck(db, send.account_id);
        log.warn("send refused for its recipient, copies sent", { sendId, accountId: send.account_id });
        return;
      }
      await finish(send, {
        status: confirmed ? "delivered" : "sent",
        sent_at: now,
        delivered_at: confirmed ? now : null,
        rendered_subject: rendered.subject,
        missing_variables: missingVariables,
        links: tracked.links.length ? tracked.links : null,
        error_code: null,
        error_message: null,
      }, [
        {
          type: "sent",
          data: {
            response: result.response.slice(0, 500),
            sandbox: send.sandbox,
            ...(envelopeTo.length > 1 ? { recipients: accepted } : {}),
          },
        },
        ...(confirmed ? [{ type: "delivered" as const, data: { via: result.outbox ? "outbox" : "smtp" } }] : []),
        ...copyEvents,
      ]);
      countFinished(confirmed ? "delivered" : "sent");
      // From acceptance, or from its time for a scheduled send: the wait we owe, not the one asked for.
      deliverySeconds.observe(
        (now.getTime() - Math.max(send.created_at.getTime(), send.scheduled_at?.getTime() ?? 0)) / 1000,
      );
      log.info("send delivered", { sendId, accountId: send.account_id, ms: Math.round(performance.now() - started) });
    } catch (err) {
      const code = smtpCode(err);
      const message = errorText(err);
      if (code !== null && code >= 500 && isRecipientRefusal(err)) {
        // A permanent refusal: a hard bounce, and the address is not mailed again.
        await finish(
          send,
          {
            status: "bounced",
            bounced_at: new Date(),
            rendered_subject: rendered.subject,
            missing_variables: missingVariables,
            error_code: `smtp_${code}`,
            error_message: message,
          },
          [{ type: "bounced", data: { bounceType: "hard", smtpCode: code, response: message } }],
          "bounced",
        );
        countFinished("bounced");
        await queueReputationCheck(db, send.account_id);
        log.warn("send bounced", { sendId, accountId: send.account_id, smtpCode: code });
        return;
      }
      const { attempts, max_attempts } = helpers.job;
      const permanent = code !== null && code >= 500;
      if (permanent || attempts >= max_attempts) {
        await finish(send, {
          status: "failed",
          rendered_subject: rendered.subject,
          missing_variables: missingVariables,
          error_code: code ? `smtp_${code}` : "delivery_failed",
          error_message: message,
        }, [{ type: "failed", data: { attempts, smtpCode: code, response: message } }]);
        countFinished("failed");
        log.warn("send failed", { sendId, accountId: send.account_id, attempts, smtpCode: code });
        return;
      }
      // Temporary (4xx, dropped connection): back to queued with the reason; graphile-worker
      // retries with exponential backoff.
      await repo.updateSend(db, send.id, {
        status: "queued",
        error_code: code ? `smtp_${code}` : "delivery_deferred",
        error_message: message,
      });
      log.info("send deferred", { sendId, accountId: send.account_id, attempts, smtpCode: code });
      throw err;
    }
  }

  return task;
}
