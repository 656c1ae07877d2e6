/**
 * Transactional sends: accept (validate → tenant → template → sender domain → account
 * state → acceptSends: one transaction of contacts, send rows, events, jobs and quota, shared
 * by single sends, batches and segment pages), read, list and cancel. Delivery itself is the `deliver_send` task in jobs.ts.
 */
import type { Kysely, Transaction } from "kysely";
import type { Deps, Principal, Tenant } from "../context.ts";
import { processDeps, requireTenant } from "../context.ts";
import type { Database, SendStatus, SubmittedContent } from "../db/tables.ts";
import { AppError, type FieldError, invalid } from "../errors.ts";
import { uuidv7 } from "../ids.ts";
import { decodeCursor } from "../pagination.ts";
import { assertUuid, domainOf, isUuid, parseInput } from "../validation.ts";
import * as accounts from "../accounts/repo.ts";
import { accountState, type Quota } from "../accounts/service.ts";
import * as contacts from "../contacts/repo.ts";
import { isVerifiedSender } from "../domains/service.ts";
import * as events from "../events/repo.ts";
import * as stats from "../stats/repo.ts";
import * as files from "../attachments/repo.ts";
import { prepareAttachments, type PreparedAttachments, refsOf } from "../attachments/service.ts";
import type { TemplateRow } from "../templates/repo.ts";
import { templateForSend } from "../templates/service.ts";
import { GroupCommit } from "../db/group_commit.ts";
import { assertCompiles } from "../mail/render.ts";
import { countFinished, sendsAccepted } from "../metrics/metrics.ts";
import { type Address, CreateSendInput, ListSendsInput, parseAddress, RescheduleInput } from "./inputs.ts";
import * as repo from "./repo.ts";

/** What every send needs from its template and sender, checked before any write. */
export interface Prepared {
  /** Null for a message submitted over SMTP: it brings its own parts (AcceptContext.content). */
  template: TemplateRow | null;
  from: Address;
  replyTo: string | null;
  monthlyLimit: number | null;
}

/**
 * Checks the template (when the send has one), the sender address and the account for a
 * send, a batch or a submitted message. Throws template_not_found, validation_failed (no
 * from), domain_not_verified, forbidden (a key's domains) or sending_paused; writes nothing.
 */
export async function prepareSend(
  db: Kysely<Database>,
  t: Pick<Tenant, "accountId" | "domains">,
  v: { templateId?: string | null; from?: string | Address | null; replyTo?: string | null },
): Promise<Prepared> {
  // All three are cached by their own domains and dropped in every process when they change.
  const [template, account] = await Promise.all([
    v.templateId ? templateForSend({ db }, t.accountId, v.templateId) : null,
    accountState({ db }, t.accountId),
  ]);
  if (v.templateId && !template) {
    throw new AppError("template_not_found", `template ${v.templateId} does not exist`);
  }
  if (!account) throw new AppError("unauthorized", "account no longer exists");
  const from = typeof v.from === "string"
    ? parseAddress(v.from)!
    : v.from
    ? v.from
    : template?.from_email
    ? { address: template.from_email, name: template.from_name ?? undefined }
    : null;
  if (!from) throw invalid("from", template ? "is required: the template has no from address" : "is required");
  const host = domainOf(from.address);
  if (!(await isVerifiedSender({ db }, t.accountId, host))) {
    throw new AppError("domain_not_verified", `${host} is not a verified domain of this account`);
  }
  // A key restricted to some domains sends from those and their subdomains only.
  if (t.domains && !t.domains.some((d) => host === d || host.endsWith(`.${d}`))) {
    throw new AppError("forbidden", `this key may send from ${t.domains.join(", ")} only, not ${host}`);
  }
  if (!account.sending_enabled) {
    throw new AppError(
      "sending_paused",
      `sending is paused for this account${account.paused_reason ? `: ${account.paused_reason}` : ""}`,
    );
  }
  return {
    template: template ?? null,
    from,
    replyTo: v.replyTo ?? template?.reply_to ?? null,
    monthlyLimit: account.monthly_limit,
  };
}

