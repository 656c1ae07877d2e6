/**
 * Segments (saved contact filters) and contact management: rule semantics as members of a
 * real database, memberCount and preview, tenant isolation, bad input, updateContact and
 * the filters of the `contacts` query.
 */
import { AppError } from "../src/errors.ts";
import { CreateSegmentInput } from "../src/segments/inputs.ts";
import { parseInput } from "../src/validation.ts";
import { assert, assertEquals } from "./assert.ts";
import { opts, startStack, type TestTenant } from "./helpers.ts";

type Rule = { field: string; op: string; value?: string | null };

const CREATE = `mutation($i: CreateSegmentInput!) {
  createSegment(input: $i) { id name rules { field op value } memberCount preview(first: 100) { email } }
}`;
const CONTACTS = `query($first: Int, $after: String, $status: ContactStatus, $search: String, $segmentId: ID) {
  contacts(first: $first, after: $after, status: $status, search: $search, segmentId: $segmentId) {
    nodes { email } pageInfo { hasNextPage endCursor }
  }
}`;
const UPDATE = `mutation($id: ID!, $i: UpdateContactInput!) {
  updateContact(id: $id, input: $i) { id email firstName lastName company fields status }
}`;

Deno.test("segment input: an op outside the enum is validation_failed at rules.N.op", () => {
  // GraphQL's enum stops this earlier; the zod schema guards every other caller.
  try {
    parseInput(CreateSegmentInput, {
      name: "x",
      rules: [{ field: "email", op: "EQ", value: "a" }, { field: "email", op: "LIKE", value: "a" }],
    });
    throw new Error("accepted");
  } catch (e) {
    assert(e instanceof AppError);
    assertEquals(e.code, "validation_failed");
    assertEquals(e.errors?.map((x) => x.path), ["rules.1.op"]);
  }
  const ok = parseInput(CreateSegmentInput, {
    name: " Pros ",
    rules: [
      { field: "lastName", op: "EXISTS", value: "ignored" },
      { field: "status", op: "NEQ", value: "BOUNCED" },
      { field: "plan.tier", op: "CONTAINS", value: "Pro" },
    ],
  });
  assertEquals(ok, {
    name: "Pros",
    rules: [
      { field: "last_name", op: "EXISTS", value: null },
      { field: "status", op: "NEQ", value: "bounced" },
      { field: "plan.tier", op: "CONTAINS", value: "Pro" },
    ],
  });
});

