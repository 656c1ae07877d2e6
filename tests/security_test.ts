/**
 * Hostile templates (issue: a tenant's template never runs as code): every attack is sent as
 * a tenant would send it, against the real service, and the test asserts what the tenant and
 * the operator see — the send `failed` with `render_failed`, its quota unit back, no code run,
 * no host value in any message, other sends delivered, and /healthz answering throughout.
 */
import { assert, assertEquals, assertMatch } from "./assert.ts";
import { opts, send, type Stack, startStack, type TestTenant, waitFor, waitForStatus, watchHealth } from "./helpers.ts";

/** A file a gadget would write if it ran; it must never exist. */
const MARKER = `/tmp/pp-security-marker-${crypto.randomUUID()}`;

/** Every way we know from a nunjucks value to Function, each trying to run host code. */
const GADGETS = [
  `{{ range.constructor("return Deno.cwd()")() }}`,
  `{{ cycler.constructor("return Deno.cwd()")() }}`,
  `{{ joiner.constructor("return Deno.cwd()")() }}`,
  `{{ "".constructor.constructor("return Deno.cwd()")() }}`,
  `{{ ""["constructor"]["constructor"]("return Deno.cwd()")() }}`,
  `{{ [].constructor.constructor("return Deno.cwd()")() }}`,
  `{{ range["__proto__"]["constructor"]("return Deno.cwd()")() }}`,
  `{{ constructor.constructor("return Deno.cwd()")() }}`,
  `{% set f = range.constructor %}{{ f("Deno.writeTextFileSync('${MARKER}', 'x')")() }}`,
  `{{ range.constructor("Deno.writeTextFileSync('${MARKER}', 'x')")() }}`,
  `{% macro m() %}{% endmacro %}{{ m.constructor("return Deno.cwd()")() }}`,
  `{% include "/etc/passwd" %}`,
];

/** Filter and test names are looked up by name too: Object.prototype's must not answer. */
const NAME_GADGETS = [
  `{% set c = "x" | valueOf %}{{ c.env.globals | dump }}`,
  `{{ "__proto__" | __lookupGetter__ }}`,
  `{{ "x" | constructor }}`,
  `{% if "x" is constructor %}yes{% endif %}`,
  `{{ "x" | hasOwnProperty("length") }}`,
];

async function template(stack: Stack, tenant: TestTenant, fields: Record<string, unknown>) {
  const r = await stack.gql(
    `mutation($i: CreateTemplateInput!) { createTemplate(input: $i) { id } }`,
    {
      i: {
        name: "hostile",
        subject: "Hello",
        text: "plain",
        fromEmail: `orders@${tenant.domain}`,
        trackOpens: false,
        trackClicks: false,
        ...fields,
      },
    },
    tenant.key,
  );
  return r;
}

/** Asserts the send ended `failed` with `render_failed`, a `failed` event saying why, and no mail. */
async function assertRenderFailed(stack: Stack, tenant: TestTenant, id: string, why?: RegExp) {
  const s = await waitForStatus(stack, tenant.key, id, ["failed", "delivered", "sent"], 15_000);
  assertEquals(s.status, "failed", JSON.stringify(s));
  assertEquals(s.error.code, "render_failed");
  if (why) assertMatch(s.error.message, why);
  const failed = s.events.filter((e: { type: string }) => e.type === "failed");
  assertEquals(failed.length, 1);
  assertEquals(failed[0].data.code, "render_failed");
  assert(!stack.sink.messages.some((m) => m.to.includes(s.to)), `no message may reach ${s.to}`);
}

async function used(stack: Stack, accountId: string): Promise<number> {
  return await stack.count("select coalesce(sum(used), 0) from account_usage where account_id = $1", [accountId]);
}

