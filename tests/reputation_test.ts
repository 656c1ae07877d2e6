/**
 * Reputation: real SMTP 550s and complaint events pause an account's sending at the
 * API.md thresholds; its queued sends are held (not lost, not failed) and go out after ops
 * resume it.
 */
import { assert, assertEquals } from "./assert.ts";
import {
  accountState,
  ADMIN_TOKEN,
  INBOUND,
  opts,
  postSigned,
  sendBatchAndWait,
  type Stack,
  startStack,
  untilPaused,
  waitFor,
} from "./helpers.ts";

Deno.test("reputation: bounces and complaints pause sending; held sends go out after resume", opts, async (t) => {
  const stack = await startStack({ env: { PP_INBOUND_SECRET: INBOUND.secret } });
  stack.sink.reply = (rcpt) => rcpt.startsWith("bad-") ? { code: 550, message: "5.1.1 No such user" } : null;
  try {
    await t.step("5% bounces over 100 sends: WARNING, still sending", async () => {
      const tenant = await stack.tenant();
      await sendBatchAndWait(stack, tenant.key, tenant.templateId, "ok", 95);
      await sendBatchAndWait(stack, tenant.key, tenant.templateId, "bad", 5);
      const a = await waitFor(async () => {
        const x = await accountState(stack, tenant.key);
        return x.reputation.bounces === 5 ? x : null;
      });
      assertEquals(a.reputation.sends, 100);
      assertEquals(a.reputation.bounceRate, 0.05);
      assertEquals(a.reputation.status, "WARNING");
      assertEquals(a.sendingEnabled, true);
    });

    await t.step("over 10% bounces (real SMTP 550s): paused by reputation; new sends are 403", async () => {
      const tenant = await stack.tenant({ domain: "bouncy.test" });
      await sendBatchAndWait(stack, tenant.key, tenant.templateId, "fine", 90);
      // Scheduled while the account still sends: these must be held, not lost, once it pauses.
      // Due well after the check that follows the first bounce (~2 s), so they come due paused.
      const later = new Date(Date.now() + 4500).toISOString();
      const held = await stack.api("POST", "/api/v1/sends/batch", {
        key: tenant.key,
        body: {
          templateId: tenant.templateId,
          scheduledAt: later,
          recipients: [{ to: "later-1@example.test" }, { to: "later-2@example.test" }],
        },
      });
      assertEquals(held.status, 202);
      // 12 of 102 sends bounce: 11.8%, over the 10% line.
      await sendBatchAndWait(stack, tenant.key, tenant.templateId, "bad", 12);
      const a = await untilPaused(stack, tenant.key);
      assertEquals(a.pausedBy, "reputation");
      assertEquals(a.reputation.status, "PAUSED");
      assert(a.reputation.bounceRate >= 0.1);
      const refused = await stack.api("POST", "/api/v1/sends", {
        key: tenant.key,
        body: { templateId: tenant.templateId, to: "new@example.test" },
      });
      assertEquals(refused.status, 403);
      assertEquals(refused.body.code, "sending_paused");

      // The scheduled sends come due while paused: held as queued, no mail.
      await new Promise((r) => setTimeout(r, Math.max(0, Date.parse(later) - Date.now()) + 1000));
      const ids = held.body.sends.map((s: { id: string }) => s.id);
      for (const id of ids) {
        const s = await stack.api("GET", `/api/v1/sends/${id}`, { key: tenant.key });
        assertEquals(s.body.status, "queued");
      }
      assertEquals(stack.sink.messages.filter((m) => m.to[0].startsWith("later-")).length, 0);

      // Ops resume: the held sends go out at once (not after the 30 s recheck).
      const resumed = await stack.gql(
        `mutation($id: ID!) { setAccountSending(accountId: $id, enabled: true) { sendingEnabled } }`,
        { id: tenant.accountId },
        ADMIN_TOKEN,
      );
      assertEquals(resumed.body.data.setAccountSending.sendingEnabled, true);
      await waitFor(
        () => stack.sink.messages.filter((m) => m.to[0].startsWith("later-")).length === 2,
        5000,
        "held sends",
      );
      const after = await accountState(stack, tenant.key);
      // A resume restarts the window: only sends accepted from now on count.
      assertEquals(after.reputation.status, "OK");
      assertEquals(after.reputation.sends, 0);
      assertEquals(after.reputation.bounces, 0);
    });

    await t.step("a complaint report (signed relay webhook) at 1 in 100: paused", async () => {
      const tenant = await stack.tenant({ domain: "spammy.test" });
      const ids = await sendBatchAndWait(stack, tenant.key, tenant.templateId, "reader", 100);
      assertEquals((await accountState(stack, tenant.key)).sendingEnabled, true);
      const r = await postSigned(stack, "/api/v1/events/inbound", { events: [{ type: "complained", sendId: ids[7] }] });
      assertEquals(r.status, 202, JSON.stringify(r.body));
      const a = await untilPaused(stack, tenant.key);
      assertEquals(a.reputation.complaints, 1);
      assertEquals(a.reputation.complaintRate, 0.01);
      assertEquals(a.pausedBy, "reputation");
    });

    await t.step("fewer than 100 sends are never judged", async () => {
      const tenant = await stack.tenant({ domain: "tiny.test" });
      await sendBatchAndWait(stack, tenant.key, tenant.templateId, "bad", 20);
      await new Promise((r) => setTimeout(r, 2500));
      const a = await accountState(stack, tenant.key);
      assertEquals(a.reputation.bounces, 20);
      assertEquals(a.reputation.status, "OK");
      assertEquals(a.sendingEnabled, true);
    });
  } finally {
    await stack.stop();
  }
});