Deno.test("segments and contacts", opts, async (t) => {
  const stack = await startStack({ smtp: false });
  try {
    const a = await stack.tenant();
    const b = await stack.tenant({ domain: "other.test" });
    const ids: Record<string, string> = {};
    const contact = async (tenant: TestTenant, i: Record<string, unknown>) => {
      const r = await stack.gql(
        `mutation($i: CreateContactInput!) { createContact(input: $i) { id } }`,
        { i },
        tenant.key,
      );
      assert(!r.body.errors, JSON.stringify(r.body.errors));
      return r.body.data.createContact.id as string;
    };
    ids.ann = await contact(a, {
      email: "ann@acme.test",
      firstName: "Ann",
      lastName: "Lee",
      company: "Acme Corp",
      fields: { plan: "pro", seats: 5, path: "C:\\mail" },
    });
    ids.bob = await contact(a, {
      email: "bob@beta.test",
      firstName: "Bob",
      lastName: "",
      company: "Beta",
      fields: { plan: "free" },
    });
    ids.cy = await contact(a, { email: "cy@acme.test", firstName: "Cy", fields: { plan: "" } });
    ids.dee = await contact(a, { email: "dee@gamma.test", company: "save_50%now", fields: {} });
    ids.eve = await contact(a, { email: "eve@gamma.test", company: "save 50 now", fields: { plan: null } });
    await stack.pg.query("update contacts set status = 'unsubscribed' where id = $1", [ids.dee]);
    // Another tenant with a look-alike contact: never counted for `a`.
    ids.other = await contact(b, { email: "ann@acme.test", company: "Acme Corp", fields: { plan: "pro" } });
    const all = ["ann@acme.test", "bob@beta.test", "cy@acme.test", "dee@gamma.test", "eve@gamma.test"];

    /** Creates a segment of `a` and returns who it holds (sorted) and what was stored. */
    const members = async (rules: Rule[], tenant = a) => {
      const r = await stack.gql(CREATE, { i: { name: "s", rules } }, tenant.key);
      assert(!r.body.errors, JSON.stringify(r.body.errors));
      const s = r.body.data.createSegment;
      const emails = s.preview.map((c: { email: string }) => c.email).sort();
      assertEquals(s.memberCount, emails.length, "memberCount agrees with the preview");
      return { id: s.id as string, emails, rules: s.rules as Rule[] };
    };
    const emailsOf = (r: { body: { data: { contacts: { nodes: { email: string }[] } } } }) =>
      r.body.data.contacts.nodes.map((n) => n.email).sort();

    await t.step("EQ, NEQ, CONTAINS, EXISTS on standard fields, ignoring case", async () => {
      assertEquals((await members([{ field: "company", op: "EQ", value: "acme CORP" }])).emails, ["ann@acme.test"]);
      assertEquals((await members([{ field: "email", op: "EQ", value: "ANN@ACME.TEST" }])).emails, ["ann@acme.test"]);
      assertEquals(
        (await members([{ field: "email", op: "CONTAINS", value: "@ACME" }])).emails,
        ["ann@acme.test", "cy@acme.test"],
      );
      assertEquals(
        (await members([{ field: "company", op: "NEQ", value: "acme corp" }])).emails,
        all.filter((e) => e !== "ann@acme.test"),
      );
      // Empty and null are both "not there".
      assertEquals((await members([{ field: "last_name", op: "EXISTS" }])).emails, ["ann@acme.test"]);
      assertEquals(
        (await members([{ field: "company", op: "EXISTS" }])).emails,
        ["ann@acme.test", "bob@beta.test", "dee@gamma.test", "eve@gamma.test"],
      );
    });

    await t.step("camelCase aliases are stored snake_case; EXISTS keeps no value", async () => {
      const s = await members([{ field: "firstName", op: "EQ", value: "ann" }, {
        field: "lastName",
        op: "EXISTS",
        value: "whatever",
      }]);
      assertEquals(s.emails, ["ann@acme.test"]);
      assertEquals(s.rules, [
        { field: "first_name", op: "EQ", value: "ann" },
        { field: "last_name", op: "EXISTS", value: null },
      ]);
    });

    await t.step("status rules: any case in, lower case stored, all statuses counted", async () => {
      const s = await members([{ field: "status", op: "EQ", value: "Unsubscribed" }]);
      assertEquals(s.emails, ["dee@gamma.test"]);
      assertEquals(s.rules, [{ field: "status", op: "EQ", value: "unsubscribed" }]);
      assertEquals(
        (await members([{ field: "status", op: "NEQ", value: "SUBSCRIBED" }])).emails,
        ["dee@gamma.test"],
      );
      assertEquals((await members([{ field: "status", op: "EXISTS" }])).emails, all);
      const bad = await stack.gql(CREATE, {
        i: { name: "x", rules: [{ field: "status", op: "EQ", value: "active" }] },
      }, a.key);
      assertEquals(bad.body.errors[0].extensions.code, "validation_failed");
      assertEquals(bad.body.errors[0].extensions.errors[0].path, "rules.0.value");
    });

    await t.step("custom fields compare fields->>key as text", async () => {
      assertEquals((await members([{ field: "plan", op: "EQ", value: "PRO" }])).emails, ["ann@acme.test"]);
      // A JSON number equals its text.
      assertEquals((await members([{ field: "seats", op: "EQ", value: "5" }])).emails, ["ann@acme.test"]);
      assertEquals(
        (await members([{ field: "plan", op: "CONTAINS", value: "R" }])).emails,
        ["ann@acme.test", "bob@beta.test"],
      );
      // "" and JSON null are not "there"; a missing key neither.
      assertEquals(
        (await members([{ field: "plan", op: "EXISTS" }])).emails,
        ["ann@acme.test", "bob@beta.test"],
      );
      assertEquals((await members([{ field: "path", op: "CONTAINS", value: "c:\\m" }])).emails, ["ann@acme.test"]);
      assertEquals((await members([{ field: "nope", op: "EXISTS" }])).emails, []);
    });

    await t.step("NEQ also matches contacts where the field is null or missing", async () => {
      // cy: plan ""; dee: no plan key; eve: plan JSON null.
      assertEquals(
        (await members([{ field: "plan", op: "NEQ", value: "pro" }])).emails,
        ["bob@beta.test", "cy@acme.test", "dee@gamma.test", "eve@gamma.test"],
      );
      // cy has no company at all.
      assert((await members([{ field: "company", op: "NEQ", value: "Beta" }])).emails.includes("cy@acme.test"));
    });

    await t.step("CONTAINS matches %, _ and \\ literally", async () => {
      // Unescaped, "e_5" and "50%n" would also match eve's "save 50 now".
      assertEquals((await members([{ field: "company", op: "CONTAINS", value: "e_5" }])).emails, ["dee@gamma.test"]);
      assertEquals((await members([{ field: "company", op: "CONTAINS", value: "50%n" }])).emails, ["dee@gamma.test"]);
      assertEquals((await members([{ field: "company", op: "CONTAINS", value: "%" }])).emails, ["dee@gamma.test"]);
      assertEquals((await members([{ field: "company", op: "CONTAINS", value: "\\" }])).emails, []);
    });

    await t.step("rules are ANDed; no rules is every contact", async () => {
      assertEquals(
        (await members([
          { field: "email", op: "CONTAINS", value: "acme" },
          { field: "company", op: "EXISTS" },
        ])).emails,
        ["ann@acme.test"],
      );
      assertEquals(
        (await members([
          { field: "email", op: "CONTAINS", value: "acme" },
          { field: "plan", op: "EQ", value: "free" },
        ])).emails,
        [],
      );
      assertEquals((await members([])).emails, all);
    });

    await t.step("segment, segments, memberCount and preview (newest first, capped)", async () => {
      const s = await members([]);
      const r = await stack.gql(
        `query($id: ID!) { segment(id: $id) { id name memberCount preview { email } two: preview(first: 2) { email }
          many: preview(first: 1000) { email } } }`,
        { id: s.id },
        a.key,
      );
      const seg = r.body.data.segment;
      assertEquals(seg.memberCount, 5);
      const newestFirst = await stack.gql(CONTACTS, { first: 100 }, a.key);
      const order = newestFirst.body.data.contacts.nodes.map((n: { email: string }) => n.email);
      assertEquals(seg.many.map((c: { email: string }) => c.email), order);
      assertEquals(seg.two.map((c: { email: string }) => c.email), order.slice(0, 2));
      assertEquals(seg.preview.length, 5);
      const list = await stack.gql(`{ segments { id } }`, {}, a.key);
      assertEquals(list.body.data.segments[0].id, s.id, "newest first");
      assertEquals(
        list.body.data.segments.length,
        await stack.count("select count(*) from segments where account_id = $1", [a.accountId]),
      );
    });

    await t.step("tenant isolation: foreign segments are null, foreign contacts never members", async () => {
      const theirs = await members([{ field: "email", op: "EQ", value: "ann@acme.test" }], b);
      assertEquals(theirs.emails, ["ann@acme.test"]);
      const r = await stack.gql(`query($id: ID!) { segment(id: $id) { id } }`, { id: theirs.id }, a.key);
      assertEquals(r.body.data.segment, null);
      const notUuid = await stack.gql(`{ segment(id: "nope") { id } }`, {}, a.key);
      assertEquals(notUuid.body.data.segment, null);
      const mine = await stack.gql(`{ segments { id } }`, {}, a.key);
      assert(!mine.body.data.segments.some((s: { id: string }) => s.id === theirs.id));
      // The other tenant's Acme contact is not in a's count.
      assertEquals((await members([{ field: "company", op: "EQ", value: "Acme Corp" }])).emails, ["ann@acme.test"]);
      const all5 = await members([]);
      assertEquals(all5.emails.length, 5);
      const viaContacts = await stack.gql(CONTACTS, { segmentId: theirs.id }, a.key);
      assertEquals(viaContacts.body.errors[0].extensions.code, "segment_not_found");
    });

    await t.step("bad input is refused and creates nothing", async () => {
      const before = await stack.count("select count(*) from segments");
      const enumErr = await stack.gql(CREATE, {
        i: { name: "x", rules: [{ field: "email", op: "LIKE", value: "a" }] },
      }, a.key);
      assert(enumErr.body.errors?.length, "an op outside the enum is an error");
      const cases: [Record<string, unknown>, string][] = [
        [{ name: "x", rules: [{ field: "email", op: "EQ" }] }, "rules.0.value"],
        [
          { name: "x", rules: [{ field: "email", op: "EXISTS" }, { field: "plan", op: "CONTAINS", value: "" }] },
          "rules.1.value",
        ],
        [{ name: "x", rules: [{ field: "bad field", op: "EXISTS" }] }, "rules.0.field"],
        [{ name: "x", rules: [{ field: "9lives", op: "EXISTS" }] }, "rules.0.field"],
        [{ name: "x", rules: [{ field: "a".repeat(65), op: "EXISTS" }] }, "rules.0.field"],
        [{ name: "  ", rules: [] }, "name"],
        [{ name: "a\r\nBcc: x", rules: [] }, "name"],
        [{ name: "x", rules: Array.from({ length: 21 }, () => ({ field: "email", op: "EXISTS" })) }, "rules"],
      ];
      for (const [i, path] of cases) {
        const r = await stack.gql(CREATE, { i }, a.key);
        assertEquals(r.body.errors?.[0]?.extensions?.code, "validation_failed", JSON.stringify(i));
        assertEquals(r.body.errors[0].extensions.errors[0].path, path, JSON.stringify(i));
      }
      const anon = await stack.gql(CREATE, { i: { name: "x", rules: [] } });
      assertEquals(anon.body.errors[0].extensions.code, "unauthorized");
      assertEquals(await stack.count("select count(*) from segments"), before);
    });

    await t.step("contacts filters: status, search, segmentId, with keyset pages", async () => {
      const unsub = await stack.gql(CONTACTS, { status: "UNSUBSCRIBED" }, a.key);
      assertEquals(emailsOf(unsub), ["dee@gamma.test"]);
      assertEquals(emailsOf(await stack.gql(CONTACTS, { search: "ACME" }, a.key)), ["ann@acme.test", "cy@acme.test"]);
      assertEquals(emailsOf(await stack.gql(CONTACTS, { search: "lee" }, a.key)), ["ann@acme.test"]);
      assertEquals(emailsOf(await stack.gql(CONTACTS, { search: "%" }, a.key)), ["dee@gamma.test"]);
      assertEquals(emailsOf(await stack.gql(CONTACTS, { search: "gamma", status: "SUBSCRIBED" }, a.key)), [
        "eve@gamma.test",
      ]);
      const seg = await members([{ field: "email", op: "CONTAINS", value: "a" }]);
      assertEquals(seg.emails, ["ann@acme.test", "bob@beta.test", "cy@acme.test", "dee@gamma.test", "eve@gamma.test"]);
      const narrow = await members([{ field: "company", op: "EXISTS" }]);
      assertEquals(emailsOf(await stack.gql(CONTACTS, { segmentId: narrow.id }, a.key)), narrow.emails);
      assertEquals(emailsOf(await stack.gql(CONTACTS, { segmentId: narrow.id, search: "gamma" }, a.key)), [
        "dee@gamma.test",
        "eve@gamma.test",
      ]);
      // One row per page through the segment: every member once, in the unfiltered order.
      const seen: string[] = [];
      let after: string | null = null;
      for (let i = 0; i < 10; i++) {
        const r = await stack.gql(CONTACTS, { segmentId: narrow.id, first: 1, after }, a.key);
        const c = r.body.data.contacts;
        seen.push(...c.nodes.map((n: { email: string }) => n.email));
        if (!c.pageInfo.hasNextPage) break;
        after = c.pageInfo.endCursor;
      }
      const order = (await stack.gql(CONTACTS, { first: 100 }, a.key)).body.data.contacts.nodes
        .map((n: { email: string }) => n.email);
      assertEquals(seen, order.filter((e: string) => narrow.emails.includes(e)));
      for (const segmentId of [crypto.randomUUID(), "not-a-uuid"]) {
        const r = await stack.gql(CONTACTS, { segmentId }, a.key);
        assertEquals(r.body.errors[0].extensions.code, "segment_not_found");
      }
    });

    await t.step("updateContact: fields, names, status; duplicate email and foreign ids refused", async () => {
      const plan = { field: "plan", op: "EQ", value: "team" };
      assertEquals((await members([plan])).emails, []);
      const u = await stack.gql(UPDATE, { id: ids.bob, i: { fields: { plan: "team" }, lastName: null } }, a.key);
      assertEquals(u.body.data.updateContact.fields, { plan: "team" }, "fields are replaced, not merged");
      assertEquals(u.body.data.updateContact.lastName, null);
      assertEquals(u.body.data.updateContact.firstName, "Bob", "fields left out are kept");
      assertEquals((await members([plan])).emails, ["bob@beta.test"]);
      const cleared = await stack.gql(UPDATE, { id: ids.bob, i: { fields: null } }, a.key);
      assertEquals(cleared.body.data.updateContact.fields, {});

      const bounced = await stack.gql(UPDATE, { id: ids.dee, i: { status: "BOUNCED" } }, a.key);
      assertEquals(bounced.body.data.updateContact.status, "BOUNCED");
      const back = await stack.gql(UPDATE, { id: ids.dee, i: { status: "SUBSCRIBED" } }, a.key);
      assertEquals(back.body.data.updateContact.status, "SUBSCRIBED");
      assertEquals(emailsOf(await stack.gql(CONTACTS, { status: "UNSUBSCRIBED" }, a.key)), []);

      const own = await stack.gql(UPDATE, { id: ids.ann, i: { email: "Ann@Acme.test" } }, a.key);
      assertEquals(own.body.data.updateContact.email, "Ann@Acme.test", "a contact may change its own case");
      const dup = await stack.gql(UPDATE, { id: ids.bob, i: { email: "ANN@acme.TEST", company: "Changed" } }, a.key);
      assertEquals(dup.body.errors[0].extensions.code, "validation_failed");
      assertEquals(dup.body.errors[0].extensions.errors[0].path, "email");
      const badEmail = await stack.gql(UPDATE, { id: ids.bob, i: { email: "nope" } }, a.key);
      assertEquals(badEmail.body.errors[0].extensions.errors[0].path, "email");
      assertEquals(
        await stack.count("select count(*) from contacts where id = $1 and company = 'Beta'", [ids.bob]),
        1,
        "a refused update changes nothing",
      );
      // The other tenant's address is free to use in this account.
      const r = await stack.gql(UPDATE, { id: ids.eve, i: { email: "eve@other.test" } }, a.key);
      assertEquals(r.body.data.updateContact.email, "eve@other.test");

      for (const id of [ids.other, crypto.randomUUID(), "not-a-uuid"]) {
        const f = await stack.gql(UPDATE, { id, i: { firstName: "Mallory" } }, a.key);
        assertEquals(f.body.errors[0].extensions.code, "not_found", id);
      }
      assertEquals(await stack.count("select count(*) from contacts where first_name = 'Mallory'"), 0);
    });
  } finally {
    await stack.stop();
  }
});
