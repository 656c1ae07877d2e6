/**
 * Hostile input against tracking, live streams and local state (issue 11, points 6–8): a
 * template html that made the link rewriter backtrack for seconds, oversized User-Agents,
 * forged X-Forwarded-For hops, too many live streams and streams of revoked keys, the
 * embedded Postgres's password, outbox file modes, and a flood of unknown API keys.
 */
import pg from "pg";
import { ACCOUNT_CACHE_MS, authenticate } from "../src/accounts/service.ts";
import { startEmbeddedPostgres } from "../src/db/embedded.ts";
import { liveEvents } from "../src/events/live.ts";
import { insertEvents } from "../src/events/repo.ts";
import { rewriteHtml, trackingUrls, verifyToken } from "../src/mail/tracking.ts";
import { assert, assertEquals, assertMatch, assertNotEquals } from "./assert.ts";
import {
  ADMIN_TOKEN,
  freePort,
  opts,
  type SseStream,
  type Stack,
  startStack,
  subscribe,
  waitFor,
  waitForStatus,
} from "./helpers.ts";

const SECRET = "s".repeat(48);
const SEND_ID = "0190f5a2-7c1e-7b3a-9d4e-5f6a7b8c9d0e";
const URLS = trackingUrls("https://t.example.test", SECRET, SEND_ID);

/** The link index of a click URL that rewriteHtml wrote, or -1. */
function clickIndex(url: string): number {
  const token = url.startsWith("https://t.example.test/t/c/") ? url.slice("https://t.example.test/t/c/".length) : "";
  return verifyToken(SECRET, token, "click")?.link ?? -1;
}

/** Milliseconds `fn` takes. */
function timed(fn: () => unknown): number {
  const t0 = performance.now();
  fn();
  return performance.now() - t0;
}

Deno.test("link rewriting: today's results for ordinary HTML, linear time for hostile HTML", async (t) => {
  const on = { trackClicks: true, trackOpens: true, urls: URLS };

  // The first steps hold for the regex rewriter this replaced as well: what ordinary HTML gets is unchanged.
  await t.step("http(s) hrefs go through the click endpoint, in order; everything else stays", () => {
    const html = `<html><body>
<a href="https://shop.test/a?x=1&amp;y=2">A</a>
<A CLASS=btn HREF='http://shop.test/b'>B</A>
<a href=https://shop.test/c>C</a>
<a data-href="https://shop.test/not-a-link" title='href="https://shop.test/nor-this"' href = " https://shop.test/d ">D</a>
<a href="mailto:x@shop.test">m</a><a href="tel:+1">t</a><a href="javascript:alert(1)">j</a><a href="/rel">r</a>
<a href="${URLS.unsubscribe}">unsubscribe</a>
<a name="anchor">no href</a><link href="https://shop.test/style.css">
</BODY></html>`;
    const out = rewriteHtml(html, on);
    assertEquals(out.links, [
      "https://shop.test/a?x=1&y=2",
      "http://shop.test/b",
      "https://shop.test/c",
      "https://shop.test/d",
    ], "the original URLs, entities decoded, by index");
    const hrefs = [...out.html.matchAll(/<a\b[^>]*?\shref\s*=\s*"([^"]*)"/gi)].map((m) => m[1]);
    assertEquals(hrefs.slice(0, 4).map(clickIndex), [0, 1, 2, 3], "each rewritten href is a signed click URL");
    assertEquals(hrefs.slice(4), ["mailto:x@shop.test", "tel:+1", "javascript:alert(1)", "/rel", URLS.unsubscribe]);
    assert(out.html.includes(`data-href="https://shop.test/not-a-link"`), "data-href is not an href");
    assert(out.html.includes(`title='href="https://shop.test/nor-this"'`), "an attribute's value is not an href");
    assert(out.html.includes(`<link href="https://shop.test/style.css">`), "only <a> links are rewritten");
    assert(out.html.includes(`<A CLASS=btn HREF="`), "the attribute's own spelling is kept");
    assertMatch(out.html, /<img src="https:\/\/t\.example\.test\/t\/o\/[^"]+"[^>]*\/><\/body><\/html>$/i);
  });

  await t.step("the pixel: before the first </body>, else at the end; switches off", () => {
    const px = `<img src="${URLS.open}" width="1" height="1" alt="" style="display:none" />`;
    assertEquals(rewriteHtml("<p>hi</p>", on).html, `<p>hi</p>${px}`);
    assertEquals(rewriteHtml("<body>x</body><body>y</body>", on).html, `<body>x${px}</body><body>y</body>`);
    const plain = `<a href="https://shop.test/">x</a></body>`;
    assertEquals(rewriteHtml(plain, { ...on, trackClicks: false, trackOpens: false }), { html: plain, links: [] });
    const opensOnly = rewriteHtml(plain, { ...on, trackClicks: false });
    assertEquals(opensOnly, { html: `<a href="https://shop.test/">x</a>${px}</body>`, links: [] });
  });

  await t.step("at most 500 links are tracked; the rest stay as written", () => {
    const html = Array.from({ length: 520 }, (_, i) => `<a href="https://shop.test/${i}">${i}</a>`).join("");
    const out = rewriteHtml(html, { ...on, trackOpens: false });
    assertEquals(out.links.length, 500);
    assertEquals(out.links[499], "https://shop.test/499");
    assert(out.html.endsWith(`<a href="https://shop.test/519">519</a>`));
  });

  await t.step("hostile HTML is rewritten in linear time", () => {
    const bombs = {
      "<a ×150,000": "<a ".repeat(150_000),
      "<a href= ×100,000": "<a href=".repeat(100_000),
      '<a href=" ×100,000': '<a href="'.repeat(100_000),
      "<a x ×150,000": "<a x ".repeat(150_000),
      "<a\\t ×150,000": "<a\t".repeat(150_000),
    };
    for (const [name, html] of Object.entries(bombs)) {
      const ms = timed(() => rewriteHtml(html, on));
      assert(ms < 300, `${name}: ${ms.toFixed(0)} ms`);
    }
  });
});

