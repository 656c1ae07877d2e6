/**
 * Custom headers (API.md "Message features"): a send's `headers` reach the relay after ours,
 * DKIM-signed (named in `h=`, verified with mailauth), a batch recipient's over the batch's;
 * reserved names, line breaks, long values and more than 50 are a 422 naming the header.
 */
import libmime from "libmime";
import { dkimVerify } from "mailauth/lib/dkim/verify.js";
import { assert, assertEquals, assertMatch } from "./assert.ts";
import { assertProblem, createsNothing, opts, startStack, txtResolver, waitForStatus } from "./helpers.ts";

Deno.test("headers: a send's own headers go out signed; reserved or malformed ones are refused", opts, async (t) => {
  const stack = await startStack();
  try {
    const a = await stack.tenant();
    const { body: dom } = await stack.gql(`{ domains { name dnsRecords { type name value } } }`, {}, a.key);
    const records = new Map<string, string[]>();
    for (const d of dom.data.domains) {
      for (const r of d.dnsRecords) if (r.type === "TXT") records.set(r.name.toLowerCase(), [r.value]);
    }
    const send = (to: string, headers: unknown) =>
      stack.api("POST", "/api/v1/sends", {
        key: a.key,
        body: { templateId: a.templateId, to, headers, personalizations: { order_id: "H-1" } },
      });

    await t.step("delivered with the headers, in h=, and the signature verifies", async () => {
      const headers = {
        "X-Ticket-Id": "T-42",
        "X-Campaign": "spring sale",
        "X-Greeting": "Grüße aus Köln",
        // Also one of the names we sign anyway: it is named in h= once.
        Sender: "ops@shop.test",
      };
      const r = await send("h@example.test", headers);
      assertEquals(r.status, 202, JSON.stringify(r.body));
      assertEquals(r.body.headers, headers);
      await waitForStatus(stack, a.key, r.body.id, ["delivered"]);
      const mail = stack.sink.messages.find((m) => m.messageId === r.body.messageId)!;
      assertEquals(mail.headers.get("x-ticket-id"), "T-42");
      assertEquals(mail.headers.get("x-campaign"), "spring sale");
      // Non-ASCII goes out as RFC 2047 encoded words; mailparser leaves X- headers as they came.
      assertEquals(libmime.decodeWords(String(mail.headers.get("x-greeting"))), "Grüße aus Köln");
      assertEquals(mail.headers.get("x-pp-send-id"), r.body.id, "ours are still there");
      const dkim = mail.raw.match(/^DKIM-Signature:[^\r\n]*(?:\r\n[ \t][^\r\n]*)*/mi)?.[0] ?? "";
      const h = dkim.replace(/\s+/g, "").match(/h=([^;]*)/)?.[1] ?? "";
      for (const name of ["x-ticket-id", "x-campaign", "x-greeting"]) {
        assertEquals(h.split(":").filter((n) => n === "sender").length, 1, `sender once in ${h}`);
        assert(h.split(":").includes(name), `${name} in ${h}`);
      }
      const result = await dkimVerify(mail.raw, { resolver: txtResolver(records) });
      assertEquals(result.results[0].status.result, "pass", JSON.stringify(result.results[0].status));
      const tampered = mail.raw.replace("X-Ticket-Id: T-42", "X-Ticket-Id: T-43");
      assertEquals((await dkimVerify(tampered, { resolver: txtResolver(records) })).results[0].status.result, "fail");
    });

    await t.step("a batch: shared headers, a recipient's own over them by name in any case", async () => {
      const r = await stack.api("POST", "/api/v1/sends/batch", {
        key: a.key,
        body: {
          templateId: a.templateId,
          headers: { "X-Batch": "b-1", "X-Lane": "shared" },
          recipients: [{ to: "b0@example.test" }, { to: "b1@example.test", headers: { "x-lane": "own" } }],
        },
      });
      assertEquals(r.status, 202, JSON.stringify(r.body));
      for (const s of r.body.sends) await waitForStatus(stack, a.key, s.id, ["delivered"]);
      const [b0, b1] = ["b0@example.test", "b1@example.test"].map((to) =>
        stack.sink.messages.find((m) => m.to.includes(to))!
      );
      assertEquals([b0.headers.get("x-batch"), b0.headers.get("x-lane")], ["b-1", "shared"]);
      assertEquals([b1.headers.get("x-batch"), b1.headers.get("x-lane")], ["b-1", "own"]);
      assertMatch(b1.raw, /^x-lane: own\r$/m);
      assertEquals((b1.raw.match(/^x-lane:/gim) ?? []).length, 1, "one X-Lane only");
    });

    await t.step("422 naming the header: reserved names, line breaks, long values, bad names, too many", async () => {
      const refused = [
        [{ From: "ceo@evil.test" }, "headers.From"],
        [{ "content-type": "text/plain" }, "headers.content-type"],
        [{ "List-Unsubscribe-Post": "x" }, "headers.List-Unsubscribe-Post"],
        [{ "X-PP-Send-Id": "forged" }, "headers.X-PP-Send-Id"],
        [{ "Reply-To": "x@example.test" }, "headers.Reply-To"],
        [{ "X-Inject": "a\r\nBcc: victim@example.test" }, "headers.X-Inject"],
        [{ "X-Long": "x".repeat(999) }, "headers.X-Long"],
        [{ "Bad Name": "x" }, "headers.Bad Name"],
        [{ "X-Twice": "1", "x-twice": "2" }, "headers.x-twice"],
        [Object.fromEntries(Array.from({ length: 51 }, (_, i) => [`X-H${i}`, "v"])), "headers"],
      ] as const;
      for (const [headers, path] of refused) {
        const r = await createsNothing(stack, () => send("bad@example.test", headers));
        assertProblem(r, 422, "validation_failed", path);
      }
      const gql = await createsNothing(stack, () =>
        stack.gql(
          `mutation($i: CreateSendInput!) { createSend(input: $i) { id } }`,
          { i: { templateId: a.templateId, to: "g@example.test", headers: { Subject: "x" } } },
          a.key,
        ));
      assertEquals(gql.body.errors[0].extensions.code, "validation_failed");
      assertEquals(gql.body.errors[0].extensions.errors[0].path, "headers.Subject");
    });
  } finally {
    await stack.stop();
  }
});
