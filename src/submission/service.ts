/**
 * SMTP submission (API.md "SMTP submission"): a parsed message becomes one send per envelope
 * recipient, through the same accept pipeline as API sends (sends/service.ts acceptSends),
 * with the same checks: the key's scope and domains, a verified from-domain, the account's
 * pause and quota. A message to one recipient shares the group commit of single API sends;
 * to several, its sends are one batch, written in one transaction. The send has no template:
 * its parts, as written, are its `content`. Transport-free: smtp.ts is the edge.
 */
import type { Deps, Tenant } from "../context.ts";
import { requireTenant } from "../context.ts";
import { uuidv7 } from "../ids.ts";
import { fingerprint, idempotent } from "../idempotency/service.ts";
import { prepareFiles } from "../attachments/service.ts";
import * as batchesRepo from "../batches/repo.ts";
import { type AcceptContext, acceptOne, type AcceptPart, acceptSends, prepareSend } from "../sends/service.ts";
import { type ParsedMessage, readSubmission } from "./inputs.ts";

/** Envelope recipients of one message, at most (API.md). */
export const MAX_RECIPIENTS = 100;

/** What a submission created. */
export interface Submitted {
  sendIds: string[];
  /** When the message had several recipients. */
  batchId: string | null;
  /** True when an earlier message with its Idempotency-Key created them. */
  replayed: boolean;
}

/**
 * Accepts a submitted message for its envelope recipients (1–MAX_RECIPIENTS, checked by the
 * listener): everything written, or nothing and an AppError (validation_failed naming the
 * header or file, domain_not_verified, forbidden, sending_paused, quota_exceeded,
 * idempotency_conflict). With an `Idempotency-Key` header, the same message again answers the
 * first one's sends, for 24 h, as for the API.
 */
export async function submitMessage(
  deps: Deps,
  t: Tenant,
  envelopeTo: string[],
  parsed: ParsedMessage,
): Promise<Submitted> {
  requireTenant(t, "sending");
  const m = readSubmission(parsed);
  // One send per address: a client may name one twice (To and Cc, in another case).
  const recipients = [...new Map(envelopeTo.map((a) => [a.toLowerCase(), a])).values()];
  const files = await prepareFiles(m.files);
  // What the message says, not its bytes: a client's retry may write a new Date or Message-ID.
  const fp = fingerprint("smtp submission", {
    to: recipients.map((a) => a.toLowerCase()),
    from: m.from,
    subject: m.subject,
    content: m.content,
    headers: m.headers,
    tags: m.tags,
    track: [m.trackOpens, m.trackClicks],
    files: files?.meta ?? [],
  });
  const out = await idempotent(deps, t, m.idempotencyKey, fp, async () => {
    const prep = await prepareSend(deps.db, t, { from: m.from, replyTo: m.replyTo });
    const batchId = recipients.length > 1 ? uuidv7() : null;
    const ctx: AcceptContext = {
      accountId: t.accountId,
      sandbox: t.mode === "test",
      prep,
      options: {
        subject: m.subject,
        tags: m.tags,
        trackOpens: m.trackOpens,
        trackClicks: m.trackClicks,
        headers: m.headers,
      },
      batchId,
      scheduledAt: null,
      attachments: files,
      content: m.content,
    };
    const part: AcceptPart = { ctx, recipients: recipients.map((to) => ({ to })) };
    let sendIds: string[];
    if (batchId === null) {
      sendIds = [(await acceptOne(deps, part)).send.id];
    } else {
      const { sends } = await deps.db.transaction().execute(async (trx) => {
        await batchesRepo.insertBatch(trx, {
          id: batchId,
          account_id: t.accountId,
          template_id: null,
          status: "accepted",
          count: recipients.length,
          request: "{}",
          updated_at: new Date(),
        });
        return await acceptSends(trx, deps.config, [part]);
      });
      sendIds = sends[0].map((s) => s.id);
    }
    return { status: 200, body: { sendIds, batchId } };
  });
  const body = out.body as { sendIds: string[]; batchId: string | null };
  return { ...body, replayed: out.replayed };
}