/** Polls `/healthz` and a REST read back to back until `stop()`; returns the slowest answer and the longest gap. */
function watchResponsiveness(stack: Stack, key: string, sendId: string) {
  let running = true;
  let slowest = 0;
  let longestGap = 0;
  let answers = 0;
  const loop = (async () => {
    let last = performance.now();
    while (running) {
      for (const path of ["/healthz", `/api/v1/sends/${sendId}`]) {
        const t0 = performance.now();
        const res = await fetch(stack.url + path, { headers: { "x-api-key": key } });
        await res.body?.cancel();
        assertEquals(res.status, 200, path);
        const now = performance.now();
        slowest = Math.max(slowest, now - t0);
        longestGap = Math.max(longestGap, now - last);
        last = now;
        answers++;
      }
      await new Promise((r) => setTimeout(r, 20));
    }
  })();
  return async () => {
    running = false;
    await loop;
    return { slowest, longestGap, answers };
  };
}

Deno.test("tracking: hostile template html, User-Agent, X-Forwarded-For", opts, async (t) => {
  const stack = await startStack({ env: { PP_TRUST_PROXY: "true" } });
  try {
    await t.step('a template html of "<a " × 150,000 is delivered, and the service answers within 1 s', async () => {
      const tenant = await stack.tenant({
        template: { html: "<a ".repeat(150_000), trackClicks: true, trackOpens: true },
      });
      // A first send warms everything up, so that what is measured is the hostile one.
      const warm = await stack.api("POST", "/api/v1/sends", {
        key: tenant.key,
        body: { templateId: tenant.templateId, to: "warm@example.test", trackClicks: false, trackOpens: false },
      });
      await waitForStatus(stack, tenant.key, warm.body.id, ["delivered"], 20_000);
      const sent = await stack.api("POST", "/api/v1/sends", {
        key: tenant.key,
        body: { templateId: tenant.templateId, to: "bomb@example.test", personalizations: { order_id: "B1" } },
      });
      assertEquals(sent.status, 202, JSON.stringify(sent.body));
      const stop = watchResponsiveness(stack, tenant.key, sent.body.id);
      let delivered;
      try {
        delivered = await waitForStatus(stack, tenant.key, sent.body.id, ["delivered", "failed"], 20_000);
      } finally {
        const r = await stop();
        assert(r.answers > 0);
        assert(r.slowest < 1000, `slowest answer while delivering: ${r.slowest.toFixed(0)} ms`);
        assert(r.longestGap < 1000, `longest gap between answers while delivering: ${r.longestGap.toFixed(0)} ms`);
      }
      assertEquals(delivered.status, "delivered", JSON.stringify(delivered.error));
      const mail = stack.sink.messages.find((m) => m.to.includes("bomb@example.test"));
      assert(mail, "the message reached the relay");
      assert(mail.html.startsWith("<a <a <a "), "the hostile html is sent as written");
      assertMatch(mail.html, /<img src="[^"]+\/t\/o\/[^"]+"[^>]*\/>$/, "with the open pixel at its end");
    });

    const tenant = await stack.tenant({
      domain: "ua.test",
      template: { html: "<html><body><p>Hi</p></body></html>", trackOpens: true },
    });
    const sent = await stack.api("POST", "/api/v1/sends", {
      key: tenant.key,
      body: { templateId: tenant.templateId, to: "reader@example.test", personalizations: { order_id: "U1" } },
    });
    await waitForStatus(stack, tenant.key, sent.body.id, ["delivered"], 10_000);
    const mail = stack.sink.messages.find((m) => m.to.includes("reader@example.test"))!;
    const pixel = mail.html.match(/<img src="([^"]+\/t\/o\/[^"]+)"/)![1];
    const opens = async () =>
      (await stack.pg.query(
        "select data from email_events where send_id = $1 and type = 'opened' order by id",
        [sent.body.id],
      )).rows.map((r) => r.data);

    await t.step("a 10 KB User-Agent is kept as its first 512 characters", async () => {
      const ua = "Mozilla/5.0 (X11; Linux x86_64) " + "A".repeat(10 * 1024);
      const res = await fetch(pixel, { headers: { "user-agent": ua, "x-forwarded-for": "198.51.100.20" } });
      assertEquals(res.status, 200);
      await res.body?.cancel();
      const [open] = await opens();
      assertEquals(open.userAgent.length, 512);
      assertEquals(open.userAgent, ua.slice(0, 512));
    });

    await t.step("behind the trusted proxy the address is the rightmost X-Forwarded-For hop", async () => {
      // The client wrote the first two hops (one of them in Apple's range); the proxy appended the last.
      const res = await fetch(pixel, {
        headers: { "user-agent": "Thunderbird/128.0", "x-forwarded-for": "17.58.0.1, 10.9.8.7,203.0.113.9" },
      });
      assertEquals(res.status, 200);
      await res.body?.cancel();
      const second = (await opens())[1];
      assertEquals(second.ip, "203.0.113.9");
      assertNotEquals(second.machineReason, "apple_mpp", "a forged Apple hop does not make the open Apple's");
    });
  } finally {
    await stack.stop();
  }
});