/** The options a send request shares with its siblings (batch or segment page). */
export interface SendOptions {
  subject?: string | null;
  tags?: Record<string, string> | null;
  trackOpens?: boolean | null;
  trackClicks?: boolean | null;
  /** Headers every send of the request carries (a batch recipient's own win, by name in any case). */
  headers?: Record<string, string> | null;
  /** Copies every send of the request goes to (a batch recipient's own list replaces them). */
  cc?: string[] | null;
  bcc?: string[] | null;
}

/** What the sends of one request (a single send, a batch, a segment page) share. */
export interface AcceptContext {
  accountId: string;
  /** Sends of a `pp_test_` key: accepted and recorded, never mailed. */
  sandbox: boolean;
  prep: Prepared;
  options: SendOptions;
  /** The batch the sends belong to: then each contact gets at most one of them. */
  batchId: string | null;
  scheduledAt: Date | null;
  /** The files every send of the context carries, decoded and hashed; stored once. */
  attachments: PreparedAttachments | null;
  /** A submitted message's own parts, instead of a template (then `prep.template` is null). */
  content?: SubmittedContent | null;
}

/** One recipient: an address (created as a subscribed contact when unknown) or a contact uuid. */
export interface Recipient {
  to: string;
  personalizations?: Record<string, unknown> | null;
  headers?: Record<string, string> | null;
  cc?: string[] | null;
  bcc?: string[] | null;
  /** Where the request named it (`recipients.3.to`): errors about it then name it in `errors[]`. */
  path?: string;
}

/** A context and its recipients. */
export interface AcceptPart {
  ctx: AcceptContext;
  recipients: Recipient[];
}

/** What acceptSends wrote. */
export interface Accepted {
  /** Per part, its sends in recipient order (a send that its batch already had is left out). */
  sends: repo.SendRow[][];
  /** Per account that reserved units, its limit and its use this month after the reservation. */
  quota: Map<string, Quota>;
}

/**
 * Accepts sends, set-wise, in the caller's transaction: the contacts (unknown addresses
 * created as subscribed), the send rows, their first events, their delivery jobs and the
 * quota, each with a constant number of statements whatever the number of recipients.
 *
 * The status rule, the only one: a contact that unsubscribed, bounced or complained gives a
 * `suppressed` send (no job, no quota); a `scheduledAt` in the future gives `scheduled`
 * (its job runs then, or is created later when it is beyond the horizon: repo.jobDeferred);
 * anything else is `queued`.
 *
 * Throws (and so rolls the caller's transaction back) contact_not_found for unknown or
 * foreign contact uuids, validation_failed when two recipients of a batch are one contact,
 * quota_exceeded when an account's sends do not fit its monthly limit.
 */
