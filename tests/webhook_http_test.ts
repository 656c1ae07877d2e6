/**
 * The webhook POST client (src/webhooks/http.ts) against fetch: the same servers see the same
 * requests from both and give both the same answers (status, the kept start of the body);
 * then what fetch hid from us and the client must do itself: keep-alive, framing without a
 * length, interim answers, a server that closed an idle connection, a reset, a timeout,
 * https.
 */
import { assert, assertEquals, assertRejects } from "./assert.ts";
import { opts } from "./helpers.ts";
import { HttpTimeout, PostClient } from "../src/webhooks/http.ts";

const KEEP = 1024;
const body = new TextEncoder().encode(JSON.stringify({ type: "email.sent", data: { to: "ünïcode@example.com" } }));
const headers = { "content-type": "application/json", "webhook-id": "msg_1", "webhook-signature": "v1,abc=" };
const text = (b: Uint8Array) => new TextDecoder().decode(b);

/** What a server saw of a request. */
interface Seen {
  method: string;
  path: string;
  headers: Record<string, string>;
  body: string;
  port: number;
}

/** A Deno.serve server answering by path; `seen` lists the requests. */
function serve(answer: (path: string) => Response | Promise<Response>, tls?: { cert: string; key: string }) {
  const seen: Seen[] = [];
  const server = Deno.serve({ port: 0, hostname: "127.0.0.1", onListen: () => {}, ...tls }, async (req, info) => {
    const url = new URL(req.url);
    seen.push({
      method: req.method,
      path: url.pathname + url.search,
      headers: Object.fromEntries(req.headers),
      body: await req.text(),
      port: info.remoteAddr.port,
    });
    return answer(url.pathname);
  });
  return { seen, port: server.addr.port, close: () => server.shutdown() };
}

/** A raw TCP server: `handle` gets each connection (the request bytes read by it). */
function rawServer(handle: (conn: Deno.Conn, n: number) => Promise<void>) {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  let connections = 0;
  (async () => {
    for await (const conn of listener) void handle(conn, ++connections).catch(() => {}).finally(() => close(conn));
  })().catch(() => {});
  return { port: (listener.addr as Deno.NetAddr).port, connections: () => connections, close: () => listener.close() };
}

function close(conn: Deno.Conn) {
  try {
    conn.close();
  } catch { /* closed */ }
}

/** Reads one request (head and Content-Length body) from a raw connection; null at its end. */
async function readRequest(conn: Deno.Conn): Promise<string | null> {
  const buf = new Uint8Array(64 * 1024);
  let n = 0;
  for (;;) {
    const got = await conn.read(buf.subarray(n));
    if (got === null) return null;
    n += got;
    const s = new TextDecoder().decode(buf.subarray(0, n));
    const end = s.indexOf("\r\n\r\n");
    if (end >= 0 && n >= end + 4 + Number(/content-length: (\d+)/i.exec(s)?.[1] ?? 0)) return s;
  }
}

const write = (conn: Deno.Conn, s: string) => conn.write(new TextEncoder().encode(s));
const target = (port: number, path = "/hooks?x=1", scheme = "http") => ({
  address: "127.0.0.1",
  port,
  url: new URL(`${scheme}://localhost:${port}${path}`),
});

/** What fetch gets: the status and the first KEEP bytes, never following a redirect. */
async function viaFetch(url: URL, client?: Deno.HttpClient) {
  const res = await fetch(url, { method: "POST", headers, body, redirect: "manual", client });
  return { status: res.status, body: new Uint8Array(await res.arrayBuffer()).slice(0, KEEP) };
}

Deno.test(
  "webhook client: a server sees the same request from it as from fetch, and both get the same answers",
  opts,
  async () => {
    const long = "x".repeat(5000);
    const s = serve((path) => {
      if (path === "/created") return new Response("made it", { status: 201 });
      if (path === "/empty") return new Response(null, { status: 204 });
      if (path === "/moved") return new Response(null, { status: 302, headers: { location: "/elsewhere" } });
      if (path === "/long") return new Response(long, { status: 500 });
      // A streamed body: no Content-Length, chunked.
      return new Response(
        ReadableStream.from([new TextEncoder().encode("chunk one, "), new TextEncoder().encode("two")]),
      );
    });
    const client = new PostClient();
    try {
      for (const path of ["/created", "/empty", "/moved", "/long", "/stream"]) {
        const theirs = await viaFetch(new URL(`http://localhost:${s.port}${path}?x=1`));
        const ours = await client.post(target(s.port, `${path}?x=1`), headers, body, { timeoutMs: 5000, keep: KEEP });
        assertEquals(ours.status, theirs.status, path);
        assertEquals(text(ours.body), text(theirs.body), path);
      }
      assertEquals(s.seen.length, 10);
      for (let i = 0; i < s.seen.length; i += 2) {
        const [f, o] = [s.seen[i], s.seen[i + 1]];
        assertEquals([o.method, o.path, o.body], [f.method, f.path, f.body]);
        for (const name of ["host", "content-type", "content-length", "webhook-id", "webhook-signature"]) {
          assertEquals(o.headers[name], f.headers[name], name);
        }
      }
      assertEquals(
        text((await client.post(target(s.port, "/long"), headers, body, { timeoutMs: 5000, keep: KEEP })).body),
        long.slice(0, KEEP),
      );
      // Every answer above was read to its end: one connection carried all of ours.
      assertEquals(new Set(s.seen.filter((_, i) => i % 2 === 1).map((r) => r.port)).size, 1);
    } finally {
      client.close();
      await s.close();
    }
  },
);

