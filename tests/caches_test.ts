/**
 * Caches across processes: two processes on one database, each caching keys, templates and
 * account state for up to a minute. A change made through one is refused or used by the other
 * within 100 ms, because the database announces it (src/cache.ts); and while a process's
 * notice connection is down it serves nothing from its caches.
 */
import { assertEquals, assertMatch } from "./assert.ts";
import { ADMIN_TOKEN, type JsonResponse, opts, spawnMain, startStack, waitFor, waitForStatus } from "./helpers.ts";

/** How soon the other process must see a change (the bound). */
const WITHIN_MS = 100;

Deno.test("caches: a change through one process holds in the other at once", opts, async (t) => {
  const a = await startStack();
  const dataDir = await Deno.makeTempDir({ prefix: "pp-test-data-" });
  // B only accepts (role api): it shares A's database and secret, and A delivers.
  const b = await spawnMain({
    DATABASE_URL: a.databaseUrl,
    PP_ROLE: "api",
    PP_DATA_DIR: dataDir,
    PP_SECRET: a.service.deps.secrets.secret,
  });
  const onB = async (method: string, path: string, key: string, body?: unknown): Promise<JsonResponse> => {
    const res = await fetch(b.url + path, {
      method,
      headers: { "x-api-key": key, ...(body ? { "content-type": "application/json" } : {}) },
      body: body ? JSON.stringify(body) : undefined,
    });
    return { status: res.status, headers: res.headers, body: await res.json() };
  };
  const mustGqlOnA = async (query: string, variables: Record<string, unknown>, token: string) => {
    const r = await a.gql(query, variables, token);
    assertEquals(r.body.errors, undefined, JSON.stringify(r.body.errors));
    return r.body.data;
  };
  /** Asks B every 5 ms until `ok` holds, for at most WITHIN_MS; returns how long it took. */
  const seenByB = async (ask: () => Promise<JsonResponse>, ok: (r: JsonResponse) => boolean, what: string) => {
    const t0 = performance.now();
    let last: JsonResponse;
    do {
      last = await ask();
      if (ok(last)) return performance.now() - t0;
      await new Promise((r) => setTimeout(r, 5));
    } while (performance.now() - t0 < WITHIN_MS);
    throw new Error(`${what}: still ${last.status} ${JSON.stringify(last.body)} after ${WITHIN_MS} ms`);
  };
  const sendBody = (templateId: string, to: string) => ({ templateId, to, personalizations: { order_id: "C1" } });

  try {
    await t.step("a key revoked through one process is refused by the other", async () => {
      const tenant = await a.tenant();
      // Cached in B (its lookups live a minute).
      assertEquals((await onB("GET", "/api/v1/sends", tenant.key)).status, 200);
      assertEquals((await onB("GET", "/api/v1/sends", tenant.key)).status, 200);
      await mustGqlOnA(`mutation($id: ID!) { revokeApiKey(id: $id) { id } }`, { id: tenant.apiKeyId }, ADMIN_TOKEN);
      await seenByB(() => onB("GET", "/api/v1/sends", tenant.key), (r) => r.status === 401, "revoked key on B");
    });

    await t.step("a template edited through one process is used by the other's next send", async () => {
      const tenant = await a.tenant({ domain: "edit.test" });
      const first = await onB("POST", "/api/v1/sends", tenant.key, sendBody(tenant.templateId, "one@example.test"));
      assertEquals(first.status, 202);
      await mustGqlOnA(
        `mutation($id: ID!, $i: UpdateTemplateInput!) { updateTemplate(id: $id, input: $i) { id } }`,
        { id: tenant.templateId, i: { fromName: "Renamed shop" } },
        tenant.key,
      );
      let sent: JsonResponse | undefined;
      await seenByB(
        async () =>
          sent = await onB("POST", "/api/v1/sends", tenant.key, sendBody(tenant.templateId, "two@example.test")),
        (r) => r.status === 202 && r.body.from === "Renamed shop <orders@edit.test>",
        "the new from name on B",
      );
      // And the mail that leaves says so. Each poll above posted a send, and the earlier ones
      // carry the old name, so the mail is picked by the last send's id.
      await waitForStatus(a, tenant.key, sent!.body.id, ["delivered"], 10_000);
      const mail = a.sink.messages.find((m) => m.raw.includes(`X-PP-Send-Id: ${sent!.body.id}\r\n`));
      assertMatch(mail!.raw, /^From: "?Renamed shop"? <orders@edit\.test>/m);
    });

    await t.step("an account paused through one process is refused by the other", async () => {
      const tenant = await a.tenant({ domain: "pause.test" });
      const body = sendBody(tenant.templateId, "three@example.test");
      assertEquals((await onB("POST", "/api/v1/sends", tenant.key, body)).status, 202);
      await mustGqlOnA(
        `mutation($id: ID!) { setAccountSending(accountId: $id, enabled: false) { id } }`,
        { id: tenant.accountId },
        ADMIN_TOKEN,
      );
      await seenByB(
        () => onB("POST", "/api/v1/sends", tenant.key, body),
        (r) => r.status === 403 && r.body.code === "sending_paused",
        "sending_paused on B",
      );
    });

    await t.step("while its notice connection is down, a process trusts no cached entry", async () => {
      const tenant = await a.tenant({ domain: "down.test" });
      assertEquals((await onB("GET", "/api/v1/sends", tenant.key)).status, 200);
      // Cut every notice connection, then revoke at once: B may not be listening when the
      // notice is sent, so it is lost for B; B must still refuse the key.
      const cut = await a.pg.query(
        `select pg_terminate_backend(pid) from pg_stat_activity
         where application_name = 'pp-notices' and datname = current_database()`,
      );
      assertEquals(cut.rows.length, 3, "one notice connection per event loop: A's API and worker thread, B's");
      await mustGqlOnA(`mutation($id: ID!) { revokeApiKey(id: $id) { id } }`, { id: tenant.apiKeyId }, ADMIN_TOKEN);
      assertEquals((await onB("GET", "/api/v1/sends", tenant.key)).status, 401);
      // Both come back by themselves.
      await waitFor(
        async () =>
          (await a.count(
            `select count(*) from pg_stat_activity where application_name = 'pp-notices' and datname = current_database()`,
          )) === 3,
        10_000,
        "every notice connection back",
      );
    });
  } finally {
    b.child.kill("SIGTERM");
    await b.child.status;
    await a.stop();
    await Deno.remove(dataDir, { recursive: true }).catch(() => {});
  }
});
