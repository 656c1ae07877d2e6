/**
 * Transactional sends: accept (validate → tenant → template → sender domain → account
 * state → one transaction of contact upsert, quota, send row, event and job), read,
 * list and cancel. Delivery itself is the `deliver_send` task in jobs.ts.
 */
import type { Kysely } from "kysely";
import type { Deps, Principal, Tenant } from "../context.ts";
import { requireTenant } from "../context.ts";
import type { Database, SendStatus } from "../db/tables.ts";
import { AppError, invalid } from "../errors.ts";
import { uuidv7 } from "../ids.ts";
import { decodeCursor } from "../pagination.ts";
import { assertUuid, domainOf, isUuid, parseInput } from "../validation.ts";
import * as accounts from "../accounts/repo.ts";
import * as contacts from "../contacts/repo.ts";
import * as domains from "../domains/repo.ts";
import * as events from "../events/repo.ts";
import * as templates from "../templates/repo.ts";
import { type Address, CreateSendInput, ListSendsInput, parseAddress } from "./inputs.ts";
import * as repo from "./repo.ts";

/** What every send needs from its template and sender, checked before any write. */
export interface Prepared {
  template: templates.TemplateRow;
  from: Address;
  replyTo: string | null;
  monthlyLimit: number | null;
}

/**
 * Checks the template, the sender address and the account for a send or a batch.
 * Throws template_not_found, validation_failed (no from), domain_not_verified or
 * sending_paused; writes nothing.
 */
export async function prepareSend(
  db: Kysely<Database>,
  t: Tenant,
  v: { templateId: string; from?: string | null; replyTo?: string | null },
): Promise<Prepared> {
  const [template, account] = await Promise.all([
    templates.findTemplate(db, t.accountId, v.templateId),
    accounts.findAccount(db, t.accountId),
  ]);
  if (!template) throw new AppError("template_not_found", `template ${v.templateId} does not exist`);
  if (!account) throw new AppError("unauthorized", "account no longer exists");
  const from = v.from
    ? parseAddress(v.from)!
    : template.from_email
    ? { address: template.from_email, name: template.from_name ?? undefined }
    : null;
  if (!from) throw invalid("from", "is required: the template has no from address");
  const host = domainOf(from.address);
  if (!(await domains.isVerifiedSender(db, t.accountId, host))) {
    throw new AppError("domain_not_verified", `${host} is not a verified domain of this account`);
  }
  if (!account.sending_enabled) {
    throw new AppError(
      "sending_paused",
      `sending is paused for this account${account.paused_reason ? `: ${account.paused_reason}` : ""}`,
    );
  }
  return { template, from, replyTo: v.replyTo ?? template.reply_to ?? null, monthlyLimit: account.monthly_limit };
}

/** The options a send request shares with its siblings (batch or segment page). */
export interface SendOptions {
  subject?: string | null;
  tags?: Record<string, string> | null;
  trackOpens?: boolean | null;
  trackClicks?: boolean | null;
}

/** The columns sends created by one request share. */
export function sendCommon(
  t: Tenant,
  prep: Prepared,
  v: SendOptions,
  batchId: string | null,
  scheduledAt: Date | null,
): repo.SendCommon {
  return {
    account_id: t.accountId,
    template_id: prep.template.id,
    batch_id: batchId,
    subject: v.subject ?? prep.template.subject,
    from_email: prep.from.address,
    from_name: prep.from.name ?? null,
    reply_to: prep.replyTo,
    tags: JSON.stringify(v.tags ?? {}),
    track_opens: v.trackOpens ?? prep.template.track_opens,
    track_clicks: v.trackClicks ?? prep.template.track_clicks,
    sandbox: t.mode === "test",
    scheduled_at: scheduledAt,
  };
}

/** A send's Message-ID, fixed at creation: `<sendId@from-domain>`. */
export function messageId(sendId: string, from: string): string {
  return `<${sendId}@${domainOf(from)}>`;
}

/**
 * Accepts one send. The contact upsert, the quota unit, the send row, its first event
 * and its delivery job are one transaction: all are written or none. A contact that
 * unsubscribed, bounced or complained gives a `suppressed` send with no job and no quota.
 */