Deno.test(
  "webhook client: framing fetch handled — no length, Connection: close, 100 Continue, a body too long to drain",
  opts,
  async () => {
    const answers = [
      "HTTP/1.1 200 OK\r\n\r\nuntil the end", // no length: the body ends with the connection
      "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 202 Accepted\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok",
      `HTTP/1.1 200 OK\r\nContent-Length: ${1 << 20}\r\n\r\n${"y".repeat(4096)}`, // 1 MB said, 4 KB sent, then nothing
    ];
    const server = rawServer(async (conn, n) => {
      if (await readRequest(conn) === null) return;
      await write(conn, answers[n - 1]);
      if (n === 3) await new Promise((r) => setTimeout(r, 2000)); // the rest never comes
    });
    const client = new PostClient();
    try {
      const a = await client.post(target(server.port), headers, body, { timeoutMs: 3000, keep: KEEP });
      assertEquals([a.status, text(a.body)], [200, "until the end"]);
      const b = await client.post(target(server.port), headers, body, { timeoutMs: 3000, keep: KEEP });
      assertEquals([b.status, text(b.body)], [202, "ok"]);
      const t0 = performance.now();
      const c = await client.post(target(server.port), headers, body, { timeoutMs: 3000, keep: KEEP });
      assertEquals([c.status, c.body.length], [200, KEEP]);
      assert(performance.now() - t0 < 1500, "the kept start is enough: the rest is not waited for");
      // None of the three connections could be reused.
      assertEquals(server.connections(), 3);
    } finally {
      client.close();
      server.close();
    }
  },
);

