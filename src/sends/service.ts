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
import { noteQuota } from "../accounts/service.ts";
import * as contacts from "../contacts/repo.ts";
import * as domains from "../domains/repo.ts";
import * as events from "../events/repo.ts";
import * as templates from "../templates/repo.ts";
import { TtlCache } from "../cache.ts";
import { GroupCommit } from "../db/group_commit.ts";
import { assertCompiles } from "../mail/render.ts";
import { type Address, CreateSendInput, ListSendsInput, parseAddress } from "./inputs.ts";
import * as repo from "./repo.ts";

/**
 * How long this process trusts what it read about a template, an account's state and its
 * verified domains before a send (every send reads them). A change made in this process
 * applies at once (clearRequestCaches); one made by another process within this time.
 * Delivery reads the template and the account's state afresh, so a paused account's sends
 * accepted in that second are held, not mailed.
 */
export const PREPARE_CACHE_MS = 1_000;

const templateCache = new TtlCache<templates.TemplateRow | undefined>(PREPARE_CACHE_MS);
const accountCache = new TtlCache<Awaited<ReturnType<typeof accounts.findAccount>>>(PREPARE_CACHE_MS);
const senderCache = new TtlCache<boolean>(PREPARE_CACHE_MS);

/** Forgets what prepareSend cached: after a template, an account's state or a domain changed here. */
export function clearRequestCaches(): void {
  templateCache.clear();
  accountCache.clear();
  senderCache.clear();
}

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
    templateCache.getOrLoad(
      `${t.accountId}:${v.templateId}`,
      () => templates.findTemplate(db, t.accountId, v.templateId),
    ),
    accountCache.getOrLoad(t.accountId, () => accounts.findAccount(db, t.accountId)),
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
  const verified = await senderCache.getOrLoad(
    `${t.accountId}:${host}`,
    () => domains.isVerifiedSender(db, t.accountId, host),
  );
  if (!verified) {
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
  queue: repo.QueueOptions,
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
    job_deferred: repo.jobDeferred(scheduledAt, queue),
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
 * Sends accepted at the same moment share that transaction (see acceptGroup).
 */
export async function createSend(deps: Deps, p: Principal, input: unknown) {
  const t = requireTenant(p);
  const v = parseInput(CreateSendInput, input);
  await assertCompiles(deps.renderer, { subject: v.subject });
  const prep = await prepareSend(deps.db, t, v);
  const scheduledAt = v.scheduledAt ? new Date(v.scheduledAt) : null;
  const { row: result, used } = await acceptGroup(deps).add({ t, prep, v, scheduledAt });
  if (used !== undefined) noteQuota({ limit: prep.monthlyLimit, used });
  deps.log.info("send accepted", {
    accountId: t.accountId,
    sendId: result.id,
    status: result.status,
    sandbox: result.sandbox,
  });
  return result;
}

/** A validated single send waiting for its group's transaction. */
interface PendingSend {
  t: Tenant;
  prep: Prepared;
  v: CreateSendInput;
  scheduledAt: Date | null;
}

/** A written send, and its account's use this month after its group's reservation (none if nothing was reserved). */
interface Written {
  row: repo.SendRow;
  used?: number;
}

const acceptGroups = new WeakMap<Deps, GroupCommit<PendingSend, Written>>();

/**
 * The process's group commit for single sends: the sends accepted while the previous group
 * commits are written together, with one statement per kind of row (contacts, quota per
 * account, sends, events, jobs) and one commit. At 32 concurrent requests this is the
 * difference between one WAL flush per send, with every send of an account queueing on its
 * quota row lock, and one per group (see the performance section of the README).
 */
function acceptGroup(deps: Deps) {
  let g = acceptGroups.get(deps);
  if (!g) acceptGroups.set(deps, g = new GroupCommit((items) => writeSends(deps, items)));
  return g;
}

/**
 * Writes a group of single sends in one transaction; their rows, in order. A send that
 * cannot be accepted (unknown contact uuid, quota reached) throws, which rolls the group
 * back: GroupCommit then writes each send of the group alone, so that one gets its error
 * and creates nothing (not even its contact), and the others are accepted.
 */
function writeSends(deps: Deps, items: PendingSend[]): Promise<Written[]> {
  return deps.db.transaction().execute(async (trx) => {
    const out: (repo.SendRow | undefined)[] = items.map(() => undefined);
    const contactOf: (contacts.ContactRef | undefined)[] = [];
    const usedOf = new Map<string, number>();
    const liveOf = new Map<string, { n: number; limit: number | null }>();
    // Per account, in id order (two processes' groups lock quota rows in the same order).
    const accountIds = [...new Set(items.map((it) => it.t.accountId))].sort();
    for (const accountId of accountIds) {
      const idx = items.map((it, i) => it.t.accountId === accountId ? i : -1).filter((i) => i >= 0);
      // Two sends to one address in a group: one upsert row (the statement cannot touch a row
      // twice). Sorted, so that two groups lock the same contacts in the same order.
      const emails = [
        ...new Map(
          idx.filter((i) => !isUuid(items[i].v.to)).map((i) => [items[i].v.to.toLowerCase(), items[i].v.to]),
        ),
      ].sort(([a], [b]) => a < b ? -1 : a > b ? 1 : 0).map(([, email]) => email);
      const ids = idx.filter((i) => isUuid(items[i].v.to)).map((i) => items[i].v.to.toLowerCase());
      const byEmail = new Map(
        (await contacts.upsertContactsByEmail(trx, accountId, emails)).map((c) => [c.email.toLowerCase(), c]),
      );
      const byId = new Map((await contacts.findContactsByIds(trx, accountId, ids)).map((c) => [c.id, c]));
      const live: number[] = [];
      for (const i of idx) {
        const to = items[i].v.to.toLowerCase();
        const c = isUuid(to) ? byId.get(to) : byEmail.get(to);
        if (!c) throw new AppError("contact_not_found", `contact ${items[i].v.to} does not exist`);
        if (c.status === "subscribed") live.push(i);
        contactOf[i] = c;
      }
      if (live.length) liveOf.set(accountId, { n: live.length, limit: items[live[0]].prep.monthlyLimit });
    }

    const now = Date.now();
    const rows = items.map((it, i) => {
      const c = contactOf[i]!;
      const id = uuidv7();
      const deferred = it.scheduledAt !== null && it.scheduledAt.getTime() > now;
      const status: SendStatus = c.status !== "subscribed" ? "suppressed" : deferred ? "scheduled" : "queued";
      return {
        i,
        common: sendCommon(it.t, it.prep, it.v, null, it.scheduledAt, deps.config),
        item: {
          id,
          contact_id: c.id,
          to_email: c.email,
          personalizations: JSON.stringify(it.v.personalizations ?? {}),
          status,
          message_id: messageId(id, it.prep.from.address),
        },
        reason: c.status,
        deferred,
      };
    });
    // One insert per distinct set of shared columns (usually one: same template, same options).
    const byCommon = Map.groupBy(rows, (r) => JSON.stringify(r.common));
    for (const group of byCommon.values()) {
      const inserted = new Map(
        (await repo.insertSends(trx, group[0].common, group.map((r) => r.item))).map((s) => [s.id, s]),
      );
      for (const r of group) out[r.i] = inserted.get(r.item.id);
    }
    await events.insertEvents(
      trx,
      rows.map((r) => {
        const suppressed = r.item.status === "suppressed";
        return {
          send_id: r.item.id,
          account_id: r.common.account_id,
          type: suppressed ? "suppressed" as const : "queued" as const,
          data: suppressed
            ? { reason: r.reason }
            : r.deferred
            ? { scheduledAt: r.common.scheduled_at!.toISOString() }
            : {},
        };
      }),
    );
    const queued = rows.filter((r) => r.item.status !== "suppressed");
    const byRunAt = Map.groupBy(queued, (r) => `${r.common.scheduled_at?.getTime() ?? ""}:${r.common.job_deferred}`);
    for (const group of byRunAt.values()) {
      const { scheduled_at, job_deferred } = group[0].common;
      await repo.queueDeliveries(trx, group.map((r) => r.item.id), scheduled_at, deps.config, job_deferred);
    }
    // The quota last: its row lock (every send of the account queues on it) is then held only
    // until the commit that follows, not across the inserts.
    for (const [accountId, { n, limit }] of liveOf) {
      const reserved = await accounts.reserveUsage(trx, accountId, n, limit);
      if (!reserved) throw new AppError("quota_exceeded", "the monthly email limit of this account is reached");
      usedOf.set(accountId, reserved.used);
    }
    return out.map((row, i) => {
      if (!row) throw new Error("a send of the group was not inserted");
      return { row, used: usedOf.get(items[i].t.accountId) };
    });
  });
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
