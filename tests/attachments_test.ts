/**
 * Attachments (API.md "Message features"): files reach the relay as multipart/mixed (inline
 * `contentId` ones beside the HTML as multipart/related), byte for byte (checksums over what
 * mailparser decodes), with RFC 2231 names, base64 folded at 76, and the DKIM signature still
 * verifying; a batch's file is stored once; retention removes files no send refers to; every
 * violation is a 422 naming the field and creates nothing.
 */
import { Buffer } from "node:buffer";
import { dkimVerify } from "mailauth/lib/dkim/verify.js";
import { assert, assertEquals, assertMatch } from "./assert.ts";
import {
  assertProblem,
  createsNothing,
  dnsOf,
  opts,
  randomBytes,
  type ReceivedMail,
  sha256,
  type Stack,
  startStack,
  txtResolver,
  waitForStatus,
} from "./helpers.ts";
import { runRetention } from "../src/retention/service.ts";

const b64 = (b: Uint8Array) => Buffer.from(b).toString("base64");

const mailFor = (stack: Stack, messageId: string): ReceivedMail =>
  stack.sink.messages.find((m) => m.messageId === messageId)!;

Deno.test(
  "attachments: files and inline images arrive intact and signed, stored once, refused when bad",
  opts,
  async (t) => {
    const stack = await startStack();
    try {
      const a = await stack.tenant({
        template: { html: '<p>Order {{ order_id }}</p><img src="cid:logo@shop">', text: "Order {{ order_id }}" },
      });
      const records = await dnsOf(stack, a.key);
      const pdf = randomBytes(300_000);
      const png = randomBytes(2_000);

      await t.step("a send with a PDF and an inline image: both intact, DKIM verifies", async () => {
        const r = await stack.api("POST", "/api/v1/sends", {
          key: a.key,
          body: {
            templateId: a.templateId,
            to: "files@example.test",
            personalizations: { order_id: "F-1" },
            attachments: [
              { filename: "Rechnung März 2026.pdf", content: b64(pdf) },
              { filename: "logo.png", content: b64(png), contentId: "logo@shop" },
            ],
          },
        });
        assertEquals(r.status, 202, JSON.stringify(r.body));
        assertEquals(r.body.attachments, [
          { filename: "Rechnung März 2026.pdf", contentType: "application/pdf", contentId: null, size: 300_000 },
          { filename: "logo.png", contentType: "image/png", contentId: "logo@shop", size: 2_000 },
        ]);
        await waitForStatus(stack, a.key, r.body.id, ["delivered"]);
        const mail = mailFor(stack, r.body.messageId);
        assertEquals(mail.attachments.length, 2);
        const [file, logo] = [
          mail.attachments.find((x) => x.contentType === "application/pdf")!,
          mail.attachments.find((x) => x.contentType === "image/png")!,
        ];
        assertEquals(file.filename, "Rechnung März 2026.pdf", "the RFC 2231 name decodes");
        assertEquals(file.contentDisposition, "attachment");
        assertEquals(await sha256(file.content), await sha256(pdf));
        assertEquals(logo.contentId, "<logo@shop>");
        assertEquals(logo.related, true, "inline, beside the HTML");
        assertEquals(await sha256(logo.content), await sha256(png));
        assertMatch(mail.raw, /src=3D"cid:logo@shop"/, "the HTML refers to it (mailparser inlines it as a data: URL)");
        assertMatch(mail.text, /Order F-1/);
        assertMatch(mail.raw, /^Content-Type: multipart\/mixed;/m);
        assertMatch(mail.raw, /^Content-Type: multipart\/related;/m);
        const body = mail.raw.slice(mail.raw.indexOf("\r\n\r\n"));
        assert(body.split("\r\n").every((line) => line.length <= 76), "every body line within 76 columns");
        const dkim = await dkimVerify(mail.raw, { resolver: txtResolver(records) });
        assertEquals(dkim.results[0].status.result, "pass", JSON.stringify(dkim.results[0].status));
        const tampered = mail.raw.replace(
          /^([A-Za-z0-9+/]{76})$/m,
          (l) => l.slice(0, 75) + (l[75] === "A" ? "B" : "A"),
        );
        assert(tampered !== mail.raw);
        const broken = (await dkimVerify(tampered, { resolver: txtResolver(records) })).results[0].status;
        assert(broken.result !== "pass", "a changed byte of the file breaks the body hash");

        const g = await stack.gql(
          `query($id: ID!) { send(id: $id) { attachments { filename contentType contentId size } } }`,
          {
            id: r.body.id,
          },
          a.key,
        );
        assertEquals(g.body.data.send.attachments[1], {
          filename: "logo.png",
          contentType: "image/png",
          contentId: "logo@shop",
          size: 2_000,
        });
      });

      await t.step("a batch's 1 MB file is stored once and reaches every recipient", async () => {
        const doc = randomBytes(1024 * 1024);
        const hash = await sha256(doc);
        const r = await stack.api("POST", "/api/v1/sends/batch", {
          key: a.key,
          body: {
            templateId: a.templateId,
            attachments: [{ filename: "terms.pdf", content: b64(doc), contentType: "application/pdf" }],
            recipients: [0, 1, 2].map((i) => ({
              to: `batch${i}@example.test`,
              personalizations: { order_id: `B-${i}` },
            })),
          },
        });
        assertEquals(r.status, 202, JSON.stringify(r.body));
        const blobs = await stack.pg.query(
          "select size from attachment_blobs where account_id = $1 and sha256 = decode($2, 'hex')",
          [a.accountId, hash],
        );
        assertEquals(blobs.rows.map((x) => x.size), [1024 * 1024], "one blob of 1 MB");
        assertEquals(
          await stack.count("select count(*) from send_attachments where sha256 = decode($1, 'hex')", [hash]),
          3,
        );
        for (const s of r.body.sends) {
          const send = await waitForStatus(stack, a.key, s.id, ["delivered"]);
          const mail = mailFor(stack, send.messageId);
          assertEquals(mail.attachments.length, 1);
          assertEquals(await sha256(mail.attachments[0].content), hash);
          assertEquals(mail.attachments[0].filename, "terms.pdf");
        }
        // The same file in a later send is the same blob.
        const again = await stack.api("POST", "/api/v1/sends", {
          key: a.key,
          body: {
            templateId: a.templateId,
            to: "again@example.test",
            attachments: [{ filename: "other-name.pdf", content: b64(doc) }],
          },
        });
        assertEquals(again.status, 202);
        assertEquals(
          await stack.count("select count(*) from attachment_blobs where sha256 = decode($1, 'hex')", [hash]),
          1,
        );
      });

      await t.step("over GraphQL: createSend with a file", async () => {
        const g = await stack.gql(
          `mutation($i: CreateSendInput!) { createSend(input: $i) { id messageId attachments { filename size } } }`,
          {
            i: {
              templateId: a.templateId,
              to: "gql-files@example.test",
              attachments: [{ filename: "notes.txt", content: b64(new TextEncoder().encode("hello\r\n")) }],
            },
          },
          a.key,
        );
        assertEquals(g.body.errors, undefined, JSON.stringify(g.body.errors));
        assertEquals(g.body.data.createSend.attachments, [{ filename: "notes.txt", size: 7 }]);
        await waitForStatus(stack, a.key, g.body.data.createSend.id, ["delivered"]);
        const mail = mailFor(stack, g.body.data.createSend.messageId);
        assertEquals(new TextDecoder().decode(mail.attachments[0].content), "hello\r\n");
        assertEquals(mail.attachments[0].contentType, "text/plain");
      });

      await t.step("422 naming the field, and nothing created", async () => {
        const send = (attachments: unknown) =>
          stack.api("POST", "/api/v1/sends", {
            key: a.key,
            body: { templateId: a.templateId, to: "bad@example.test", attachments },
          });
        const ok = { filename: "a.pdf", content: b64(new Uint8Array([1, 2, 3])) };
        const cases: [unknown, string][] = [
          [[ok, { filename: "setup.EXE", content: ok.content }], "attachments.1.filename"],
          [[{ filename: "x.js", content: ok.content }], "attachments.0.filename"],
          [[{ filename: "a.pdf", content: "not base64!" }], "attachments.0.content"],
          [[{ filename: "a.pdf", content: "QUJD=" }], "attachments.0.content"],
          [[{ filename: "../../etc/passwd", content: ok.content }], "attachments.0.filename"],
          [[{ filename: "a\r\nBcc: x@y.z", content: ok.content }], "attachments.0.filename"],
          [[{ ...ok, contentType: "text/plain\r\nX: y" }], "attachments.0.contentType"],
          [[{ ...ok, contentId: "<a b>" }], "attachments.0.contentId"],
          [[{ ...ok, contentId: "x" }, { ...ok, contentId: "x" }], "attachments.1.contentId"],
          [[{ ...ok, name: "typo" }], "attachments.0.name"],
          [Array.from({ length: 21 }, () => ok), "attachments"],
        ];
        for (const [attachments, path] of cases) {
          const r = await createsNothing(stack, () => send(attachments));
          assertProblem(r, 422, "validation_failed");
          assert(
            r.body.errors.some((e: { path: string }) => e.path === path),
            `${path} in ${JSON.stringify(r.body.errors)}`,
          );
        }
        // Over 25 MB decoded, in two files of 12.5 MB and a bit.
        const half = b64(new Uint8Array(12.5 * 1024 * 1024 + 3));
        const big = await createsNothing(
          stack,
          () => send([{ filename: "a.bin", content: half }, { filename: "b.bin", content: half }]),
        );
        assertProblem(big, 422, "validation_failed");
        assertEquals(big.body.errors[0].path, "attachments");
        // A body past the limit is a 413 before anything is parsed.
        const huge = await stack.api("POST", "/api/v1/sends", {
          key: a.key,
          raw: `{"x":"${"A".repeat(41 * 1024 * 1024)}"}`,
        });
        assertProblem(huge, 413, "payload_too_large");
        // Segment sends carry no files.
        const seg = await stack.api("POST", "/api/v1/sends", {
          key: a.key,
          body: { templateId: a.templateId, segmentId: crypto.randomUUID(), attachments: [ok] },
        });
        assertProblem(seg, 422, "validation_failed");
      });

      await t.step("retention removes a file once no send refers to it", async () => {
        const lone = randomBytes(10_000);
        const hash = await sha256(lone);
        const r = await stack.api("POST", "/api/v1/sends", {
          key: a.key,
          body: {
            templateId: a.templateId,
            to: "old@example.test",
            attachments: [{ filename: "old.pdf", content: b64(lone) }],
          },
        });
        await waitForStatus(stack, a.key, r.body.id, ["delivered"]);
        const blobCount = () =>
          stack.count("select count(*) from attachment_blobs where sha256 = decode($1, 'hex')", [hash]);
        // Still referred to: kept, even when long unused.
        await stack.pg.query(
          "update attachment_blobs set used_at = now() - interval '2 hours' where sha256 = decode($1, 'hex')",
          [hash],
        );
        await runRetention(stack.service.deps);
        assertEquals(await blobCount(), 1);
        // Its send past the window: the send goes, then the file.
        await stack.pg.query(
          "update sends set created_at = now() - interval '60 days', updated_at = now() - interval '60 days' where id = $1",
          [
            r.body.id,
          ],
        );
        const report = await runRetention(stack.service.deps);
        assertEquals(await stack.count("select count(*) from sends where id = $1", [r.body.id]), 0);
        assertEquals(await blobCount(), 0);
        assert(report.attachments >= 1, JSON.stringify(report));
      });
    } finally {
      await stack.stop();
    }
  },
);
