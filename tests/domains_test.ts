/**
 * Domains: addDomain gives a DKIM key and the DNS records; verifyDomain checks them against
 * a real DNS server on loopback (npm dns2); mail from the verified domain is DKIM-signed,
 * and a verifier library (npm mailauth) accepts the signature with the same DNS answers.
 */
import dns2 from "dns2";
import { dkimVerify } from "mailauth/lib/dkim/verify.js";
import { assert, assertEquals, assertMatch, assertNotMatch } from "./assert.ts";
import { opts, startStack, txtChunks, txtResolver, waitForStatus } from "./helpers.ts";

/** A TXT value as DNS carries it: character-strings of at most 255 bytes. */
/** A DNS server answering TXT queries from `records` (name → values). */
async function startDns(records: Map<string, string[]>) {
  const server = dns2.createServer({
    udp: true,
    handle(request, send) {
      const response = dns2.Packet.createResponseFromRequest(request);
      const [q] = request.questions;
      for (const value of records.get(q.name.toLowerCase()) ?? []) {
        if (q.type !== dns2.Packet.TYPE.TXT) continue;
        const answer = {
          name: q.name,
          type: dns2.Packet.TYPE.TXT,
          class: dns2.Packet.CLASS.IN,
          ttl: 1,
          data: txtChunks(value),
        };
        // dns2's Resource type wants its encoder's methods; a plain record is what it encodes.
        response.answers.push(answer as unknown as (typeof response.answers)[number]);
      }
      send(response);
    },
  });
  await server.listen({ udp: { port: 0, address: "127.0.0.1" } });
  return { port: server.addresses().udp!.port, close: () => server.close() };
}

