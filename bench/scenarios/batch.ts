import { closedLoop, inTransaction, load, pct, round, type Scenario } from "../lib.ts";
import type { Bench } from "../stack.ts";

/** Batches in flight at once, from the load and from the baseline alike. */
const PARALLEL = 4;

/**
 * Batch accept ("batch accept"): POST /api/v1/sends/batch with 1,000 new recipients each,
 * scheduled an hour ahead, PARALLEL at a time for `loadS`; recipients/s accepted, and p50 and
 * p99 per batch.
 *
 * Baseline: the same 1,000 contacts, sends and jobs written set-wise (unnest) in one
 * transaction straight from a pg pool, PARALLEL loops for `loadS`.
 * Target: p50 ≤ 150 ms per batch, ≥ 8,000 recipients/s.
 */
export async function batchAccept(b: Bench): Promise<Record<string, Scenario>> {
  b.log("batch accept");
  const batchBody = (tag: string, scheduledAt?: string) =>
    JSON.stringify({
      templateId: b.templateId,
      scheduledAt,
      recipients: Array.from({ length: 1000 }, () => b.recipient(tag, "B")),
    });
  const batchReq = {
    method: "POST" as const,
    path: "/api/v1/sends/batch",
    headers: b.auth,
    setupRequest: (req: Record<string, unknown>) => ({ ...req, body: batchBody("batch", b.later()) }),
  };
  const [batch, batchCpu] = await b.cpu.measure(() =>
    load({ url: b.base, connections: PARALLEL, duration: b.loadS, requests: [batchReq] }, 202)
  );
  const batchBase = await closedLoop(PARALLEL, b.loadS, () => {
    const emails = Array.from({ length: 1000 }, () => b.uniq("bb"));
    return inTransaction(b.pool, async (c) => {
      const { rows } = await c.query(
        `insert into contacts (account_id, email, updated_at) select $1, e, now() from unnest($2::text[]) e
         on conflict (account_id, lower(email)) do update set email = contacts.email returning id, email`,
        [b.accountId, emails],
      );
      const ids = rows.map(() => crypto.randomUUID());
      await c.query(
        `insert into sends (id, contact_id, to_email, personalizations, status, message_id, account_id, template_id,
           subject, from_email, tags, track_opens, track_clicks, sandbox, scheduled_at)
         select u.id, u.cid, u.email, '{"order_id":"B-1"}', 'scheduled', '<' || u.id || '@example.com>', $4, $5,
           'Order', 'orders@example.com', '{}', true, true, false, $6
         from unnest($1::uuid[], $2::uuid[], $3::text[]) as u(id, cid, email)`,
        [ids, rows.map((r) => r.id), rows.map((r) => r.email), b.accountId, b.templateId, b.later()],
      );
      await c.query(
        `select graphile_worker.add_jobs(array(select ('bench_noop', json_build_object('sendId', id), null, $2::timestamptz,
           null, 'bench:' || id, null, null)::graphile_worker.job_spec from unnest($1::uuid[]) id))`,
        [ids, b.later()],
      );
    });
  });
  const batchRecipientsPerS = batch.rps * 1000;
  const batchBaseRecipientsPerS = batchBase.n * 1000 / batchBase.seconds;
  return {
    "batch accept": {
      value: round(batchRecipientsPerS),
      unit: "recipients/s",
      target: "p50 ≤ 150 ms per batch, ≥ 8,000 recipients/s",
      baseline: round(batchBaseRecipientsPerS),
      ratio: round(batchRecipientsPerS / batchBaseRecipientsPerS, 2),
      pass: batch.p50 <= 150 && batchRecipientsPerS >= 8000,
      details: {
        ...batchCpu,
        p50_ms: batch.p50,
        p99_ms: batch.p99,
        batches: batch.ok,
        other_answers: batch.other,
        baseline_p50_ms: round(pct(batchBase.lat, 50), 1),
      },
    },
  };
}