export async function acceptSends(trx: Transaction<Database>, queue: repo.QueueOptions, parts: AcceptPart[]) {
  const contactOf = await resolveContacts(trx, parts);
  const now = Date.now();
  const rows = parts.flatMap((part, p) => {
    const { ctx } = part;
    const common = sendCommon(ctx, queue);
    const deferred = ctx.scheduledAt !== null && ctx.scheduledAt.getTime() > now;
    return part.recipients.map((r, i) => {
      const c = contactOf[p][i];
      const id = uuidv7();
      const status: SendStatus = c.status !== "subscribed" ? "suppressed" : deferred ? "scheduled" : "queued";
      const item: repo.SendItem = {
        id,
        contact_id: c.id,
        to_email: c.email,
        personalizations: JSON.stringify(r.personalizations ?? {}),
        headers: headersOf(ctx.options.headers, r.headers),
        cc: copiesOf(r.cc ?? ctx.options.cc),
        bcc: copiesOf(r.bcc ?? ctx.options.bcc),
        status,
        message_id: messageId(id, ctx.prep.from.address),
      };
      return { p, ctx, common, item, reason: c.status, deferred };
    });
  });

  // One insert per distinct set of shared columns (a batch, a page, or the single sends of a
  // group that share template and options: usually one).
  const inserted = new Map<string, repo.SendRow>();
  for (const group of Map.groupBy(rows, (r) => JSON.stringify(r.common)).values()) {
    for (const s of await repo.insertSends(trx, group[0].common, group.map((r) => r.item))) inserted.set(s.id, s);
  }
  const written = rows.filter((r) => inserted.has(r.item.id));
  // Each context's files once, referred to by each of its sends (a suppressed one too: it lists them).
  for (const [ctx, mine] of Map.groupBy(written.filter((r) => r.ctx.attachments), (r) => r.ctx)) {
    const a = ctx.attachments!;
    await files.storeAttachments(trx, ctx.accountId, a.blobs, refsOf(mine.map((r) => r.item.id), a));
  }
  await events.insertEvents(
    trx,
    written.map((r) => {
      const suppressed = r.item.status === "suppressed";
      return {
        send_id: r.item.id,
        account_id: r.ctx.accountId,
        type: suppressed ? "suppressed" as const : "queued" as const,
        data: suppressed
          ? { reason: r.reason }
          : r.ctx.batchId
          ? { batchId: r.ctx.batchId }
          : r.deferred
          ? { scheduledAt: r.ctx.scheduledAt!.toISOString() }
          : {},
      };
    }),
  );
  // Stats (stats/repo.ts): the accepted sends by account and tags, counted here where the tags are known.
  await stats.addAccepted(
    trx,
    [...Map.groupBy(written, (r) => `${r.ctx.accountId}|${r.common.tags}`).values()].map((group) => ({
      accountId: group[0].ctx.accountId,
      tags: JSON.parse(group[0].common.tags),
      accepted: group.length,
      suppressed: group.filter((r) => r.item.status === "suppressed").length,
    })),
  );
  const live = written.filter((r) => r.item.status !== "suppressed");
  const byRunAt = Map.groupBy(live, (r) => `${r.common.scheduled_at?.getTime() ?? ""}:${r.common.job_deferred}`);
  for (const group of byRunAt.values()) {
    const { scheduled_at, job_deferred } = group[0].common;
    await repo.queueDeliveries(trx, group.map((r) => r.item.id), scheduled_at, queue, job_deferred);
  }
  // The quota last: its row lock (every send of the account queues on it) is then held only
  // until the commit that follows, not across the inserts. Accounts in id order, so that two
  // transactions lock quota rows in the same order.
  const quota = new Map<string, Quota>();
  const liveOf = Map.groupBy(live, (r) => r.ctx.accountId);
  for (const accountId of [...liveOf.keys()].sort()) {
    const mine = liveOf.get(accountId)!;
    const limit = mine[0].ctx.prep.monthlyLimit;
    const reserved = await accounts.reserveUsage(trx, accountId, mine.length, limit);
    if (!reserved) {
      throw new AppError(
        "quota_exceeded",
        mine.length === 1
          ? "the monthly email limit of this account is reached"
          : `the sends need ${mine.length} emails, more than this month's remaining quota`,
      );
    }
    quota.set(accountId, { limit, used: reserved.used });
  }
  const sends = parts.map(() => [] as repo.SendRow[]);
  for (const r of written) sends[r.p].push(inserted.get(r.item.id)!);
  // Counted here, where every kind of send is accepted; only a failed commit after this would overcount.
  sendsAccepted.inc(written.length);
  if (written.length > live.length) countFinished("suppressed", written.length - live.length);
  return { sends, quota } satisfies Accepted;
}

/**
 * The contact of every recipient, per part: one upsert of the addresses and one read of
 * the uuids per account. Throws contact_not_found (naming each recipient that has a path)
 * and, in a batch, validation_failed for two recipients that are one contact.
 */
async function resolveContacts(trx: Transaction<Database>, parts: AcceptPart[]): Promise<contacts.ContactRef[][]> {
  const byAccount = Map.groupBy(parts, (part) => part.ctx.accountId);
  const found = new Map<string, Map<string, contacts.ContactRef>>();
  // Accounts in id order, addresses sorted: two transactions lock contacts in the same order.
  for (const accountId of [...byAccount.keys()].sort()) {
    const tos = byAccount.get(accountId)!.flatMap((part) => part.recipients.map((r) => r.to));
    // Two recipients with one address: one upsert row (a statement cannot touch a row twice).
    const emails = [...new Map(tos.filter((to) => !isUuid(to)).map((to) => [to.toLowerCase(), to]))]
      .sort(([a], [b]) => a < b ? -1 : a > b ? 1 : 0).map(([, email]) => email);
    const ids = [...new Set(tos.filter(isUuid).map((to) => to.toLowerCase()))];
    const mine = new Map<string, contacts.ContactRef>();
    for (const c of await contacts.upsertContactsByEmail(trx, accountId, emails)) mine.set(c.email.toLowerCase(), c);
    for (const c of await contacts.findContactsByIds(trx, accountId, ids)) mine.set(c.id, c);
    found.set(accountId, mine);
  }
  return parts.map((part) => {
    const mine = found.get(part.ctx.accountId)!;
    const missing: FieldError[] = [];
    const refs = part.recipients.map((r) => {
      const c = mine.get(r.to.toLowerCase());
      if (!c) missing.push({ path: r.path ?? "to", message: `contact ${r.to} does not exist` });
      return c!;
    });
    if (missing.length) {
      const named = part.recipients.some((r) => r.path !== undefined);
      throw new AppError("contact_not_found", missing.map((m) => m.message).join("; "), named ? missing : undefined);
    }
    // An address and a contact uuid may name the same contact: still one email each.
    if (part.ctx.batchId) rejectDuplicates(refs.map((c) => c.id), (i) => part.recipients[i].path ?? "to");
    return refs;
  });
}

