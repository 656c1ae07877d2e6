/**
 * Stats (API.md "Message features"): counts and rates by day, week or month and by tag, from
 * the rollup the event pipeline keeps (migration 0016), over REST and GraphQL; a send opened
 * twice counts once; empty periods are zeros; bad ranges are a 422.
 */
import { assertEquals } from "./assert.ts";
import { assertProblem, opts, startStack, waitFor, waitForStatus } from "./helpers.ts";

Deno.test("stats: by day, week and month, all sends or one tag, from what the pipeline recorded", opts, async (t) => {
  const stack = await startStack();
  try {
    const a = await stack.tenant();
    stack.sink.reply = (rcpt) => rcpt.startsWith("gone@") ? { code: 550, message: "5.1.1 no such user" } : null;
    const today = new Date().toISOString().slice(0, 10);
    const send = async (to: string, kind: string) => {
      const r = await stack.api("POST", "/api/v1/sends", {
        key: a.key,
        body: { templateId: a.templateId, to, tags: { kind }, trackOpens: true, personalizations: { order_id: "S" } },
      });
      assertEquals(r.status, 202, JSON.stringify(r.body));
      return r.body;
    };
    const opened = await send("ada@example.test", "order");
    await send("bob@example.test", "order");
    const gone = await send("gone@example.test", "order");
    await send("cy@example.test", "shipping");
    await waitForStatus(stack, a.key, gone.id, ["bounced"]);
    await waitFor(
      async () => (await stack.count("select count(*) from sends where status = 'delivered'")) === 3,
      15_000,
      "three delivered",
    );
    // Two opens of one send: one opened send.
    const mail = stack.sink.messages.find((m) => m.messageId === opened.messageId)!;
    const pixel = mail.html.match(/<img\b[^>]*?src="([^"]*\/t\/o\/[^"]+)"/)![1];
    for (let i = 0; i < 2; i++) await (await fetch(pixel.replace(/^https?:\/\/[^/]+/, stack.url))).body?.cancel();
    await waitFor(
      async () => (await stack.count("select count(*) from email_events where type = 'opened'")) === 2,
      10_000,
      "two open events",
    );
    const get = (q: string) => stack.api("GET", `/api/v1/stats?${q}`, { key: a.key });

    await t.step("today, all sends: counts and rates; a send opened twice counts once", async () => {
      const r = await get(`from=${today}&to=${today}`);
      assertEquals(r.status, 200, JSON.stringify(r.body));
      assertEquals(r.body.data, [{
        period: today,
        accepted: 4,
        delivered: 3,
        bounced: 1,
        complained: 0,
        opened: 1,
        clicked: 0,
        failed: 0,
        suppressed: 0,
        unsubscribed: 0,
        deliveryRate: 0.75,
        openRate: 0.3333,
        clickRate: 0,
        bounceRate: 0.25,
        complaintRate: 0,
      }]);
    });

    await t.step("one tag; empty days are zeros; week and month start their periods", async () => {
      const order = await get(`from=${today}&to=${today}&tag=kind:order`);
      assertEquals([order.body.data[0].accepted, order.body.data[0].delivered, order.body.data[0].bounced], [3, 2, 1]);
      const none = await get(`from=${today}&to=${today}&tag=kind:nothing`);
      assertEquals(none.body.data[0].accepted, 0);
      const day = (offset: number) => new Date(Date.now() + offset * 86_400_000).toISOString().slice(0, 10);
      const three = await get(`from=${day(-2)}&to=${today}`);
      assertEquals(three.body.data.map((r: { period: string; accepted: number }) => [r.period, r.accepted]), [
        [day(-2), 0],
        [day(-1), 0],
        [today, 4],
      ]);
      const now = new Date();
      const monday = new Date(
        Date.UTC(now.getUTCFullYear(), now.getUTCMonth(), now.getUTCDate() - (now.getUTCDay() + 6) % 7),
      );
      const week = await get(`from=${today}&to=${today}&interval=week`);
      assertEquals(week.body.data.map((r: { period: string }) => r.period), [monday.toISOString().slice(0, 10)]);
      const month = await get(`from=${today}&to=${today}&interval=month`);
      assertEquals(month.body.data.map((r: { period: string; accepted: number }) => [r.period, r.accepted]), [
        [today.slice(0, 8) + "01", 4],
      ]);
    });

    await t.step("the deltas are folded into the rollup within seconds; the answer does not change", async () => {
      const before = (await get(`from=${today}&to=${today}`)).body;
      await waitFor(
        async () => (await stack.count("select count(*) from send_stats_delta")) === 0,
        10_000,
        "the deltas folded",
      );
      assertEquals(await stack.count("select coalesce(sum(accepted), 0) from send_stats where tag = ''"), 4);
      assertEquals((await get(`from=${today}&to=${today}`)).body, before);
    });

    await t.step("GraphQL stats answers the same rows", async () => {
      const r = await stack.gql(
        `query($f: String!, $t: String!) { stats(from: $f, to: $t, interval: DAY, tag: "kind:order") {
          period accepted delivered bounced opened deliveryRate openRate } }`,
        { f: today, t: today },
        a.key,
      );
      assertEquals(r.body.data.stats, [{
        period: today,
        accepted: 3,
        delivered: 2,
        bounced: 1,
        opened: 1,
        deliveryRate: 0.6667,
        openRate: 0.5,
      }]);
    });

    await t.step("422 naming the field: dates, order, range, tag, interval, unknown parameter", async () => {
      for (
        const [q, path] of [
          ["from=2026-13-01&to=2026-12-01", "from"],
          [`from=${today}&to=2020-01-01`, "to"],
          ["from=2020-01-01&to=2026-01-01", "to"],
          [`from=${today}&to=${today}&tag=order`, "tag"],
          [`from=${today}&to=${today}&interval=year`, "interval"],
          [`from=${today}&to=${today}&form=x`, "form"],
          [`to=${today}`, "from"],
        ]
      ) {
        assertProblem(await get(q), 422, "validation_failed", path);
      }
    });
  } finally {
    await stack.stop();
  }
});
