/**
 * One idempotency for both transports: the same cases over REST (`Idempotency-Key`) and
 * GraphQL (`input.idempotencyKey`) give the same answers. The fingerprint is the parsed
 * input's canonical JSON, so key order never matters; a replay answers the first response
 * and creates nothing; another input is `409 idempotency_conflict`.
 */
import { assertEquals } from "./assert.ts";
import { createsNothing, type Json, opts, type Stack, startStack } from "./helpers.ts";

/** What a transport answered, reduced to what the cases compare. */
interface Answer {
  code: string | null;
  send: Json;
}

type Call = (input: Record<string, unknown>, key: string) => Promise<Answer>;

function transports(stack: Stack, apiKey: string): Record<string, Call> {
  return {
    REST: async (input, key) => {
      const r = await stack.api("POST", "/api/v1/sends", {
        key: apiKey,
        body: input,
        headers: { "idempotency-key": key },
      });
      return r.status === 202 ? { code: null, send: r.body } : { code: r.body.code, send: null };
    },
    GraphQL: async (input, key) => {
      const r = await stack.gql(
        `mutation($i: CreateSendInput!) {
          createSend(input: $i) { id to status scheduledAt createdAt personalizations tags }
        }`,
        { i: { ...input, idempotencyKey: key } },
        apiKey,
      );
      const code = r.body.errors?.[0]?.extensions?.code ?? null;
      return { code, send: code ? null : r.body.data.createSend };
    },
  };
}

Deno.test("idempotency: the same cases over REST and GraphQL", opts, async (t) => {
  const stack = await startStack();
  try {
    const tenant = await stack.tenant();
    const later = new Date(Date.now() + 3600_000).toISOString();
    for (const [name, call] of Object.entries(transports(stack, tenant.key))) {
      const to = `${name.toLowerCase()}@example.test`;
      const input = {
        templateId: tenant.templateId,
        to,
        scheduledAt: later,
        personalizations: { order_id: "I-1", total: 12, items: [{ sku: "a", qty: 1 }] },
        tags: { kind: "order", shop: "north" },
      };
      // The same values, every object's keys (nested ones too) in another order.
      const reordered = {
        tags: { shop: "north", kind: "order" },
        personalizations: { items: [{ qty: 1, sku: "a" }], total: 12, order_id: "I-1" },
        scheduledAt: later,
        to,
        templateId: tenant.templateId,
      };
      const key = `order-${name}`;
      let first: Answer;

      await t.step(`${name}: the first request creates one send`, async () => {
        first = await call(input, key);
        assertEquals(first.code, null);
        assertEquals(await stack.count("select count(*) from sends where to_email = $1", [to]), 1);
      });

      await t.step(
        `${name}: the same input, keys in another order, answers the first response; nothing created`,
        async () => {
          const again = await createsNothing(stack, () => call(reordered, key));
          assertEquals(again, first);
        },
      );

      await t.step(`${name}: another input under the key is 409 idempotency_conflict; nothing created`, async () => {
        const other = await createsNothing(stack, () => call({ ...input, to: `other-${to}` }, key));
        assertEquals(other, { code: "idempotency_conflict", send: null });
        const nested = await createsNothing(
          stack,
          () => call({ ...input, personalizations: { ...input.personalizations, total: 13 } }, key),
        );
        assertEquals(nested.code, "idempotency_conflict");
      });
    }
  } finally {
    await stack.stop();
  }
});