/** Throws 422 validation_failed naming every entry that repeats an earlier one. */
export function rejectDuplicates(keys: string[], path: (i: number) => string): void {
  const first = new Map<string, number>();
  const errors: FieldError[] = [];
  keys.forEach((k, i) => {
    const j = first.get(k);
    if (j === undefined) first.set(k, i);
    else errors.push({ path: path(i), message: `repeats ${path(j)}: one email per recipient` });
  });
  if (errors.length) {
    throw new AppError("validation_failed", errors.map((e) => `${e.path}: ${e.message}`).join("; "), errors);
  }
}

/** A send's headers as JSON text: the request's, then the recipient's over them (names in any case); null: none. */
function headersOf(shared?: Record<string, string> | null, own?: Record<string, string> | null): string | null {
  if (!shared && !own) return null;
  const byName = new Map<string, [string, string]>();
  for (const h of [shared, own]) for (const [k, v] of Object.entries(h ?? {})) byName.set(k.toLowerCase(), [k, v]);
  return byName.size ? JSON.stringify(Object.fromEntries(byName.values())) : null;
}

/** A cc or bcc list as JSON text; null for none. */
function copiesOf(list?: string[] | null): string | null {
  return list?.length ? JSON.stringify(list) : null;
}

/** The columns the sends of one context share. */
function sendCommon(ctx: AcceptContext, queue: repo.QueueOptions): repo.SendCommon {
  const { prep, options: v } = ctx;
  return {
    account_id: ctx.accountId,
    template_id: prep.template?.id ?? null,
    batch_id: ctx.batchId,
    subject: v.subject ?? prep.template?.subject ?? "",
    from_email: prep.from.address,
    from_name: prep.from.name ?? null,
    reply_to: prep.replyTo,
    tags: JSON.stringify(v.tags ?? {}),
    // Without a template, tracked as a new template is by default.
    track_opens: v.trackOpens ?? prep.template?.track_opens ?? true,
    track_clicks: v.trackClicks ?? prep.template?.track_clicks ?? true,
    sandbox: ctx.sandbox,
    scheduled_at: ctx.scheduledAt,
    job_deferred: repo.jobDeferred(ctx.scheduledAt, queue),
    attachments: ctx.attachments ? JSON.stringify(ctx.attachments.meta) : null,
    content: ctx.content ? JSON.stringify(ctx.content) : null,
  };
}

/** A send's Message-ID, fixed at creation: `<sendId@from-domain>`. */
export function messageId(sendId: string, from: string): string {
  return `<${sendId}@${domainOf(from)}>`;
}

/**
 * Accepts one send: contact, send row, first event, delivery job and quota unit in one
 * transaction (acceptSends), all written or none. Sends accepted at the same moment share
 * that transaction (see acceptGroup). `quota` is the account's after the reservation;
 * absent when nothing was reserved (a suppressed send).
 */