/** Whether a stream was accepted: a refused one answers its error at once, an accepted one stays silent. */
async function accepted(stream: SseStream): Promise<boolean> {
  try {
    const answer = (await stream.next(400)).data;
    return !answer?.errors;
  } catch {
    return true; // nothing within 400 ms: open, waiting for events
  }
}

Deno.test("live streams: 20 per key, and a revoked key's streams end", opts, async (t) => {
  const stack = await startStack({ env: { PP_LIVE_KEY_CHECK_MS: "500" } });
  const hub = liveEvents(stack.service.deps);
  const streams: SseStream[] = [];
  let otherStream: SseStream | null = null;
  try {
    const tenant = await stack.tenant();
    const sent = await stack.api("POST", "/api/v1/sends", {
      key: tenant.key,
      body: { templateId: tenant.templateId, to: "live@example.test", personalizations: { order_id: "L1" } },
    });
    const send = await waitForStatus(stack, tenant.key, sent.body.id, ["delivered"]);

    await t.step("the 21st open stream of one key is refused with rate_limited", async () => {
      for (let i = 0; i < 20; i++) {
        const s = await subscribe(stack, { sendId: send.id }, { key: tenant.key });
        assertEquals(s.status, 200);
        streams.push(s);
      }
      await waitFor(() => hub.subscriberCount === 20, 5000, "20 open streams");
      const extra = await subscribe(stack, { sendId: send.id }, { key: tenant.key });
      const answer = (await extra.next(5000)).data;
      extra.close();
      assertEquals(answer?.errors?.[0]?.extensions?.code, "rate_limited", JSON.stringify(answer));
      assertMatch(answer.errors[0].message, /at most 20 live event streams/);
      assertEquals(hub.subscriberCount, 20);
    });

    await t.step("the open streams still get their events", async () => {
      await insertEvents(stack.service.deps.db, [{
        send_id: send.id,
        contact_id: send.contactId,
        account_id: tenant.accountId,
        type: "opened",
        data: {},
      }]);
      for (const s of streams) {
        const got = (await s.next(5000)).data;
        assertEquals(got?.data?.sendEvents?.type, "OPENED", JSON.stringify(got));
      }
    });

    await t.step("another key of the same account opens its own, and a closed stream frees its slot", async () => {
      const other = await stack.gql(
        `mutation($i: CreateApiKeyInput!) { createApiKey(input: $i) { key } }`,
        { i: { accountId: tenant.accountId, mode: "LIVE" } },
        ADMIN_TOKEN,
      );
      otherStream = await subscribe(stack, { sendId: send.id }, { key: other.body.data.createApiKey.key });
      assert(await accepted(otherStream), "a second key has a limit of its own");
      streams.shift()!.close();
      await waitFor(() => hub.subscriberCount === 20, 5000, "the closed stream to be gone");
      const again = await subscribe(stack, { sendId: send.id }, { key: tenant.key });
      streams.push(again);
      assert(await accepted(again), "the freed slot takes a new stream");
    });

    await t.step("a revoked key's streams end with unauthorized within 60 s (here: a 500 ms re-check)", async () => {
      const revoked = await stack.gql(
        `mutation($id: ID!) { revokeApiKey(id: $id) { id } }`,
        { id: tenant.apiKeyId },
        ADMIN_TOKEN,
      );
      assertEquals(revoked.body.errors, undefined);
      const t0 = Date.now();
      const ends = await Promise.all(streams.map(async (s) => {
        const answer = (await s.next(60_000)).data;
        return {
          code: answer?.errors?.[0]?.extensions?.code,
          ended: ["complete", "end"].includes((await s.next(5000)).event),
        };
      }));
      const ms = Date.now() - t0;
      assert(ends.every((e) => e.code === "unauthorized" && e.ended), JSON.stringify(ends));
      assert(ms < 60_000, `the streams ended after ${ms} ms`);
      await waitFor(() => hub.subscriberCount === 1, 5000, "only the other key's stream to stay");
      assert(await accepted(otherStream!), "the other key's stream is still open");
    });
  } finally {
    for (const s of streams) s.close();
    (otherStream as { close(): void } | null)?.close();
    await stack.stop();
  }
});

