/**
 * Permissive batches (API.md "Message features"): `validation: "permissive"` accepts the valid
 * recipients and answers the others with their index, code and path; quota is reserved only
 * for what was accepted; a batch with no valid recipient is a 422 that creates nothing.
 */
import { assertEquals } from "./assert.ts";
import { assertProblem, createsNothing, opts, startStack, waitForStatus } from "./helpers.ts";

Deno.test("batches: permissive validation accepts the valid recipients and names the rest", opts, async (t) => {
  const stack = await startStack();
  try {
    const a = await stack.tenant({ monthlyLimit: 3 });
    const batch = (recipients: unknown[], validation?: string) =>
      stack.api("POST", "/api/v1/sends/batch", {
        key: a.key,
        body: { templateId: a.templateId, recipients, ...(validation ? { validation } : {}) },
      });
    const used = () => stack.count("select coalesce(sum(used), 0) from account_usage");

    await t.step("2 of 6 accepted; bad address, repeat, unknown contact and unknown field answered", async () => {
      const r = await batch([
        { to: "p0@example.test", personalizations: { order_id: "P0" } },
        { to: "not-an-address" },
        { to: "P0@example.test" },
        { to: crypto.randomUUID() },
        { to: "p4@example.test", perso: {} },
        { to: "p5@example.test" },
      ], "permissive");
      assertEquals(r.status, 202, JSON.stringify(r.body));
      assertEquals(r.body.count, 2);
      assertEquals(r.body.sends.map((s: { to: string }) => s.to), ["p0@example.test", "p5@example.test"]);
      assertEquals(
        r.body.errors.map((e: { index: number; code: string; path: string }) => [e.index, e.code, e.path]),
        [
          [1, "validation_failed", "recipients.1.to"],
          [2, "validation_failed", "recipients.2.to"],
          [3, "contact_not_found", "recipients.3.to"],
          [4, "validation_failed", "recipients.4.perso"],
        ],
      );
      assertEquals(await used(), 2, "quota only for the accepted");
      for (const s of r.body.sends) await waitForStatus(stack, a.key, s.id, ["delivered"]);
      assertEquals(stack.sink.messages.length, 2);
    });

    await t.step("none valid: 422 naming each, nothing created; strict (the default) refuses the batch", async () => {
      const none = await createsNothing(stack, () => batch([{ to: "bad" }, { to: "worse" }], "permissive"));
      assertProblem(none, 422, "validation_failed", ["recipients.0.to", "recipients.1.to"]);
      const strict = await createsNothing(stack, () => batch([{ to: "s0@example.test" }, { to: "bad" }]));
      assertProblem(strict, 422, "validation_failed", "recipients.1.to");
      const unknownMode = await createsNothing(stack, () => batch([{ to: "s0@example.test" }], "lenient"));
      assertProblem(unknownMode, 422, "validation_failed", "validation");
    });

    await t.step("the quota counts only the valid: 2 valid of 3 with 1 unit left is 429", async () => {
      const over = await createsNothing(
        stack,
        () => batch([{ to: "q0@example.test" }, { to: "bad" }, { to: "q2@example.test" }], "permissive"),
      );
      assertProblem(over, 429, "quota_exceeded");
      const fits = await batch([{ to: "q0@example.test" }, { to: "bad" }], "permissive");
      assertEquals([fits.status, fits.body.count, await used()], [202, 1, 3]);
    });

    await t.step("a contact named by uuid and by address is one recipient: the later one is the repeat", async () => {
      const c = await stack.tenant({ domain: "cshop.test" });
      const made = await stack.gql(
        `mutation { createContact(input: { email: "twin@example.test" }) { id } }`,
        {},
        c.key,
      );
      const id = made.body.data.createContact.id;
      for (
        const [recipients, keptTo] of [[[{ to: id }, { to: "TWIN@example.test" }], id], [[{ to: "twin@example.test" }, {
          to: id,
        }], "twin@example.test"]] as const
      ) {
        const r = await stack.api("POST", "/api/v1/sends/batch", {
          key: c.key,
          body: {
            templateId: c.templateId,
            recipients,
            validation: "permissive",
            scheduledAt: new Date(Date.now() + 3600_000).toISOString(),
          },
        });
        assertEquals(r.status, 202, JSON.stringify(r.body));
        assertEquals(r.body.count, 1, JSON.stringify(keptTo));
        assertEquals(r.body.errors.map((e: { index: number; path: string }) => [e.index, e.path]), [[
          1,
          "recipients.1.to",
        ]]);
      }
    });

    await t.step("GraphQL createBatchSend with validation: PERMISSIVE answers errors too", async () => {
      const b = await stack.tenant({ domain: "gshop.test" });
      const r = await stack.gql(
        `mutation($i: CreateBatchSendInput!) { createBatchSend(input: $i) { count errors { index code path } } }`,
        {
          i: {
            templateId: b.templateId,
            validation: "PERMISSIVE",
            recipients: [{ to: "g0@example.test" }, { to: "nope" }],
          },
        },
        b.key,
      );
      assertEquals(r.body.data.createBatchSend, {
        count: 1,
        errors: [{ index: 1, code: "validation_failed", path: "recipients.1.to" }],
      });
    });
  } finally {
    await stack.stop();
  }
});
