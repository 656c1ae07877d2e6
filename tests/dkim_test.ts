/**
 * Our DKIM signer (src/mail/dkim.ts) against a real verifier (npm mailauth), on messages that
 * exercise relaxed canonicalization: folded headers, encoded words, whitespace runs, trailing
 * whitespace and blank lines, repeated headers, an empty body. The RSA signature comes from
 * libcrypto (FFI: sync, nonblocking, or on a signing thread of our own) or node:crypto; all
 * four give the same bytes.
 */
import { dkimVerify } from "mailauth/lib/dkim/verify.js";
import { Buffer } from "node:buffer";
import { dkimOptions, dkimTxtValue, generateDkimKeys, signDkim } from "../src/mail/dkim.ts";
import { nodeCryptoSigner, openSslSigner, type RsaSigner, threadSigner } from "../src/mail/rsa_sign.ts";
import { createLogger } from "../src/log.ts";
import { createMailer } from "../src/mail/transport.ts";
import { assert, assertEquals, assertMatch, assertNotMatch } from "./assert.ts";
import { txtResolver } from "./helpers.ts";

const DOMAIN = "brand.test";
const SELECTOR = "pp202611";

/** How many Worker threads this process has (Deno names each one's thread `worker-N`; /proc/self/task). */
async function workerThreads(): Promise<number> {
  let n = 0;
  for await (const t of Deno.readDir("/proc/self/task")) {
    const name = await Deno.readTextFile(`/proc/self/task/${t.name}/comm`).catch(() => "");
    if (name.startsWith("worker-")) n++;
  }
  return n;
}

/** The DKIM-Signature header block (folded lines included) of a signed message. */
const dkimHeader = (raw: string): string => raw.match(/^DKIM-Signature:[^\r\n]*(?:\r\n[ \t][^\r\n]*)*/mi)?.[0] ?? "";

const crlf = (lines: string[]): Uint8Array => new TextEncoder().encode(lines.join("\r\n"));

/** Messages written by hand, so the bytes that reach the canonicalizer are the ones we chose. */
const MESSAGES: Record<string, Uint8Array> = {
  "folded headers, encoded-word subject, HTML with trailing whitespace and blank lines": crlf([
    "From: =?UTF-8?Q?Br=C3=A5nd_News?= <news@brand.test>",
    "To: reader@example.test",
    "Subject: =?UTF-8?Q?Ihre_Bestellung_=E2=80=93_gr=C3=BC=C3=9Fe_aus_M=C3=BCnchen?=",
    " =?UTF-8?Q?_und_noch_ein_sehr_langer_Betreff?=",
    "Date: Thu, 26 Nov 2026 09:00:00 +0000",
    "Message-ID: <d1@brand.test>",
    "MIME-Version: 1.0",
    "List-Unsubscribe:",
    ` <https://pp.example.test/u/${"x".repeat(90)}>`,
    "List-Unsubscribe-Post: List-Unsubscribe=One-Click",
    "Content-Type: text/html;",
    "\tcharset=utf-8",
    "Content-Transfer-Encoding: 7bit",
    "",
    "<html>   ",
    "<body>\t<p>Hello   \t Ann,</p>  \t",
    "   ",
    "<p>Your order\tD1 shipped.</p>",
    "</body></html>",
    "",
    "  ",
    "",
    "",
  ]),
  "whitespace around header values, a repeated header, a body without a final CRLF": crlf([
    "From: news@brand.test",
    "X-Dup: first",
    "To:   reader@example.test   ",
    "Subject:\tspaced \t  out\t",
    "X-Dup: second",
    "Date: Thu, 26 Nov 2026 09:00:00 +0000",
    "Message-ID: <d2@brand.test>",
    "Content-Type: text/plain; charset=us-ascii",
    "",
    "no final line break  ",
  ]),
  "no body at all": crlf([
    "From: news@brand.test",
    "To: reader@example.test",
    "Subject: empty",
    "Date: Thu, 26 Nov 2026 09:00:00 +0000",
    "",
    "",
  ]),
};