export async function createSend(deps: Deps, p: Principal, input: unknown) {
  const t = requireTenant(p);
  const v = parseInput(CreateSendInput, input);
  const prep = await prepareSend(deps.db, t, v);
  const scheduledAt = v.scheduledAt ? new Date(v.scheduledAt) : null;
  const deferred = scheduledAt !== null && scheduledAt.getTime() > Date.now();

  const send = await deps.db.transaction().execute(async (trx) => {
    const contact = isUuid(v.to)
      ? await contacts.findContact(trx, t.accountId, v.to)
      : await contacts.upsertContactByEmail(trx, t.accountId, v.to);
    if (!contact) throw new AppError("contact_not_found", `contact ${v.to} does not exist`);
    const suppressed = contact.status !== "subscribed";
    if (!suppressed) {
      const ok = await accounts.reserveUsage(trx, t.accountId, 1, prep.monthlyLimit);
      if (!ok) throw new AppError("quota_exceeded", "the monthly email limit of this account is reached");
    }
    const id = uuidv7();
    const status: SendStatus = suppressed ? "suppressed" : deferred ? "scheduled" : "queued";
    const [row] = await repo.insertSends(trx, sendCommon(t, prep, v, null, scheduledAt), [{
      id,
      contact_id: contact.id,
      to_email: contact.email,
      personalizations: JSON.stringify(v.personalizations ?? {}),
      status,
      message_id: messageId(id, prep.from.address),
    }]);
    await events.insertEvents(trx, [{
      send_id: id,
      account_id: t.accountId,
      type: suppressed ? "suppressed" : "queued",
      data: suppressed ? { reason: contact.status } : deferred ? { scheduledAt: scheduledAt!.toISOString() } : {},
    }]);
    if (!suppressed) await repo.queueDeliveries(trx, [id], scheduledAt, deps.config.smtpMaxAttempts);
    return row;
  });
  deps.log.info("send accepted", {
    accountId: t.accountId,
    sendId: send.id,
    status: send.status,
    sandbox: send.sandbox,
  });
  return send;
}

/** One of the caller's sends; 404 `not_found` for unknown and foreign ids alike. */
export async function getSend(deps: Deps, p: Principal, id: string) {
  const t = requireTenant(p);
  const row = await repo.findSend(deps.db, t.accountId, assertUuid(id));
  if (!row) throw new AppError("not_found", "send not found");
  return row;
}

/** Like getSend, but null instead of 404 (GraphQL's nullable `send`). */
export async function findSend(deps: Deps, p: Principal, id: string) {
  const t = requireTenant(p);
  return isUuid(id) ? (await repo.findSend(deps.db, t.accountId, id)) ?? null : null;
}

/** A page of the caller's sends, newest first; `nextCursor` is null on the last page. */
export async function listSends(deps: Deps, p: Principal, input: unknown) {
  const t = requireTenant(p);
  const v = parseInput(ListSendsInput, input);
  const rows = await repo.listSends(deps.db, t.accountId, {
    limit: v.limit + 1,
    status: v.status,
    batchId: v.batchId,
    after: v.cursor ? decodeCursor(v.cursor) : undefined,
  });
  return { rows: rows.slice(0, v.limit), hasMore: rows.length > v.limit };
}

/**
 * Cancels a scheduled or queued send: its job is removed, its quota unit given back and
 * a `cancelled` event recorded. 409 `not_cancellable` once delivery has started.
 */
export async function cancelSend(deps: Deps, p: Principal, id: string) {
  const t = requireTenant(p);
  assertUuid(id);
  const row = await deps.db.transaction().execute(async (trx) => {
    const cancelled = await repo.cancelPending(trx, t.accountId, id);
    if (!cancelled) {
      const existing = await repo.findSend(trx, t.accountId, id);
      if (!existing) throw new AppError("not_found", "send not found");
      throw new AppError(
        "not_cancellable",
        `the send is ${existing.status}; only scheduled or queued sends can be cancelled`,
      );
    }
    await repo.removeDelivery(trx, id);
    await accounts.releaseUsage(trx, t.accountId, [cancelled.created_at]);
    await events.insertEvents(trx, [{ send_id: id, account_id: t.accountId, type: "cancelled" }]);
    return cancelled;
  });
  deps.log.info("send cancelled", { accountId: t.accountId, sendId: id });
  return row;
}

/** A send's From as a header would show it: `Name <address>` or the address. */
export function formatFrom(s: { from_name: string | null; from_email: string }): string {
  return s.from_name ? `${s.from_name} <${s.from_email}>` : s.from_email;
}
