import { CONNECTIONS, load, round, type Scenario, sleep, warmUp } from "../lib.ts";
import { type Bench, sendRequest } from "../stack.ts";

/**
 * Mixed load ("mixed (<topology>)"): POST /api/v1/sends at CONNECTIONS connections for
 * `mixedS` seconds, each send due at once, while the worker delivers them to the sink — the
 * accept and the delivery sharing the machine, as in production. Measured: sends/s answered
 * 202 with p50 and p99, emails/s at the sink during the window, and the backlog (accepted,
 * not yet at the sink) a third of the way in and at the end: a backlog that grows means
 * delivery does not keep up. After the window the rest is delivered (not measured), so the
 * next scenario starts on an empty queue.
 *
 * Run on the bench's stack (the default role, `all`) and on stacks of their own as `split`
 * (an api and a worker process) and `one-loop` (PP_WORKER_THREAD=false: the first release's
 * one event loop), for comparison.
 * Target (the default role): accept ≥ 1,000/s with p99 ≤ 50 ms while delivering ≥ 1,000/s,
 * the backlog not growing.
 */
export async function mixed(b: Bench): Promise<Record<string, Scenario>> {
  const seconds = b.quick ? 8 : 30;
  const tag = `mixed-${b.topology}`;
  b.log(`mixed load, ${b.topology} (${seconds} s)`);
  const request = sendRequest(b, "m", { tags: { bench: tag } });
  await warmUp({ url: b.base, requests: [request] }, 202);
  await drainAll(b, 120);

  const since = new Date();
  const sinkBefore = await b.sink.count();
  // The backlog: sends accepted since the start (an index range on the account) minus mails at the sink.
  const backlog = async () => {
    const { rows: [r] } = await b.pool.query(
      `select count(*)::int as n from sends where account_id = $1 and created_at >= $2`,
      [b.accountId, since],
    );
    return r.n - ((await b.sink.count()) - sinkBefore);
  };
  let early = NaN;
  const sampler = sleep(seconds * 1000 / 3).then(async () => early = await backlog());
  const [accept, cpu] = await b.cpu.measure(() =>
    load({ url: b.base, connections: CONNECTIONS, duration: seconds, requests: [request] }, 202)
  );
  await sampler;
  const atSink = (await b.sink.count()) - sinkBefore;
  const late = await backlog();
  const deliveredPerS = atSink / seconds;
  await drainAll(b, 300);
  const growing = late > early + deliveredPerS; // more than a second's worth added in the last two thirds
  return {
    [`mixed (${b.topology})`]: {
      value: round(accept.rps),
      unit: "sends/s accepted while delivering",
      target: b.topology === "all"
        ? "accept ≥ 1,000/s, p99 ≤ 50 ms, delivering ≥ 1,000/s, backlog not growing"
        : "(comparison)",
      pass: accept.rps >= 1000 && accept.p99 <= 50 && deliveredPerS >= 1000 && !growing,
      details: {
        ...cpu,
        p50_ms: accept.p50,
        p99_ms: accept.p99,
        other_answers: accept.other,
        delivered_per_s: round(deliveredPerS),
        backlog_at_third: early,
        backlog_at_end: late,
      },
    },
  };
}

/** Waits (bounded) until no send of the bench's account is waiting for delivery. */
async function drainAll(b: Bench, timeoutS: number): Promise<void> {
  const until = Date.now() + timeoutS * 1000;
  while (Date.now() < until) {
    const { rows: [r] } = await b.pool.query(
      `select count(*)::int as n from sends where account_id = $1 and status in ('queued', 'sending')
         and (scheduled_at is null or scheduled_at < now())`,
      [b.accountId],
    );
    if (r.n === 0) return;
    await sleep(500);
  }
  throw new Error(`mixed: sends still waiting after ${timeoutS} s`);
}