/** Connects with `password` and answers `ok`, or the Postgres error code of the refusal. */
async function tryLogin(port: number, password: string): Promise<string> {
  const client = new pg.Client({ host: "127.0.0.1", port, user: "postgres", password, database: "postgres" });
  client.on("error", () => {});
  try {
    await client.connect();
    await client.query("select 1");
    await client.end();
    return "ok";
  } catch (err) {
    return String((err as { code?: string }).code ?? err);
  }
}

async function readSecrets(dir: string) {
  return JSON.parse(await Deno.readTextFile(`${dir}/secrets.json`));
}

Deno.test("embedded Postgres: a random password kept in secrets.json; old data dirs move to it", opts, async (t) => {
  const dir = await Deno.makeTempDir({ prefix: "pp-test-embedded-" });
  await Deno.chmod(dir, 0o755); // initdb runs as user postgres when we are root
  const port = freePort();
  let db: Awaited<ReturnType<typeof startEmbeddedPostgres>> | null = null;
  try {
    let password = "";
    await t.step("a new data dir gets a random password, saved owner-only, and postgres/postgres fails", async () => {
      db = await startEmbeddedPostgres(`${dir}/postgres`, port);
      password = decodeURIComponent(new URL(db.url).password);
      assertNotEquals(password, "postgres");
      assertMatch(password, /^[0-9A-Za-z]{40}$/);
      assertEquals((await readSecrets(dir)).postgresPassword, password);
      assertEquals((await Deno.stat(`${dir}/secrets.json`)).mode! & 0o777, 0o600);
      assertEquals(await tryLogin(port, password), "ok");
      assertEquals(await tryLogin(port, "postgres"), "28P01", "the old fixed password is refused");
    });

    await t.step("a restart keeps the password", async () => {
      await db!.stop();
      db = await startEmbeddedPostgres(`${dir}/postgres`, port);
      assertEquals(decodeURIComponent(new URL(db.url).password), password);
      assertEquals(await tryLogin(port, password), "ok");
    });

    await t.step("a data dir of an earlier version (postgres/postgres, no saved password) is moved over", async () => {
      // What an earlier version left: the role's password `postgres`, and a secrets.json without one.
      const client = new pg.Client({ connectionString: db!.url });
      await client.connect();
      await client.query("alter role postgres with password 'postgres'");
      await client.end();
      await db!.stop();
      db = null;
      const { postgresPassword: _, ...older } = await readSecrets(dir);
      await Deno.writeTextFile(`${dir}/secrets.json`, JSON.stringify({ ...older, adminToken: "ppadm_kept" }));

      db = await startEmbeddedPostgres(`${dir}/postgres`, port);
      const moved = decodeURIComponent(new URL(db.url).password);
      assertMatch(moved, /^[0-9A-Za-z]{40}$/);
      assertNotEquals(moved, password);
      const saved = await readSecrets(dir);
      assertEquals(saved.postgresPassword, moved);
      assertEquals(saved.adminToken, "ppadm_kept", "the other secrets are kept");
      assertEquals((await Deno.stat(`${dir}/secrets.json`)).mode! & 0o777, 0o600);
      assertEquals(await tryLogin(port, moved), "ok");
      assertEquals(await tryLogin(port, "postgres"), "28P01", "the old fixed password no longer works");
    });
  } finally {
    await (db as { stop(): Promise<void> } | null)?.stop();
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  }
});