Deno.test("dkim: our signer verifies with mailauth, with every RSA backend", async (t) => {
  const keys = await generateDkimKeys();
  const records = new Map([[`${SELECTOR}._domainkey.${DOMAIN}`, [dkimTxtValue(keys.publicKeyB64)]]]);
  const resolver = txtResolver(records);
  const verify = async (raw: Uint8Array | string) =>
    (await dkimVerify(typeof raw === "string" ? raw : Buffer.from(raw), { resolver })).results[0];
  const options = dkimOptions(DOMAIN, SELECTOR, keys.privateKeyPem);

  const signers: RsaSigner[] = [nodeCryptoSigner()];
  let opensslError = "";
  try {
    signers.push(
      openSslSigner({ nonblocking: false }),
      openSslSigner({ nonblocking: true }),
      threadSigner({ threads: 2, fallback: openSslSigner({ nonblocking: true }), log: createLogger("error") }),
    );
  } catch (err) {
    opensslError = String(err);
  }
  try {
    for (const [name, message] of Object.entries(MESSAGES)) {
      await t.step(`${name}: passes`, async () => {
        const signed = await signDkim(message, options, { signer: signers.at(-1) });
        const result = await verify(signed);
        assertEquals(result.status.result, "pass", JSON.stringify(result.status));
        assertEquals(result.signingDomain, DOMAIN);
        // The original message follows the new header byte for byte.
        assertEquals(signed.subarray(signed.length - message.length), message);
      });
    }

    await t.step("the header: relaxed/relaxed, t=, and h= lists only the headers present", async () => {
      const time = new Date("2026-11-26T09:00:00Z");
      const signed = await signDkim(MESSAGES[Object.keys(MESSAGES)[0]], options, { signer: signers[0], time });
      const header = dkimHeader(new TextDecoder().decode(signed));
      assert(header.split("\r\n").every((line) => line.length <= 78), header);
      const tags = header.replace(/^DKIM-Signature:/i, "").replace(/\s+/g, "");
      assertMatch(tags, /^v=1;a=rsa-sha256;c=relaxed\/relaxed;d=brand\.test;s=pp202611;t=1795683600;h=/);
      const h = tags.match(/;h=([^;]*);/)![1];
      assertEquals(
        h,
        "from:subject:date:message-id:to:mime-version:content-type:content-transfer-encoding:" +
          "list-unsubscribe:list-unsubscribe-post",
      );
      assertNotMatch(h, /sender|reply-to|cc/);
    });

    await t.step("a repeated header: instances are taken from the bottom (RFC 6376 §5.4.2)", async () => {
      const message = MESSAGES[Object.keys(MESSAGES)[1]];
      const once = await signDkim(message, { ...options, headerFieldNames: "from:x-dup" }, { signer: signers[0] });
      const twice = await signDkim(message, { ...options, headerFieldNames: "from:x-dup:x-dup:x-dup" }, {
        signer: signers[0],
      });
      assertEquals((await verify(once)).status.result, "pass");
      assertEquals((await verify(twice)).status.result, "pass");
      assertMatch(dkimHeader(new TextDecoder().decode(twice)).replace(/\s+/g, ""), /;h=from:x-dup:x-dup;/);
      // The bottom instance is signed: changing it breaks the signature, changing the top one
      // (not signed when x-dup is listed once) does not.
      const text = new TextDecoder().decode(once);
      assertEquals((await verify(text.replace("X-Dup: second", "X-Dup: changed"))).status.result, "fail");
      assertEquals((await verify(text.replace("X-Dup: first", "X-Dup: changed"))).status.result, "pass");
    });

    await t.step("a changed body or signed header fails (the test can fail)", async () => {
      const message = MESSAGES[Object.keys(MESSAGES)[0]];
      const signed = new TextDecoder().decode(await signDkim(message, options, { signer: signers[0] }));
      assertEquals((await verify(signed.replace("shipped", "shipper"))).status.result, "neutral");
      assertEquals((await verify(signed.replace("Message-ID: <d1", "Message-ID: <d9"))).status.result, "fail");
      // Whitespace changes relaxed canonicalization ignores still pass.
      assertEquals((await verify(signed.replace("</body></html>", "</body></html>  \t"))).status.result, "pass");
    });

    await t.step({
      name: "openssl (sync, nonblocking, on a thread) and node:crypto sign the same bytes",
      ignore: signers.length === 1,
      fn: async () => {
        const time = new Date();
        for (const message of Object.values(MESSAGES)) {
          const outputs = await Promise.all(signers.map((signer) => signDkim(message, options, { signer, time })));
          for (const out of outputs) assertEquals((await verify(out)).status.result, "pass");
          assertEquals(outputs[1], outputs[0], "openssl sync = node:crypto");
          assertEquals(outputs[2], outputs[0], "openssl nonblocking = node:crypto");
          assertEquals(outputs[3], outputs[0], "openssl on a signing thread = node:crypto");
        }
        // Many at once through the nonblocking path (the thread pool) stay correct.
        const data = new TextEncoder().encode("dkim-signature:v=1; b=");
        const expected = await signers[0].sign(data, keys.privateKeyPem);
        for (const signer of signers.slice(2)) {
          const many = await Promise.all(Array.from({ length: 50 }, () => signer.sign(data, keys.privateKeyPem)));
          for (const sig of many) assertEquals(sig, expected);
        }
      },
    });
    if (opensslError) console.warn(`openssl signer not tested: ${opensslError}`);

    await t.step({
      name: "a signing thread starts with the first signature, stops when idle, and gives way to the fallback",
      ignore: signers.length === 1 || Deno.build.os !== "linux",
      fn: async () => {
        const data = new TextEncoder().encode("dkim-signature:v=1; b=");
        const expected = await signers[0].sign(data, keys.privateKeyPem);
        const log = createLogger("error");
        const threaded = threadSigner({ threads: 1, fallback: nodeCryptoSigner(), log, idleMs: 300 });
        try {
          const before = await workerThreads();
          assertEquals(await threaded.sign(data, keys.privateKeyPem), expected);
          assertEquals(await workerThreads(), before + 1, "a thread of its own signs");
          // Idle for longer than idleMs: the thread is gone; the next signature starts one again.
          await new Promise((r) => setTimeout(r, 1_000));
          assertEquals(await workerThreads(), before);
          assertEquals(await threaded.sign(data, keys.privateKeyPem), expected);
        } finally {
          threaded.close();
        }
        // No libcrypto where the thread looks: the fallback signs, with the same bytes.
        const noLib = threadSigner({
          threads: 1,
          fallback: nodeCryptoSigner(),
          log,
          paths: ["/nonexistent/libcrypto.so.3"],
        });
        try {
          assertEquals(await noLib.sign(data, keys.privateKeyPem), expected);
          assertEquals(await noLib.sign(data, keys.privateKeyPem), expected);
        } finally {
          noLib.close();
        }
      },
    });

    await t.step("keys that are not usable RSA keys are refused by every backend", async () => {
      const { privateKey: ec } = await crypto.subtle.generateKey({ name: "ECDSA", namedCurve: "P-256" }, true, [
        "sign",
        "verify",
      ]);
      const der = new Uint8Array(await crypto.subtle.exportKey("pkcs8", ec));
      const ecPem = `-----BEGIN PRIVATE KEY-----\n${btoa(String.fromCharCode(...der))}\n-----END PRIVATE KEY-----\n`;
      for (const signer of signers) {
        for (const pem of [ecPem, "not a key"]) {
          let refused = false;
          await signer.sign(new Uint8Array(1), pem).catch(() => refused = true);
          assert(refused, `${signer.backend} refused ${pem.slice(0, 20)}`);
        }
      }
    });

    await t.step("the mailer signs what it composes (outbox), and leaves unsigned mail alone", async () => {
      const dir = await Deno.makeTempDir({ prefix: "pp-dkim-" });
      const mailer = createMailer({ outboxDir: dir, poolSize: 1, timeoutMs: 30_000, signer: signers.at(-1) });
      try {
        const base = {
          from: { name: "Brånd News", address: "news@brand.test" },
          to: "reader@example.test",
          subject: "Grüße – your order D1 has shipped, with a subject long enough to be folded twice over",
          html: "<p>Hello   Ann,  </p>\n\n<p>Your order shipped.</p>\t\n\n\n",
          text: "Hello Ann,  \n\nYour order shipped.\n\n\n",
          headers: {
            "List-Unsubscribe": `<https://pp.example.test/u/${"y".repeat(100)}>`,
            "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
          },
        };
        await mailer.send({ ...base, sendId: "signed", messageId: "<signed@brand.test>", dkim: options }, true);
        await mailer.send({ ...base, sendId: "plain", messageId: "<plain@brand.test>" }, true);
        const signed = await Deno.readTextFile(`${dir}/signed.eml`);
        const result = await verify(signed);
        assertEquals(result.status.result, "pass", JSON.stringify(result.status));
        assertMatch(signed, /^DKIM-Signature: /);
        assertMatch(signed, /\r\nSubject: =\?UTF-8\?/);
        assertNotMatch(signed.replace(/\r\n/g, ""), /\n/, "CRLF line endings only");
        const plain = await Deno.readTextFile(`${dir}/plain.eml`);
        assertNotMatch(plain, /DKIM-Signature/i);
        assertMatch(plain, /\r\nMessage-ID: <plain@brand\.test>\r\n/);
      } finally {
        mailer.close();
        await Deno.remove(dir, { recursive: true });
      }
    });
  } finally {
    for (const signer of signers) signer.close();
  }
});