/** The counts as the check made them before the rollup (migration 0021): a scan of the window's sends. */
async function scannedCounts(stack: Stack, accountId: string) {
  const { rows: [r] } = await stack.pg.query(
    `with a as (
       select greatest(now() - interval '7 days', coalesce(reputation_since, '-infinity')) as since
       from accounts where id = $1),
     live as (
       select s.id, s.status from sends s, a
       where s.account_id = $1 and s.created_at >= a.since and not s.sandbox
         and s.status in ('sent', 'delivered', 'bounced'))
     select (select count(*)::int from live) as sends,
       (select count(*)::int from live where status = 'bounced') as bounces,
       (select count(distinct e.send_id)::int from email_events e join live l on l.id = e.send_id
         where e.type = 'complained') as complaints`,
    [accountId],
  );
  return r;
}

Deno.test("reputation: the hourly rollup counts what a scan of the window's sends counts", opts, async (t) => {
  const stack = await startStack();
  try {
    const tenant = await stack.tenant();
    const [first] = await sendBatchAndWait(stack, tenant.key, tenant.templateId, "seed", 1);
    // 500 sends, one every 23 minutes back over 8 days (the window is 7): most inserted as
    // `sending` and then moved on, some inserted delivered, one in seven sandbox.
    await stack.pg.query(
      `insert into sends (id, contact_id, to_email, personalizations, status, message_id, account_id, template_id,
         subject, from_email, tags, track_opens, track_clicks, sandbox, created_at, updated_at)
       select gen_random_uuid(), s.contact_id, s.to_email, '{}', case when i % 5 = 0 then 'delivered' else 'sending' end,
         '<r' || i || '@rollup.test>', s.account_id, s.template_id, s.subject, s.from_email, jsonb_build_object('r', i::text),
         true, true, i % 7 = 0, now() - i * interval '23 minutes', now()
       from sends s, generate_series(1, 500) as i where s.id = $1`,
      [first],
    );
    const moved = (status: string, mod: number, rest: number, from = "sending") =>
      stack.pg.query(
        `update sends set status = $1 where account_id = $2 and status = $5
           and (tags->>'r')::int % $3 = $4`,
        [status, tenant.accountId, mod, rest, from],
      );
    await moved("bounced", 6, 1);
    await moved("failed", 6, 2);
    await moved("sent", 6, 3);
    await moved("delivered", 6, 4);
    await moved("bounced", 10, 5, "delivered"); // a late bounce after delivery
    // Complaints: two about one send (counted once), one about a sandbox send (not counted).
    await stack.pg.query(
      `insert into email_events (send_id, account_id, type, data)
       select id, account_id, 'complained', '{}' from sends
       where account_id = $1 and (tags->>'r')::int in (4, 4, 20, 14, 40, 600)
         and status in ('sent', 'delivered', 'bounced')`,
      [tenant.accountId],
    );
    await stack.pg.query(
      `insert into email_events (send_id, account_id, type, data)
       select id, account_id, 'complained', '{}' from sends where account_id = $1 and (tags->>'r')::int = 4`,
      [tenant.accountId],
    );
    const counts = async () => (await accountState(stack, tenant.key)).reputation;
    const same = async (what: string) => {
      const want = await scannedCounts(stack, tenant.accountId);
      assert(want.sends > 50 && want.bounces > 10 && want.complaints >= 2, JSON.stringify(want));
      const got = await counts();
      assertEquals([got.sends, got.bounces, got.complaints], [want.sends, want.bounces, want.complaints], what);
    };

    await t.step("with the deltas not yet folded, and once they are", async () => {
      await same("deltas");
      await waitFor(async () => (await stack.count("select count(*) from reputation_delta")) === 0, 10_000, "a fold");
      await same("folded");
      // The rollup itself holds every counted send of the account, inside the window or not.
      const { rows: [held] } = await stack.pg.query(
        `select (select coalesce(sum(sends), 0)::int from reputation_hours where account_id = $1) as rolled,
           (select count(*)::int from sends where account_id = $1 and not sandbox
              and status in ('sent', 'delivered', 'bounced')) as counted`,
        [tenant.accountId],
      );
      assert(held.counted > 200, JSON.stringify(held));
      assertEquals(held.rolled, held.counted);
    });

    await t.step("from ops' resume in the middle of an hour", async () => {
      await stack.pg.query(
        `update accounts set reputation_since = now() - interval '3 days 17 minutes' where id = $1`,
        [
          tenant.accountId,
        ],
      );
      await same("since a resume");
    });

    await t.step("sends moved back in time (as tests move rows) take their counts along", async () => {
      await stack.pg.query(`update accounts set reputation_since = null where id = $1`, [tenant.accountId]);
      await stack.pg.query(
        `update sends set created_at = created_at - interval '2 days 7 minutes'
         where account_id = $1 and (tags->>'r')::int % 3 = 1`,
        [tenant.accountId],
      );
      await same("moved");
    });
  } finally {
    await stack.stop();
  }
});