Deno.test(
  "local hygiene: outbox files are 0600; unknown keys never push known ones out of the key cache",
  opts,
  async (t) => {
    const stack = await startStack({ smtp: false });
    try {
      const tenant = await stack.tenant();

      await t.step("an outbox message is readable by its owner only", async () => {
        const sent = await stack.api("POST", "/api/v1/sends", {
          key: tenant.key,
          body: { templateId: tenant.templateId, to: "outbox@example.test", personalizations: { order_id: "O1" } },
        });
        await waitForStatus(stack, tenant.key, sent.body.id, ["delivered"], 10_000);
        const file = `${stack.dataDir}/outbox/${sent.body.id}.eml`;
        assertEquals((await Deno.stat(file)).mode! & 0o777, 0o600);
      });

      await t.step("a known key stays cached through a flood of 10,500 unknown keys", async () => {
        const deps = stack.service.deps;
        const withKey = (key: string) => new Headers({ "x-api-key": key });
        const known = await authenticate(deps, withKey(tenant.key));
        assertEquals(known?.kind, "tenant");
        // Revoked by a write that announces nothing (triggers off, as a restored dump would
        // write): only the cache still knows the key, so it authenticates exactly as long as its
        // cache entry lives. (An announced revoke drops it at once: caches_test.ts.)
        const client = await stack.pg.connect();
        try {
          await client.query("begin");
          await client.query("set local session_replication_role = replica");
          await client.query("update api_keys set revoked_at = now() where id = $1", [tenant.apiKeyId]);
          await client.query("commit");
        } finally {
          client.release();
        }
        const t0 = Date.now();
        assertEquals((await authenticate(deps, withKey(tenant.key)))?.kind, "tenant", "answered from the cache");
        const unknown = Array.from({ length: 10_500 }, () => `pp_live_${crypto.randomUUID().replaceAll("-", "")}00`);
        for (let i = 0; i < unknown.length; i += 50) {
          const refused = await Promise.all(
            unknown.slice(i, i + 50).map((k) => authenticate(deps, withKey(k)).then(() => "accepted", (e) => e.code)),
          );
          assert(refused.every((c) => c === "unauthorized"));
        }
        assert(
          Date.now() - t0 < ACCOUNT_CACHE_MS - 5_000,
          "the flood ran within the cache's lifetime (else this test proves nothing)",
        );
        assertEquals((await authenticate(deps, withKey(tenant.key)))?.kind, "tenant", "still cached: not evicted");
      });
    } finally {
      await stack.stop();
    }
  },
);