Deno.test("security: a tenant's template is data", opts, async (t) => {
  const stack = await startStack({ env: { PP_RENDER_TIMEOUT_MS: "1000" } });
  const health = watchHealth(stack.url);
  try {
    const tenant = await stack.tenant({ monthlyLimit: 10_000 });
    const cwd = Deno.cwd();
    /** A send of the tenant's template to `to`, its order ORD-1, with `extra` fields. */
    const order = (to: string, extra: Record<string, unknown> = {}) => ({
      templateId: tenant.templateId,
      to,
      personalizations: { order_id: "ORD-1" },
      ...extra,
    });

    await t.step("constructor gadgets in a send's subject: render_failed, nothing runs", async () => {
      const ids = [];
      for (const [i, g] of GADGETS.entries()) {
        ids.push((await send(stack, tenant.key, order(`gadget${i}@example.test`, { subject: g }))).id);
      }
      for (const id of ids) await assertRenderFailed(stack, tenant, id, /cannot be used in a template|not found/);
    });

    await t.step("Object.prototype's methods are no filters or tests: render_failed, filter not found", async () => {
      const ids = [];
      for (const [i, g] of NAME_GADGETS.entries()) {
        ids.push((await send(stack, tenant.key, order(`name${i}@example.test`, { subject: g }))).id);
      }
      for (const id of ids) await assertRenderFailed(stack, tenant, id, /(filter|test) not found/);
    });

    await t.step("gadgets in a stored template's html and text: render_failed", async () => {
      for (const [i, g] of GADGETS.slice(0, 4).entries()) {
        for (const part of ["html", "text"]) {
          const r = await template(stack, tenant, { [part]: `<p>${g}</p>` });
          assertEquals(r.body.errors, undefined, JSON.stringify(r.body));
          const to = `t${part}${i}@example.test`;
          const { id } = await send(stack, tenant.key, order(to, { templateId: r.body.data.createTemplate.id }));
          await assertRenderFailed(stack, tenant, id, /cannot be used in a template/);
        }
      }
    });

    await t.step("no gadget wrote a file or leaked a host value into any message", () => {
      assert(!existsSync(MARKER), "a template ran code: the marker file exists");
      for (const m of stack.sink.messages) assert(!m.raw.includes(cwd), "a message carries the server's cwd");
    });

    await t.step("loops, memory and output bombs fail alone; quota units come back; others are delivered", async () => {
      const before = await used(stack, tenant.accountId);
      const bombs: [string, RegExp][] = [
        ["{% for i in range(0, 100000000) %}{% endfor %}", /range\(\) is limited/],
        ["{% for i in range(10000) %}{% for j in range(10000) %}{{ i }}{% endfor %}{% endfor %}", /time|limit/],
        [
          '{% set s = "xxxxxxxxxxxxxxxx" %}{% for i in range(26) %}{% set s = s + s %}{% endfor %}{{ s }}',
          /memory|limit|length/,
        ],
        ["{% for i in range(10000) %}{{ order_id }}{{ pad }}{% endfor %}", /over the 2 MB limit/],
        ["{{ nosuch() }}", /Unable to call `nosuch`/],
      ];
      const pad = "p".repeat(300);
      const ids: [string, RegExp][] = [];
      const good: string[] = [];
      for (const [i, [subject, why]] of bombs.entries()) {
        // Subjects are rendered alone (plain text), with the template's own html and text.
        ids.push([
          (await send(stack, tenant.key, order(`bomb${i}@example.test`, { subject, personalizations: { pad } }))).id,
          why,
        ]);
        good.push((await send(stack, tenant.key, order(`fine${i}@example.test`))).id);
      }
      for (const id of good) await waitForStatus(stack, tenant.key, id, ["delivered"], 15_000);
      for (const [id, why] of ids) await assertRenderFailed(stack, tenant, id, why);
      // Five bombs and five good sends were accepted: only the five delivered ones still count.
      assertEquals(await used(stack, tenant.accountId), before + good.length);
    });

    await t.step("a template that fails over GraphQL's createSend fails the same way", async () => {
      const r = await stack.gql(
        `mutation($i: CreateSendInput!) { createSend(input: $i) { id } }`,
        { i: { templateId: tenant.templateId, to: "gql@example.test", subject: GADGETS[0] } },
        tenant.key,
      );
      assertEquals(r.body.errors, undefined, JSON.stringify(r.body));
      await assertRenderFailed(stack, tenant, r.body.data.createSend.id);
    });

    await t.step("a compile bomb is refused when saved (422), fast, and the service stays up", async () => {
      for (const html of ["{{ " + "(".repeat(200_000) + " }}", "{% if a %}".repeat(40_000)]) {
        const t0 = performance.now();
        const r = await template(stack, tenant, { html });
        assertEquals(r.body.errors?.[0]?.extensions?.code, "validation_failed", JSON.stringify(r.body).slice(0, 500));
        assert(performance.now() - t0 < 5_000);
      }
      const subject = await stack.api("POST", "/api/v1/sends", {
        key: tenant.key,
        body: { templateId: tenant.templateId, to: "x@example.test", subject: "{{ " + "(".repeat(990) },
      });
      assertEquals(subject.status, 422);
      assertEquals(subject.body.errors[0].path, "subject");
    });

    await t.step("after all of it, an ordinary send renders as before", async () => {
      const { id } = await send(stack, tenant.key, order("after@example.test"));
      await waitForStatus(stack, tenant.key, id, ["delivered"], 10_000);
      const mail = await waitFor(() => stack.sink.messages.find((m) => m.to.includes("after@example.test")));
      assertEquals(mail!.subject, "Order ORD-1 confirmed");
    });
  } finally {
    const worst = await health.stop();
    await stack.stop();
    assert(worst < 1_000, `/healthz took ${worst} ms at worst during the attacks`);
  }
});

function existsSync(path: string): boolean {
  try {
    Deno.statSync(path);
    return true;
  } catch {
    return false;
  }
}
