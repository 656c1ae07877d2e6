/**
 * cc and bcc (API.md "Message features"): every address gets the one message (envelope
 * recipients), `Cc:` is written and `Bcc:` never is; an address the account has suppressed
 * is left out with a `suppressed` event naming it; a copy the relay refuses is a `bounced`
 * event naming it (and is suppressed after); a batch recipient's own lists replace the batch's.
 */
import { assert, assertEquals, assertMatch } from "./assert.ts";
import { assertProblem, createsNothing, opts, type Stack, startStack, waitForStatus } from "./helpers.ts";

type Event = { type: string; data: Record<string, unknown> };

async function eventsOf(stack: Stack, key: string, id: string): Promise<Event[]> {
  const r = await stack.api("GET", `/api/v1/sends/${id}`, { key });
  return r.body.events;
}

Deno.test(
  "cc and bcc: one message to every address, Cc written, Bcc never, suppression per address",
  opts,
  async (t) => {
    const stack = await startStack();
    try {
      const a = await stack.tenant();
      const send = (body: Record<string, unknown>) =>
        stack.api("POST", "/api/v1/sends", { key: a.key, body: { templateId: a.templateId, ...body } });
      const mailOf = (messageId: string) => stack.sink.messages.find((m) => m.messageId === messageId)!;

      await t.step("every address gets the message; Cc is written, Bcc is not", async () => {
        const r = await send({
          to: "main@example.test",
          cc: ["Copy1@example.test", "copy2@example.test"],
          bcc: ["hidden@example.test"],
          personalizations: { order_id: "C-1" },
        });
        assertEquals(r.status, 202, JSON.stringify(r.body));
        assertEquals([r.body.cc, r.body.bcc], [["Copy1@example.test", "copy2@example.test"], ["hidden@example.test"]]);
        await waitForStatus(stack, a.key, r.body.id, ["delivered"]);
        const mail = mailOf(r.body.messageId);
        assertEquals(
          mail.to.map((x) => x.toLowerCase()).sort(),
          ["copy1@example.test", "copy2@example.test", "hidden@example.test", "main@example.test"],
        );
        assertMatch(mail.raw, /^Cc: Copy1@example.test, copy2@example.test\r$/m);
        assert(!/^bcc:/im.test(mail.raw), "no Bcc header");
        assert(!mail.raw.includes("hidden@example.test"), "the bcc address is nowhere in the message");
        const sent = (await eventsOf(stack, a.key, r.body.id)).find((e) => e.type === "sent")!;
        assertEquals((sent.data.recipients as string[]).length, 4);
        const g = await stack.gql(`query($id: ID!) { send(id: $id) { cc bcc } }`, { id: r.body.id }, a.key);
        assertEquals(g.body.data.send, {
          cc: ["Copy1@example.test", "copy2@example.test"],
          bcc: ["hidden@example.test"],
        });
      });

      await t.step("a suppressed copy is left out, with a suppressed event naming it", async () => {
        await stack.pg.query(
          `insert into contacts (account_id, email, status, updated_at) values ($1, 'gone@example.test', 'unsubscribed', now())`,
          [a.accountId],
        );
        const r = await send({ to: "main2@example.test", cc: ["gone@example.test", "stay@example.test"] });
        await waitForStatus(stack, a.key, r.body.id, ["delivered"]);
        const mail = mailOf(r.body.messageId);
        assertEquals(mail.to.sort(), ["main2@example.test", "stay@example.test"]);
        assertMatch(mail.raw, /^Cc: stay@example.test\r$/m);
        const events = await eventsOf(stack, a.key, r.body.id);
        const suppressed = events.filter((e) => e.type === "suppressed");
        assertEquals(suppressed.map((e) => e.data), [{ address: "gone@example.test", reason: "unsubscribed" }]);
      });

      await t.step("a copy the relay refuses is a bounced event of its address, and suppressed after", async () => {
        stack.sink.reply = (rcpt) => rcpt === "refused@example.test" ? { code: 550, message: "no such user" } : null;
        try {
          const r = await send({ to: "main3@example.test", bcc: ["refused@example.test"] });
          const done = await waitForStatus(stack, a.key, r.body.id, ["delivered"]);
          assertEquals(done.status, "delivered", "the recipient got it");
          const bounced = (await eventsOf(stack, a.key, r.body.id)).filter((e) => e.type === "bounced");
          assertEquals(bounced.length, 1);
          assertEquals([bounced[0].data.address, bounced[0].data.smtpCode, bounced[0].data.bounceType], [
            "refused@example.test",
            550,
            "hard",
          ]);
          const again = await send({ to: "main4@example.test", bcc: ["refused@example.test"] });
          await waitForStatus(stack, a.key, again.body.id, ["delivered"]);
          assertEquals(mailOf(again.body.messageId).to, ["main4@example.test"]);
          const ev = (await eventsOf(stack, a.key, again.body.id)).find((e) => e.type === "suppressed");
          assertEquals(ev?.data, { address: "refused@example.test", reason: "bounced" });

          // The recipient refused while a copy is taken: the send bounces, the copy got it.
          const own = await send({ to: "refused@example.test", cc: ["ok-copy@example.test"] });
          // The recipient is now suppressed at acceptance (its contact bounced): no mail at all.
          assertEquals(own.body.status, "suppressed");
          stack.sink.reply = (rcpt) => rcpt === "nobody@example.test" ? { code: 550, message: "no such user" } : null;
          const lone = await send({ to: "nobody@example.test", cc: ["ok-copy@example.test"] });
          const end = await waitForStatus(stack, a.key, lone.body.id, ["bounced", "failed"]);
          assertEquals([end.status, end.error.code], ["bounced", "smtp_550"]);
          assertEquals(mailOf(lone.body.messageId).to, ["ok-copy@example.test"]);
        } finally {
          stack.sink.reply = () => null;
        }
      });

      await t.step("a batch: shared cc, a recipient's own bcc instead of the batch's", async () => {
        const r = await stack.api("POST", "/api/v1/sends/batch", {
          key: a.key,
          body: {
            templateId: a.templateId,
            cc: ["team@example.test"],
            bcc: ["archive@example.test"],
            recipients: [{ to: "r0@example.test" }, { to: "r1@example.test", bcc: ["audit@example.test"] }],
          },
        });
        assertEquals(r.status, 202, JSON.stringify(r.body));
        const [s0, s1] = await Promise.all(
          r.body.sends.map((s: { id: string }) => waitForStatus(stack, a.key, s.id, ["delivered"])),
        );
        assertEquals(mailOf(s0.messageId).to.sort(), ["archive@example.test", "r0@example.test", "team@example.test"]);
        assertEquals(mailOf(s1.messageId).to.sort(), ["audit@example.test", "r1@example.test", "team@example.test"]);
      });

      await t.step("over GraphQL, and 422s naming the entry", async () => {
        const g = await stack.gql(
          `mutation($i: CreateSendInput!) { createSend(input: $i) { id cc bcc } }`,
          { i: { templateId: a.templateId, to: "gql@example.test", cc: ["gql-cc@example.test"] } },
          a.key,
        );
        assertEquals(g.body.data?.createSend?.cc, ["gql-cc@example.test"], JSON.stringify(g.body.errors));
        const cases: [Record<string, unknown>, string][] = [
          [{ cc: ["ok@example.test", "not an address"] }, "cc.1"],
          [{ bcc: ["x@example.test", "X@example.test"] }, "bcc.1"],
          [{ cc: Array.from({ length: 51 }, (_, i) => `c${i}@example.test`) }, "cc"],
          [{ cc: ["a@example.test\r\nBcc: evil@example.test"] }, "cc.0"],
        ];
        for (const [extra, path] of cases) {
          const r = await createsNothing(stack, () => send({ to: "bad@example.test", ...extra }));
          assertProblem(r, 422, "validation_failed");
          assert(
            r.body.errors.some((e: { path: string }) => e.path === path),
            `${path} in ${JSON.stringify(r.body.errors)}`,
          );
        }
      });
    } finally {
      await stack.stop();
    }
  },
);