export async function createSend(
  deps: Deps,
  p: Principal,
  input: unknown,
): Promise<{ send: repo.SendRow; quota?: Quota }> {
  const t = requireTenant(p, "sending");
  const v = parseInput(CreateSendInput, input);
  await assertCompiles(deps.renderer, { subject: v.subject });
  const prep = await prepareSend(deps.db, t, v);
  const ctx: AcceptContext = {
    accountId: t.accountId,
    sandbox: t.mode === "test",
    prep,
    options: v,
    batchId: null,
    scheduledAt: v.scheduledAt ? new Date(v.scheduledAt) : null,
    attachments: await prepareAttachments(v.attachments),
  };
  const { send, quota } = await acceptGroup(deps).add({
    ctx,
    recipients: [{ to: v.to, personalizations: v.personalizations, cc: v.cc, bcc: v.bcc }],
  });
  deps.log.info("send accepted", {
    accountId: t.accountId,
    sendId: send.id,
    status: send.status,
    sandbox: send.sandbox,
  });
  return { send, quota };
}

/**
 * Accepts one part (one recipient) through the process's group commit (acceptGroup), as a
 * single API send is: for a message submitted over SMTP to one recipient.
 */
export function acceptOne(deps: Deps, part: AcceptPart): Promise<Written> {
  return acceptGroup(deps).add(part);
}

/** A single send as its group wrote it, with its account's quota after the group's reservation. */
interface Written {
  send: repo.SendRow;
  quota?: Quota;
}

const acceptGroups = new WeakMap<Deps, GroupCommit<AcceptPart, Written>>();

/**
 * The process's group commit for single sends: the sends accepted while the previous group
 * commits are written together by one acceptSends (one statement per kind of row) and one
 * commit. At 32 concurrent requests this is the difference between one WAL flush per send,
 * with every send of an account queueing on its quota row lock, and one per group (see the
 * performance section of the README). A send that cannot be accepted (unknown contact uuid,
 * quota reached) rolls the group back: GroupCommit then writes each send of the group alone,
 * so that one gets its error and creates nothing (not even its contact), and the others are
 * accepted.
 */
function acceptGroup(requestDeps: Deps): GroupCommit<AcceptPart, Written> {
  const deps = processDeps(requestDeps); // one group commit per process, not per request
  let g = acceptGroups.get(deps);
  if (!g) {
    g = new GroupCommit<AcceptPart, Written>((parts) =>
      deps.db.transaction().execute(async (trx) => {
        const { sends, quota } = await acceptSends(trx, deps.config, parts);
        return sends.map(([send], i): Written => ({ send, quota: quota.get(parts[i].ctx.accountId) }));
      })
    );
    acceptGroups.set(deps, g);
  }
  return g;
}

/** One of the caller's sends; 404 `not_found` for unknown and foreign ids alike. */
export async function getSend(deps: Deps, p: Principal, id: string) {
  const t = requireTenant(p, "sending");
  const row = await repo.findSend(deps.db, t.accountId, assertUuid(id));
  if (!row) throw new AppError("not_found", "send not found");
  return row;
}

/** Like getSend, but null instead of 404 (GraphQL's nullable `send`). */
export async function findSend(deps: Deps, p: Principal, id: string) {
  const t = requireTenant(p, "sending");
  return isUuid(id) ? (await repo.findSend(deps.db, t.accountId, id)) ?? null : null;
}

/** A page of the caller's sends, newest first; `nextCursor` is null on the last page. */
export async function listSends(deps: Deps, p: Principal, input: unknown) {
  const t = requireTenant(p, "sending");
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
  const t = requireTenant(p, "sending");
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

/**
 * Moves a `scheduled` or `queued` send to `scheduledAt` (a time past or now makes it due at
 * once), across the scheduling horizon either way; its quota unit stays. 404 for a send not
 * the caller's, 409 `not_reschedulable` past `queued`.
 */
export async function rescheduleSend(deps: Deps, p: Principal, id: string, input: unknown) {
  const t = requireTenant(p, "sending");
  const { scheduledAt } = parseInput(RescheduleInput, input);
  assertUuid(id);
  const row = await deps.db.transaction().execute(async (trx) => {
    const [moved] = await repo.reschedulePending(trx, t.accountId, { sendId: id }, new Date(scheduledAt), deps.config);
    if (moved) return moved;
    const existing = await repo.findSend(trx, t.accountId, id);
    if (!existing) throw new AppError("not_found", "send not found");
    throw new AppError(
      "not_reschedulable",
      `the send is ${existing.status}; only scheduled or queued sends can be rescheduled`,
    );
  });
  deps.log.info("send rescheduled", { accountId: t.accountId, sendId: id, scheduledAt: row.scheduled_at });
  return row;
}
