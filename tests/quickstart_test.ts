/**
 * The README's quick start: first start on an empty database seeds the dev account, and
 * the product doc's curl body, sent with the seeded key and template, delivers a
 * personalized email to the outbox, readable over REST and GraphQL.
 */
import { assert, assertEquals, assertMatch } from "./assert.ts";
import { loadConfig } from "../src/config.ts";
import { startService } from "../src/server.ts";
import { opts, startStack, waitForStatus } from "./helpers.ts";

Deno.test("quick start: seed on first start, curl body delivers to the outbox", opts, async (t) => {
  const stack = await startStack({ smtp: false, env: { PP_SEED: "true" } });
  try {
    const seed = stack.service.seed!;
    await t.step("the first start seeds a pp_test_ key and a template", () => {
      assert(seed, "seed ran");
      assertMatch(seed.apiKey, /^pp_test_[0-9A-Za-z]{32,}$/);
    });

    let id = "";
    await t.step("the product doc's body answers 202 with a queued send", async () => {
      const r = await stack.api("POST", "/api/v1/sends", {
        key: seed.apiKey,
        body: {
          templateId: seed.templateId,
          to: "customer@example.com",
          subject: "Your order has shipped!",
          personalizations: { order_id: "ORD-12345", tracking_url: "https://track.example.com/abc" },
        },
      });
      assertEquals(r.status, 202, JSON.stringify(r.body));
      assertEquals(r.body.status, "queued");
      assertEquals(r.body.to, "customer@example.com");
      id = r.body.id;
    });

    await t.step("it is delivered to the outbox, personalized", async () => {
      const send = await waitForStatus(stack, seed.apiKey, id, ["delivered"]);
      assertEquals(send.events.map((e: { type: string }) => e.type), ["queued", "sent", "delivered"]);
      const eml = await Deno.readTextFile(`${stack.dataDir}/outbox/${id}.eml`);
      assertMatch(eml, /Subject: Your order has shipped!/);
      assertMatch(eml, /ORD-12345/);
      assertMatch(eml, /https:\/\/track\.example\.com\/abc/);
      assertEquals(stack.sink.messages.length, 0, "a pp_test_ key never reaches SMTP_URL");
    });

    await t.step("GraphQL shows the same send and its events", async () => {
      const r = await stack.gql(`query($id: ID!) { send(id: $id) { status to events { type } } }`, { id }, seed.apiKey);
      assertEquals(r.body.data.send.status, "DELIVERED");
      assertEquals(r.body.data.send.events.map((e: { type: string }) => e.type), ["QUEUED", "SENT", "DELIVERED"]);
    });

    await t.step("a second start on the same database does not seed again", async () => {
      const again = await startService(loadConfig({
        DATABASE_URL: stack.databaseUrl,
        PORT: "0",
        PP_DATA_DIR: stack.dataDir,
        PP_SEED: "true",
        PP_LOG_LEVEL: "warn",
      }));
      try {
        assertEquals(again.seed, null);
        assertEquals(await stack.count("select count(*) from accounts"), 1);
      } finally {
        await again.stop();
      }
    });
  } finally {
    await stack.stop();
  }
});