Deno.test("domains: DNS verification and DKIM signing", opts, async (t) => {
  const records = new Map<string, string[]>();
  const dns = await startDns(records);
  const stack = await startStack({ env: { PP_DNS_SERVER: `127.0.0.1:${dns.port}` } });
  try {
    const tenant = await stack.tenant();
    const add = await stack.gql(
      `mutation { addDomain(name: "brand.test") { id status dkimSelector dnsRecords { type name value } } }`,
      {},
      tenant.key,
    );
    const domain = add.body.data.addDomain;
    const rec = (prefix: string) => domain.dnsRecords.find((r: { name: string }) => r.name.startsWith(prefix));
    const verify = () =>
      stack.gql(
        `mutation($id: ID!) { verifyDomain(id: $id) { verified domain { status } checks { name ok found } } }`,
        { id: domain.id },
        tenant.key,
      );
    const sendFrom = (from: string) =>
      stack.api("POST", "/api/v1/sends", {
        key: tenant.key,
        body: { templateId: tenant.templateId, to: "reader@example.test", from, personalizations: { order_id: "D1" } },
      });

    await t.step(
      "addDomain returns verification, DKIM, SPF and DMARC records; the key is stored encrypted",
      async () => {
        assertEquals(domain.status, "PENDING");
        assertMatch(rec("_pigeonperch.").value, /^pp-verify=[0-9A-Za-z]{32}$/);
        assertEquals(rec(`${domain.dkimSelector}._domainkey.`).name, `${domain.dkimSelector}._domainkey.brand.test`);
        assertMatch(rec(`${domain.dkimSelector}._domainkey.`).value, /^v=DKIM1; k=rsa; p=[A-Za-z0-9+/=]{300,}$/);
        assert(domain.dnsRecords.some((r: { value: string }) => r.value.startsWith("v=spf1")));
        assertEquals(rec("_dmarc.").value.startsWith("v=DMARC1"), true);
        const row = await stack.pg.query("select dkim_private_key_enc from domains where id = $1", [domain.id]);
        assertNotMatch(row.rows[0].dkim_private_key_enc, /PRIVATE KEY/);
        assertMatch(row.rows[0].dkim_private_key_enc, /^v1\./);
      },
    );

    await t.step("nothing published: not verified, and mail from it is refused", async () => {
      const v = await verify();
      assertEquals(v.body.data.verifyDomain.verified, false);
      assertEquals(v.body.data.verifyDomain.domain.status, "PENDING");
      assert(v.body.data.verifyDomain.checks.every((c: { ok: boolean }) => !c.ok));
      assertEquals(v.body.data.verifyDomain.checks.length, 3, "verification, DKIM and (advisory) SPF");
      assertEquals((await sendFrom("news@brand.test")).body.code, "domain_not_verified");
    });

    await t.step("only the verification TXT: still pending (the DKIM key is missing)", async () => {
      records.set(rec("_pigeonperch.").name, [rec("_pigeonperch.").value]);
      const v = await verify();
      assertEquals(v.body.data.verifyDomain.verified, false);
      const checks = v.body.data.verifyDomain.checks;
      assertEquals(checks.map((c: { ok: boolean }) => c.ok), [true, false, false]);
    });

    await t.step("a wrong DKIM key does not verify", async () => {
      const dkim = rec(`${domain.dkimSelector}._domainkey.`);
      records.set(dkim.name, ["v=DKIM1; k=rsa; p=AAAAB3NzaC1yc2EAAAADAQABAAABAQ"]);
      assertEquals((await verify()).body.data.verifyDomain.verified, false);
    });

    await t.step("both records published (the key split in 255-byte strings): verified", async () => {
      const dkim = rec(`${domain.dkimSelector}._domainkey.`);
      records.set(dkim.name, [dkim.value]);
      const v = await verify();
      assertEquals(v.body.data.verifyDomain.verified, true, JSON.stringify(v.body));
      assertEquals(v.body.data.verifyDomain.domain.status, "VERIFIED");
      assertEquals(v.body.data.verifyDomain.checks[2].ok, false, "no SPF yet: reported, not required");
      records.set("brand.test", ["v=spf1 include:_spf.mailhost.test ~all"]);
      assertEquals((await verify()).body.data.verifyDomain.checks[2].ok, true);
    });

    await t.step("mail from the domain (and a subdomain) is DKIM-signed and verifies", async () => {
      const r = await sendFrom("Brand News <news@mail.brand.test>");
      assertEquals(r.status, 202, JSON.stringify(r.body));
      await waitForStatus(stack, tenant.key, r.body.id, ["delivered"]);
      const mail = stack.sink.messages.find((m) => m.messageId === r.body.messageId)!;
      assert(mail, "the message reached the SMTP server");
      const header = mail.raw.match(/^DKIM-Signature:[^\r\n]*(?:\r\n[ \t][^\r\n]*)*/mi)?.[0] ?? "";
      assertMatch(header, /d=brand\.test/);
      assertMatch(header, new RegExp(`s=${domain.dkimSelector}`));
      assertMatch(header, /c=relaxed\/relaxed/);
      assertMatch(header.replace(/\s+/g, ""), /h=[^;]*list-unsubscribe:list-unsubscribe-post/i);
      const result = await dkimVerify(mail.raw, { resolver: txtResolver(records) });
      assertEquals(result.results[0].status.result, "pass", JSON.stringify(result.results[0].status));
      assertEquals(result.results[0].signingDomain, "brand.test");
    });

    await t.step("a tampered message fails the verifier (the test can fail)", async () => {
      const mail = stack.sink.messages.at(-1)!;
      const tampered = mail.raw.replace(/Subject: [^\r\n]*/, "Subject: changed");
      const result = await dkimVerify(tampered, { resolver: txtResolver(records) });
      assertEquals(result.results[0].status.result, "fail");
    });

    await t.step("a domain proven by DNS cannot be claimed by another account", async () => {
      const rival = await stack.tenant({ domain: "rival.test" });
      const r = await stack.gql(`mutation { addDomain(name: "Brand.test") { id } }`, {}, rival.key);
      assertEquals(r.body.errors[0].extensions.code, "validation_failed");
      assertEquals(r.body.errors[0].extensions.errors[0].path, "name");
      assertEquals(await stack.count("select count(*) from domains where lower(name) = 'brand.test'"), 1);
    });

    await t.step("verifyDomain of another tenant's domain is not_found", async () => {
      const other = await stack.tenant({ domain: "other.test" });
      const r = await stack.gql(
        `mutation($id: ID!) { verifyDomain(id: $id) { verified } }`,
        { id: domain.id },
        other.key,
      );
      assertEquals(r.body.errors[0].extensions.code, "not_found");
    });
  } finally {
    await stack.stop();
    dns.close();
  }
});
