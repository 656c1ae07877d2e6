/**
 * acceptSends as the segment expansion sees it: a page that does not fit the month's quota
 * rolls back and fails its batch, with nothing sent and no quota used.
 */
import { assertEquals } from "./assert.ts";
import { gql, mailsTo, opts, settle, startStack, used, waitFor } from "./helpers.ts";

const CREATE_CONTACT = `mutation($i: CreateContactInput!) { createContact(input: $i) { id } }`;
const CREATE_SEGMENT = `mutation($i: CreateSegmentInput!) { createSegment(input: $i) { id } }`;

Deno.test("a segment page over the monthly limit fails its batch and creates no send", opts, async (t) => {
  const stack = await startStack();
  try {
    const tn = await stack.tenant({ domain: "over.test", monthlyLimit: 2 });
    for (const email of ["over-1@example.test", "over-2@example.test", "over-3@example.test"]) {
      await gql(stack, tn.key, CREATE_CONTACT, { i: { email, fields: { tier: "gold" } } });
    }
    const segmentId = (await gql(stack, tn.key, CREATE_SEGMENT, {
      i: { name: "gold", rules: [{ field: "tier", op: "EQ", value: "gold" }] },
    })).createSegment.id;
    const r = await stack.api("POST", "/api/v1/sends", {
      key: tn.key,
      body: { templateId: tn.templateId, segmentId, personalizations: { order_id: "OVER" } },
    });
    assertEquals(r.status, 202, JSON.stringify(r.body));

    await t.step("the batch ends failed with quota_exceeded; no send, no quota, no mail", async () => {
      const batch = await waitFor(
        async () => {
          const b = (await stack.api("GET", `/api/v1/batches/${r.body.batchId}`, { key: tn.key })).body;
          return b.status === "expanding" ? null : b;
        },
        15_000,
        "the expansion to end",
      );
      assertEquals({ status: batch.status, code: batch.error?.code, count: batch.count }, {
        status: "failed",
        code: "quota_exceeded",
        count: 0,
      });
      const sends = await stack.api("GET", `/api/v1/sends?batchId=${r.body.batchId}`, { key: tn.key });
      assertEquals(sends.body.data, []);
      assertEquals(await used(stack, tn.key), 0);
      await settle(stack);
      assertEquals(mailsTo(stack, "over-1@example.test").length, 0);
    });
  } finally {
    await stack.stop();
  }
});
