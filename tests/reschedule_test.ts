/**
 * Rescheduling (API.md "Message features"): `PATCH /api/v1/sends/:id` and `rescheduleSend`
 * move a scheduled or queued send across the scheduling horizon in both directions (its
 * delivery job created, moved or held back), and refuse what is past `queued`.
 */
import { assertEquals } from "./assert.ts";
import { assertProblem, createsNothing, opts, startStack, waitForStatus } from "./helpers.ts";

const at = (ms: number) => new Date(Date.now() + ms).toISOString();

Deno.test("reschedule: across the horizon both ways, due now, refused past queued", opts, async (t) => {
  const stack = await startStack();
  try {
    const a = await stack.tenant();
    const b = await stack.tenant({ domain: "bshop.test" });
    const send = (to: string, scheduledAt?: string) =>
      stack.api("POST", "/api/v1/sends", {
        key: a.key,
        body: { templateId: a.templateId, to, scheduledAt, personalizations: { order_id: "R-1" } },
      });
    const patch = (id: string, body: unknown, key = a.key) => stack.api("PATCH", `/api/v1/sends/${id}`, { key, body });
    const jobs = (id: string) =>
      stack.count("select count(*) from graphile_worker.jobs where key = $1", [`send:${id}`]);
    const deferred = async (id: string) =>
      (await stack.pg.query("select job_deferred from sends where id = $1", [id])).rows[0].job_deferred;

    await t.step("a day ahead (no job yet) moved to 2 s ahead: it gets its job and goes out then", async () => {
      const s = await send("far@example.test", at(86_400_000));
      assertEquals([s.body.status, await jobs(s.body.id), await deferred(s.body.id)], ["scheduled", 0, true]);
      const when = at(2_000);
      const r = await patch(s.body.id, { scheduledAt: when });
      assertEquals(r.status, 200, JSON.stringify(r.body));
      assertEquals([r.body.status, r.body.scheduledAt], ["scheduled", when]);
      assertEquals([await jobs(s.body.id), await deferred(s.body.id)], [1, false]);
      const done = await waitForStatus(stack, a.key, s.body.id, ["delivered"], 15_000);
      assertEquals(new Date(done.sentAt) >= new Date(when), true, "not before its new time");
    });

    await t.step("3 s ahead moved a day ahead: its job is gone, nothing goes out; then due now", async () => {
      const s = await send("near@example.test", at(3_000));
      assertEquals(await jobs(s.body.id), 1);
      const r = await patch(s.body.id, { scheduledAt: at(86_400_000) });
      assertEquals([r.body.status, await jobs(s.body.id), await deferred(s.body.id)], ["scheduled", 0, true]);
      await new Promise((res) => setTimeout(res, 4_000));
      assertEquals(stack.sink.messages.some((m) => m.to.includes("near@example.test")), false);
      const now = await patch(s.body.id, { scheduledAt: new Date(Date.now() - 60_000).toISOString() });
      assertEquals(now.body.status, "queued");
      await waitForStatus(stack, a.key, s.body.id, ["delivered"], 15_000);
      assertEquals(stack.sink.messages.filter((m) => m.to.includes("near@example.test")).length, 1);
    });

    await t.step("409 not_reschedulable once delivered or cancelled; 404 for another account's", async () => {
      const s = await send("done@example.test");
      await waitForStatus(stack, a.key, s.body.id, ["delivered"], 15_000);
      assertProblem(await patch(s.body.id, { scheduledAt: at(60_000) }), 409, "not_reschedulable");
      const c = await send("cancel@example.test", at(3_600_000));
      await stack.api("POST", `/api/v1/sends/${c.body.id}/cancel`, { key: a.key });
      assertProblem(await patch(c.body.id, { scheduledAt: at(60_000) }), 409, "not_reschedulable");
      const later = await send("other@example.test", at(3_600_000));
      assertProblem(await patch(later.body.id, { scheduledAt: at(60_000) }, b.key), 404, "not_found");
      assertProblem(await patch(crypto.randomUUID(), { scheduledAt: at(60_000) }), 404, "not_found");
    });

    await t.step("422 naming the field: missing, no offset, unknown field; nothing changes", async () => {
      const s = await send("bad@example.test", at(3_600_000));
      for (
        const [body, path] of [
          [{}, "scheduledAt"],
          [{ scheduledAt: "2030-01-01T10:00:00" }, "scheduledAt"],
          [{ scheduledAt: at(60_000), to: "x@example.test" }, "to"],
        ] as const
      ) {
        assertProblem(await createsNothing(stack, () => patch(s.body.id, body)), 422, "validation_failed", path);
      }
      const read = await stack.api("GET", `/api/v1/sends/${s.body.id}`, { key: a.key });
      assertEquals(read.body.scheduledAt, s.body.scheduledAt);
    });

    await t.step("a batch: its pending sends move together, the others stay; GraphQL rescheduleBatch", async () => {
      const recipients = ["b1@example.test", "b2@example.test", "b3@example.test"].map((to) => ({ to }));
      const batch = await stack.api("POST", "/api/v1/sends/batch", {
        key: a.key,
        body: { templateId: a.templateId, recipients, scheduledAt: at(86_400_000) },
      });
      assertEquals(batch.status, 202, JSON.stringify(batch.body));
      const [first, second, third] = batch.body.sends.map((x: { id: string }) => x.id);
      await stack.api("POST", `/api/v1/sends/${third}/cancel`, { key: a.key });
      const q = `mutation($id: ID!, $at: DateTime!) { rescheduleBatch(id: $id, scheduledAt: $at) { id } }`;
      const viaGql = await stack.gql(q, { id: batch.body.batchId, at: at(7_200_000) }, a.key);
      assertEquals(viaGql.body.data.rescheduleBatch.id, batch.body.batchId);
      const now = await stack.api("PATCH", `/api/v1/batches/${batch.body.batchId}`, {
        key: a.key,
        body: { scheduledAt: at(0) },
      });
      assertEquals(now.status, 200, JSON.stringify(now.body));
      assertEquals(now.body.rescheduled, 2);
      for (const id of [first, second]) await waitForStatus(stack, a.key, id, ["delivered"], 15_000);
      const left = await stack.api("GET", `/api/v1/sends/${third}`, { key: a.key });
      assertEquals(left.body.status, "cancelled");
      assertProblem(
        await stack.api("PATCH", `/api/v1/batches/${crypto.randomUUID()}`, {
          key: a.key,
          body: { scheduledAt: at(0) },
        }),
        404,
        "not_found",
      );
    });

    await t.step("GraphQL rescheduleSend answers the same", async () => {
      const s = await send("gql@example.test", at(3_600_000));
      const when = at(7_200_000);
      const q =
        `mutation($id: ID!, $at: DateTime!) { rescheduleSend(id: $id, scheduledAt: $at) { status scheduledAt } }`;
      const r = await stack.gql(q, { id: s.body.id, at: when }, a.key);
      assertEquals(r.body.data.rescheduleSend, { status: "SCHEDULED", scheduledAt: when });
      const gone = await stack.gql(q, { id: crypto.randomUUID(), at: when }, a.key);
      assertEquals(gone.body.errors[0].extensions.code, "not_found");
    });
  } finally {
    await stack.stop();
  }
});
