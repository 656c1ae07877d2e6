import { closedLoop, CONNECTIONS, inTransaction, load, pct, round, type Scenario, warmUp } from "../lib.ts";
import { type Bench, sendRequest } from "../stack.ts";

/**
 * Single-send accept ("single-send accept"): POST /api/v1/sends at CONNECTIONS connections for
 * `loadS`, each to a new address, scheduled an hour ahead so that delivery does not run during
 * the measurement; sends/s answered 202, p50 and p99.
 *
 * Baseline: the same writes (contact, usage, send, queued event, job) in one transaction
 * straight from a pg pool, CONNECTIONS loops for `loadS` (no HTTP, no checks).
 * Target: ≥ 1,500/s, ≥ 0.5× baseline, p99 ≤ 50 ms.
 */
export async function singleSendAccept(b: Bench): Promise<Record<string, Scenario>> {
  b.log("single-send accept");
  await warmUp({ url: b.base, requests: [sendRequest(b, "warm", { scheduledAt: b.later() })] }, 202);
  const [accept, acceptCpu] = await b.cpu.measure(() =>
    load(
      {
        url: b.base,
        connections: CONNECTIONS,
        duration: b.loadS,
        requests: [sendRequest(b, "a", { scheduledAt: b.later() })],
      },
      202,
    )
  );
  const acceptBase = await closedLoop(CONNECTIONS, b.loadS, () =>
    inTransaction(b.pool, async (c) => {
      const { rows: [ct] } = await c.query(
        `insert into contacts (account_id, email, updated_at) values ($1, $2, now())
         on conflict (account_id, lower(email)) do update set email = contacts.email returning id, email`,
        [b.accountId, b.uniq("b")],
      );
      await c.query(
        `insert into account_usage (account_id, month, used) values ($1, date_trunc('month', now())::date, 1)
         on conflict (account_id, month) do update set used = account_usage.used + 1`,
        [b.accountId],
      );
      const id = crypto.randomUUID();
      await c.query(
        `insert into sends (id, contact_id, to_email, personalizations, status, message_id, account_id, template_id,
           subject, from_email, from_name, tags, track_opens, track_clicks, sandbox, scheduled_at)
         values ($1::uuid, $2, $3, '{"order_id":"O-1"}', 'scheduled', '<' || $1::text || '@example.com>', $4, $5,
           'Order {{ order_id }} confirmed', 'orders@example.com', 'Example Shop', '{}', true, true, false, $6)`,
        [id, ct.id, ct.email, b.accountId, b.templateId, b.later()],
      );
      await c.query(`insert into email_events (send_id, account_id, type, data) values ($1, $2, 'queued', '{}')`, [
        id,
        b.accountId,
      ]);
      await c.query(
        `select graphile_worker.add_job('bench_noop', json_build_object('sendId', $1::text), run_at := $2,
           job_key := 'bench:' || $1::text)`,
        [id, b.later()],
      );
    }));
  const acceptBaseRps = acceptBase.n / acceptBase.seconds;
  return {
    "single-send accept": {
      value: round(accept.rps),
      unit: "sends/s",
      target: "≥ 1,500/s, ≥ 0.5× baseline, p99 ≤ 50 ms",
      baseline: round(acceptBaseRps),
      ratio: round(accept.rps / acceptBaseRps, 2),
      pass: accept.rps >= 1500 && accept.rps >= 0.5 * acceptBaseRps && accept.p99 <= 50,
      details: {
        ...acceptCpu,
        p50_ms: accept.p50,
        p99_ms: accept.p99,
        other_answers: accept.other,
        baseline_p50_ms: round(pct(acceptBase.lat, 50), 1),
        baseline_p99_ms: round(pct(acceptBase.lat, 99), 1),
      },
    },
  };
}
