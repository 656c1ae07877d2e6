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
