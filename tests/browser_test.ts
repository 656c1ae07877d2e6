/**
 * A real browser: Debian's Chromium (`/usr/bin/chromium`, installed by .ci/run) driven by
 * puppeteer-core. GraphiQL loads with every request on the service's own origin and no CSP
 * error, and a query typed in it with an `X-API-Key` header returns the account; `/docs` loads
 * the same way and shows every operation of openapi.json.
 *
 * Two records of where a page went: every request it makes (puppeteer's `request` events), and
 * a proxy that the pages' browser context sends everything not for loopback to, which records
 * and refuses it (so a worker's fetch, which the page's events do not show, is caught too). A
 * browser that cannot be launched fails the test. Screenshots of failures go to a temp folder
 * whose path is printed.
 */
import puppeteer, { type Browser, type Page } from "puppeteer-core";
import { assert, assertEquals, assertMatch } from "./assert.ts";
import { opts, startStack } from "./helpers.ts";

const CHROMIUM = "/usr/bin/chromium";

/** A proxy that records the first line of every request sent to it and answers 403. */
interface RefusingProxy {
  port: number;
  /** `CONNECT host:443 HTTP/1.1`, `GET http://host/path HTTP/1.1`, … */
  seen: string[];
  close(): void;
}

function startRefusingProxy(): RefusingProxy {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const seen: string[] = [];
  const refuse = new TextEncoder().encode("HTTP/1.1 403 Forbidden\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
  (async () => {
    for await (const conn of listener) {
      (async () => {
        try {
          const buf = new Uint8Array(8192);
          const n = await conn.read(buf);
          if (n) seen.push(new TextDecoder().decode(buf.subarray(0, n)).split("\r\n")[0]!);
          await conn.write(refuse);
        } catch { /* the browser hung up */ }
        try {
          conn.close();
        } catch { /* closed already */ }
      })();
    }
  })().catch(() => {});
  return { port: listener.addr.port, seen, close: () => listener.close() };
}

/** A Chromium with its proxy, a fresh profile and a folder for failure screenshots. */
interface TestBrowser {
  browser: Browser;
  proxy: RefusingProxy;
  /** A page whose requests, console errors and CSP violations are recorded from the start. */
  newTab(): Promise<Tab>;
  /** Saves a screenshot of `tab` as `<name>.png` in the failure folder and prints its path. */
  screenshot(tab: Tab, name: string): Promise<void>;
  close(): Promise<void>;
}

interface Tab {
  page: Page;
  /** Every request the page made, by URL, in order (also data: and blob: ones). */
  requests: string[];
  /** Console errors, uncaught exceptions and CSP violations. */
  errors: string[];
  /** What reached the proxy (shared by the browser's tabs): anything that was not for loopback. */
  proxied: string[];
}

async function launchBrowser(): Promise<TestBrowser> {
  const stat = await Deno.stat(CHROMIUM).catch(() => null);
  if (!stat?.isFile) {
    throw new Error(`no Chromium at ${CHROMIUM}: .ci/run installs it (apt-get install -y chromium)`);
  }
  const profile = await Deno.makeTempDir({ prefix: "pp-chromium-profile-" });
  const proxy = startRefusingProxy();
  let browser: Browser;
  try {
    browser = await puppeteer.launch({
      executablePath: CHROMIUM,
      headless: true,
      userDataDir: profile,
      args: [
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        // Autofill would ask Google about the page's inputs (through the pages' proxy).
        "--disable-features=AutofillServerCommunication",
      ],
    });
  } catch (err) {
    proxy.close();
    await Deno.remove(profile, { recursive: true }).catch(() => {});
    throw new Error(`Chromium (${CHROMIUM}) could not be launched`, { cause: err });
  }
  let shots: string | null = null;
  return {
    browser,
    proxy,
    async newTab() {
      // The pages' own context: loopback goes direct (Chromium's implicit bypass), anything else
      // to the proxy. The browser's own services (updates, accounts) stay outside it.
      const context = await browser.createBrowserContext({ proxyServer: `http://127.0.0.1:${proxy.port}` });
      const page = await context.newPage();
      page.setDefaultTimeout(20_000);
      await page.setViewport({ width: 1280, height: 900 });
      const tab: Tab = { page, requests: [], errors: [], proxied: proxy.seen };
      page.on("request", (r) => tab.requests.push(r.url()));
      page.on("console", (m) => {
        if (m.type() === "error") tab.errors.push(m.text());
      });
      page.on("pageerror", (e) => tab.errors.push(`uncaught: ${e instanceof Error ? e.message : String(e)}`));
      // Injected by the debugger, not by the page: the page's CSP does not apply to it.
      await page.evaluateOnNewDocument(() => {
        document.addEventListener("securitypolicyviolation", (e) => {
          console.error(`Content-Security-Policy violation: ${e.violatedDirective} blocked ${e.blockedURI}`);
        });
      });
      return tab;
    },
    async screenshot(tab, name) {
      shots ??= await Deno.makeTempDir({ prefix: "pp-browser-failures-" });
      const path = `${shots}/${name}.png`;
      await tab.page.screenshot({ path }).catch((err) => console.error(`screenshot failed: ${err}`));
      await Deno.writeTextFile(`${shots}/${name}.requests.txt`, tab.requests.join("\n") + "\n");
      console.error(`browser_test: screenshot of the failure in ${path}`);
    },
    async close() {
      await browser.close().catch(() => {});
      proxy.close();
      await Deno.remove(profile, { recursive: true }).catch(() => {});
    },
  };
}

/**
 * Opens `url` in `tab`, waits until the network has been idle for half a second, and asserts
 * that every request of the page was on `url`'s origin (a `data:` URL counts as elsewhere), that
 * none reached the proxy (nothing left loopback, from the page or its workers), and that no
 * console error is about the Content-Security-Policy. Answers the page's response (for its
 * headers). For any page the service serves to browsers: GraphiQL, and `/docs`.
 */
async function assertSameOrigin(tab: Tab, url: string) {
  const origin = new URL(url).origin;
  const proxiedBefore = tab.proxied.length;
  const response = await tab.page.goto(url, { waitUntil: "networkidle0" });
  assert(response, `no response for ${url}`);
  assertEquals(response.status(), 200, `GET ${url}`);
  await tab.page.waitForNetworkIdle({ idleTime: 500 });
  const elsewhere = tab.requests.filter((r) => {
    try {
      return new URL(r).origin !== origin;
    } catch {
      return true;
    }
  });
  assertEquals(elsewhere, [], `requests off ${origin}`);
  assertEquals(tab.proxied.slice(proxiedBefore), [], "requests that left loopback (seen by the proxy)");
  const csp = tab.errors.filter((e) => /content.security.policy|\bCSP\b/i.test(e));
  assertEquals(csp, [], `CSP errors (all console errors: ${JSON.stringify(tab.errors)})`);
  return response;
}

/** The text of the Monaco editor under `selector`, its lines in the order they are shown. */
function editorText(page: Page, selector: string): Promise<string> {
  return page.$eval(selector, (root) =>
    [...root.querySelectorAll<HTMLElement>(".view-line")]
      .sort((a, b) => parseFloat(a.style.top) - parseFloat(b.style.top))
      .map((line) => (line.textContent ?? "").replace(/\u00a0/g, " "))
      .join("\n"));
}

/** Clicks into the Monaco editor under `selector`, selects all and types `text` over it. */
async function typeInto(page: Page, selector: string, text: string) {
  await page.click(`${selector} .view-lines`);
  await page.keyboard.down("Control");
  await page.keyboard.press("KeyA");
  await page.keyboard.up("Control");
  await page.keyboard.press("Backspace");
  // Key by key with a pause, as a person types: typed at once, a loaded machine's Monaco can
  // drop the space before an auto-closed brace it types over.
  await page.keyboard.type(text, { delay: 15 });
}

const QUERY_EDITOR = ".graphiql-query-editor";
const HEADERS_EDITOR = ".graphiql-editor-tool .graphiql-editor:not(.hidden)";
const RESPONSE = ".graphiql-response";

Deno.test(
  "browser: GraphiQL from our own origin only; a query typed with an API key returns the account",
  opts,
  async (t) => {
    const stack = await startStack({ smtp: false });
    let b: TestBrowser | null = null;
    try {
      b = await launchBrowser();
      const browser = b;
      const tenant = await stack.tenant();
      const tab = await browser.newTab();
      const { page } = tab;
      /** Runs a step's checks; on failure, a screenshot first. */
      const shootOnFailure = (name: string, fn: () => Promise<void>) => async () => {
        try {
          await fn();
        } catch (err) {
          await browser.screenshot(tab, name);
          throw err;
        }
      };

      await t.step(
        "GraphiQL loads: every request on our origin (scripts, styles, fonts, workers), a CSP that says so",
        shootOnFailure("graphiql-load", async () => {
          const response = await assertSameOrigin(tab, `${stack.url}/graphql`);
          const csp = response.headers()["content-security-policy"] ?? "";
          assertMatch(csp, /(^|; )default-src 'self'(;|$)/);
          assertMatch(csp, /(^|; )script-src 'self'(;|$)/);
          assert(!/https?:|\*|data:|blob:|unsafe-eval/.test(csp), `no other origin, data:, blob: or eval: ${csp}`);
          await page.waitForSelector(`.graphiql-container ${QUERY_EDITOR} .view-lines`);
          const assets = tab.requests.map((r) => new URL(r).pathname).filter((p) => p.startsWith("/graphql/assets/"));
          assert(assets.some((p) => p.endsWith(".css")), `a stylesheet: ${assets}`);
          assert(assets.some((p) => /\.(woff2?|ttf)$/.test(p)), `a font: ${assets}`);
          for (const worker of ["editor.worker", "json.worker", "graphql.worker"]) {
            assert(assets.some((p) => p.includes(worker)), `the ${worker}: ${assets}`);
          }
          // The default query asks for the account; the headers editor shows where the key goes.
          assertMatch(await editorText(page, QUERY_EDITOR), /account\s*\{\s*id\s+name\s*\}/);
          assertMatch(await editorText(page, HEADERS_EDITOR), /"X-API-Key"\s*:\s*"pp_test_/);
        }),
      );

      await t.step(
        "a query typed with an X-API-Key header returns the account",
        shootOnFailure("graphiql-query", async () => {
          const headers = JSON.stringify({ "X-API-Key": tenant.key });
          await typeInto(page, HEADERS_EDITOR, headers);
          assertEquals(await editorText(page, HEADERS_EDITOR), headers);
          const query = "{ account { id name } }";
          await typeInto(page, QUERY_EDITOR, query);
          // Whitespace aside: Monaco's auto-closed braces may space them its own way.
          assertEquals((await editorText(page, QUERY_EDITOR)).replace(/\s+/g, ""), query.replace(/\s+/g, ""));
          await page.click(".graphiql-execute-button");
          await page.waitForFunction(
            (selector, id) => document.querySelector(selector)?.textContent?.includes(id),
            {},
            RESPONSE,
            tenant.accountId,
          );
          assertEquals(JSON.parse(await editorText(page, RESPONSE)), {
            data: { account: { id: tenant.accountId, name: "Test shop" } },
          });
          assertEquals(tab.proxied, [], "nothing left loopback");
          const csp = tab.errors.filter((e) => /content.security.policy/i.test(e));
          assertEquals(csp, [], "no CSP errors while typing and running");
        }),
      );

      await t.step(
        "/docs loads from our origin only and shows every operation of /api/v1/openapi.json",
        async () => {
          // A tab of its own: GraphiQL's may still hold connections open, and "network idle" would wait for them.
          const docsTab = await browser.newTab();
          try {
            const page = docsTab.page;
            const response = await assertSameOrigin(docsTab, `${stack.url}/docs`);
            assertMatch(response.headers()["content-security-policy"] ?? "", /(^|; )script-src 'self'(;|$)/);
            await page.waitForSelector(".opblock .opblock-summary-path");
            const shown = await page.$$eval(
              ".opblock",
              (blocks) =>
                blocks.map((b) =>
                  `${b.querySelector(".opblock-summary-method")?.textContent} ${
                    b.querySelector(".opblock-summary-path")?.getAttribute("data-path")
                  }`
                ),
            );
            const doc = await (await fetch(`${stack.url}/api/v1/openapi.json`)).json();
            const operations = Object.entries<Record<string, unknown>>(doc.paths)
              .flatMap(([path, ops]) => Object.keys(ops).map((method) => `${method.toUpperCase()} ${path}`));
            assertEquals(shown.sort(), operations.sort());
            const assets = docsTab.requests.map((r) => new URL(r).pathname).filter((p) =>
              p.startsWith("/docs/assets/")
            );
            assert(assets.some((p) => p.endsWith(".css")) && assets.some((p) => p.endsWith(".js")), `${assets}`);
          } catch (err) {
            await browser.screenshot(docsTab, "docs-load");
            throw err;
          }
        },
      );
    } finally {
      await b?.close();
      await stack.stop();
    }
  },
);