Deno.test(
  "webhook client: an idle connection the server closed is replaced once; a reset mid-answer and a timeout are not retried",
  opts,
  async () => {
    let requests = 0;
    const server = rawServer(async (conn, n) => {
      if (await readRequest(conn) === null) return;
      requests++;
      if (n === 1) {
        // Answered, then hung up while the connection sat idle in the client's pool.
        await write(conn, "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
        return;
      }
      if (n === 2) return void await write(conn, "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
      if (n === 3) return void await write(conn, "HTTP/1.1 500 Oops\r\nContent-Length: 100\r\n\r\npart"); // then closed
      await new Promise((r) => setTimeout(r, 3000)); // n = 4: no answer
    });
    const client = new PostClient();
    try {
      assertEquals(
        (await client.post(target(server.port), headers, body, { timeoutMs: 2000, keep: KEEP })).status,
        200,
      );
      await new Promise((r) => setTimeout(r, 100)); // the server's close reaches us
      assertEquals(
        (await client.post(target(server.port), headers, body, { timeoutMs: 2000, keep: KEEP })).status,
        200,
      );
      assertEquals([requests, server.connections()], [2, 2]);
      await assertRejects(() => client.post(target(server.port), headers, body, { timeoutMs: 2000, keep: KEEP }));
      assertEquals(requests, 3);
      const t0 = performance.now();
      await assertRejects(
        () => client.post(target(server.port), headers, body, { timeoutMs: 500, keep: KEEP }),
        HttpTimeout,
      );
      const took = performance.now() - t0;
      assert(took >= 450 && took < 1500, `timed out after ${took} ms`);
      await new Promise((r) => setTimeout(r, 200));
      assertEquals(requests, 4);
    } finally {
      client.close();
      server.close();
    }
  },
);

Deno.test(
  "webhook client: https to the URL's host over the pinned address, certificate checked like fetch",
  opts,
  async () => {
    const dir = await Deno.makeTempDir();
    // A CA of the test's own, and a certificate it signed for hooks.test and localhost.
    const openssl = async (...args: string[]) =>
      assert((await new Deno.Command("openssl", { args, cwd: dir, stderr: "null" }).output()).success, args.join(" "));
    await Deno.writeTextFile(`${dir}/san.ext`, "subjectAltName=DNS:hooks.test,DNS:localhost\n");
    await openssl(
      "req",
      "-x509",
      "-newkey",
      "rsa:2048",
      "-nodes",
      "-days",
      "1",
      "-subj",
      "/CN=test CA",
      "-keyout",
      "ca.key",
      "-out",
      "ca.pem",
    );
    await openssl(
      "req",
      "-newkey",
      "rsa:2048",
      "-nodes",
      "-subj",
      "/CN=hooks.test",
      "-keyout",
      "key.pem",
      "-out",
      "leaf.csr",
    );
    await openssl(
      "x509",
      "-req",
      "-in",
      "leaf.csr",
      "-CA",
      "ca.pem",
      "-CAkey",
      "ca.key",
      "-CAcreateserial",
      "-days",
      "1",
      "-extfile",
      "san.ext",
      "-out",
      "cert.pem",
    );
    const [ca, cert, key] = await Promise.all(
      ["ca.pem", "cert.pem", "key.pem"].map((f) => Deno.readTextFile(`${dir}/${f}`)),
    );
    const s = serve(() => new Response("secure", { status: 200 }), { cert, key });
    const ours = new PostClient({ caCerts: [ca] });
    // (fetch pinned to an address, through a `tcp` proxy transport as the dispatcher used to, sends
    // an https URL's request in plain text: its answer is not HTTP. So fetch resolves the name here.)
    const theirs = Deno.createHttpClient({ caCerts: [ca] });
    const at = (host: string) => ({
      address: "127.0.0.1",
      port: s.port,
      url: new URL(`https://${host}:${s.port}/hooks`),
    });
    try {
      const f = await viaFetch(new URL(`https://localhost:${s.port}/hooks`), theirs);
      const o = await ours.post(at("hooks.test"), headers, body, { timeoutMs: 5000, keep: KEEP });
      assertEquals([o.status, text(o.body)], [f.status, text(f.body)]);
      assertEquals([o.status, text(o.body)], [200, "secure"]);
      assertEquals(s.seen[1].headers.host, `hooks.test:${s.port}`);
      // A name the certificate does not carry is refused, and so is a certificate no CA vouches for.
      await assertRejects(() => ours.post(at("other.test"), headers, body, { timeoutMs: 5000, keep: KEEP }));
      await assertRejects(() =>
        new PostClient().post(at("hooks.test"), headers, body, { timeoutMs: 5000, keep: KEEP })
      );
      assertEquals(s.seen.length, 2);
    } finally {
      ours.close();
      theirs.close();
      await s.close();
      await Deno.remove(dir, { recursive: true });
    }
  },
);

Deno.test(
  "webhook client: a chunked body of many small chunks across its read buffer is read to its end",
  opts,
  async () => {
    // Chunk sizes 1..13 in turn: size lines and CRLFs fall on every offset of the 4 KB buffer.
    const chunks = Array.from({ length: 3_000 }, (_, i) => "x".repeat(1 + (i % 13)) + String(i % 10));
    const s = serve(() => new Response(ReadableStream.from(chunks.map((c) => new TextEncoder().encode(c)))));
    const client = new PostClient();
    try {
      const whole = chunks.join("");
      for (let i = 0; i < 3; i++) {
        const a = await client.post(target(s.port), headers, body, { timeoutMs: 5000, keep: KEEP });
        assertEquals([a.status, text(a.body)], [200, whole.slice(0, KEEP)]);
      }
      // Each answer was read to its end (under DRAIN_MAX): one connection carried the three.
      assertEquals(new Set(s.seen.map((r) => r.port)).size, 1);
    } finally {
      client.close();
      await s.close();
    }
  },
);

Deno.test("webhook client: a hostile answer is refused at once, not read for the whole timeout", opts, async () => {
  const answers = [
    "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + "-5\r\n".repeat(10_000),
    "HTTP/1.1 100 Continue\r\n\r\n".repeat(1_000) + "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
    "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n" + "X-Trailer: y\r\n".repeat(10_000),
    `HTTP/1.1 200 OK\r\nX-Long: ${"z".repeat(20_000)}\r\n\r\n`,
  ];
  const server = rawServer(async (conn, n) => {
    if (await readRequest(conn) === null) return;
    await write(conn, answers[n - 1]);
    await new Promise((r) => setTimeout(r, 3000)); // and the connection stays open
  });
  const client = new PostClient();
  try {
    for (
      const [i, says] of ["size is not valid", "interim answers", "trailers are over", "headers are over"].entries()
    ) {
      const t0 = performance.now();
      await assertRejects(
        () => client.post(target(server.port), headers, body, { timeoutMs: 3000, keep: KEEP }),
        Error,
        says,
      );
      assert(performance.now() - t0 < 1000, `answer ${i + 1} refused at once`);
    }
  } finally {
    client.close();
    server.close();
  }
});

Deno.test("webhook client: a header value with CR or LF is refused before anything is sent", opts, async () => {
  const client = new PostClient();
  await assertRejects(
    () => client.post(target(1), { "x-evil": "a\r\nInjected: yes" }, body, { timeoutMs: 1000, keep: KEEP }),
    Error,
    "not valid",
  );
  client.close();
});
