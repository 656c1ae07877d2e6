/**
 * The HTTP/1.1 client webhook POSTs go out on: keep-alive connections over Deno.connect (and
 * Deno.startTls for https), pinned to an address the caller checked (address.ts), reading
 * only the start of an answer.
 *
 * Why not `fetch`: a POST through it cost 87–100 µs of CPU (its Request, Headers, streams and
 * abort signal, and their garbage), against 31–36 µs written and read here (20,000 POSTs, 200
 * in flight, to the bench's receiver); a webhook's POST was a quarter of its cost. What this
 * does is the small part of HTTP/1.1 a webhook needs, and tests/webhook_http_test.ts holds it
 * to what fetch gets from the same servers.
 *
 * The contract:
 * - One request per connection at a time; a connection is reused only after an answer whose
 *   end was read (Content-Length or chunked, within DRAIN_MAX) and that did not say
 *   `Connection: close`. Idle connections are dropped after IDLE_MS (servers often close
 *   theirs at 5 s).
 * - Redirects are answers like any other (never followed); 1xx interim answers are skipped.
 * - `timeoutMs` bounds everything (connect, TLS, request, the answer's head and kept body):
 *   the connection is closed and the promise rejects with HttpTimeout.
 * - A reused connection that ends or resets before a byte of the answer came (the server
 *   closed it while it sat idle) is retried once on a new one; nothing else is retried.
 */

/** Where a POST goes: the checked address to connect to, and the URL it stands for. */
export interface PostTarget {
  /** The IP address to connect to (checked by the caller). */
  address: string;
  port: number;
  /** https: TLS to `url.hostname` (SNI and certificate check), over the connection to `address`. */
  url: URL;
}

/** What came back: the status and at most `keep` bytes of the body. */
export interface PostAnswer {
  status: number;
  body: Uint8Array;
}

/** The POST took longer than its timeout. */
export class HttpTimeout extends Error {
  constructor(ms: number) {
    super(`no answer within ${ms} ms`);
  }
}

/** Idle connections older than this are closed rather than reused. */
const IDLE_MS = 4_000;
/** Idle connections kept per target at most. */
const MAX_IDLE = 256;
/** A body longer than this after the kept bytes is not read to its end: the connection is closed instead. */
const DRAIN_MAX = 64 * 1024;
/** An answer's status line and headers, at most. */
const MAX_HEAD = 16 * 1024;

const encoder = new TextEncoder();
const latin1 = new TextDecoder("latin1");
const CRLF = [13, 10];
const CRLFCRLF = [13, 10, 13, 10];
/** Interim (1xx) answers skipped before the answer, at most. */
const MAX_INTERIM = 8;

/** A connection, and the buffer its answers are read into (kept with it: one per POST was garbage). */
interface Conn {
  conn: Deno.Conn;
  buf: Uint8Array;
  idleSince: number;
  reused: boolean;
}

/** The reader of one answer on one connection. */
class Reader {
  #buf: Uint8Array;
  #start = 0;
  #end = 0;
  /** Bytes of the answer received so far (0: the server said nothing yet). */
  received = 0;
  constructor(private readonly c: Conn) {
    this.#buf = c.buf;
  }

  /** Reads more; false at the end of the stream. */
  async #fill(): Promise<boolean> {
    if (this.#start > 0 && this.#start === this.#end) this.#start = this.#end = 0;
    if (this.#end === this.#buf.length) {
      // Full: move what is unread to the front, into a buffer twice as large if it is over half.
      const live = this.#end - this.#start;
      if (live * 2 > this.#buf.length) {
        const next = new Uint8Array(this.#buf.length * 2);
        next.set(this.#buf.subarray(this.#start, this.#end));
        this.#buf = this.c.buf = next;
      } else this.#buf.copyWithin(0, this.#start, this.#end);
      this.#start = 0;
      this.#end = live;
    }
    const n = await this.c.conn.read(this.#buf.subarray(this.#end));
    if (n === null) return false;
    this.#end += n;
    this.received += n;
    return true;
  }

  /** The bytes up to and including the next CRLF CRLF (an answer's head), as latin1. */
  async head(): Promise<string> {
    return latin1.decode(await this.#until(CRLFCRLF, `the answer's headers are over ${MAX_HEAD} bytes`, true));
  }

  /** One CRLF-ended line (a chunk's size line, a trailer), without the CRLF. */
  async line(): Promise<string> {
    return latin1.decode(await this.#until(CRLF, "a chunked body's line is too long", false));
  }

  /**
   * The bytes up to `end` (with it when `keepEnd`), at most MAX_HEAD of them. What was searched
   * already is counted from `#start`: a fill may move the unread bytes to the front.
   */
  async #until(end: number[], tooLong: string, keepEnd: boolean): Promise<Uint8Array> {
    for (let searched = 0;;) {
      const at = indexOf(this.#buf, end, this.#start + searched, this.#end);
      if (at - this.#start > MAX_HEAD || (at < 0 && this.#end - this.#start > MAX_HEAD)) throw new Error(tooLong);
      if (at >= 0) {
        const bytes = this.#buf.subarray(this.#start, keepEnd ? at + end.length : at);
        this.#start = at + end.length;
        return bytes;
      }
      searched = Math.max(0, this.#end - this.#start - (end.length - 1));
      if (!await this.#fill()) throw new ConnectionEnded();
    }
  }

  /**
   * Up to `n` bytes (fewer only at the end of the stream), handed to `sink` as they come
   * (views valid during the call).
   */
  async take(n: number, sink: (b: Uint8Array) => void): Promise<number> {
    let got = 0;
    while (got < n) {
      if (this.#start === this.#end && !await this.#fill()) break;
      const k = Math.min(n - got, this.#end - this.#start);
      sink(this.#buf.subarray(this.#start, this.#start + k));
      this.#start += k;
      got += k;
    }
    return got;
  }

  /** Whether bytes past the answer were read (a server that sent more than it said). */
  get leftover(): boolean {
    return this.#end > this.#start;
  }
}

class ConnectionEnded extends Error {
  constructor() {
    super("the connection was closed before the answer ended");
  }
}

function indexOf(buf: Uint8Array, pat: number[], from: number, end: number): number {
  outer: for (let i = from; i <= end - pat.length; i++) {
    for (let j = 0; j < pat.length; j++) if (buf[i + j] !== pat[j]) continue outer;
    return i;
  }
  return -1;
}

/** Collects at most `keep` bytes. */
class Kept {
  #parts: Uint8Array[] = [];
  #n = 0;
  constructor(private readonly keep: number) {}
  add = (b: Uint8Array) => {
    if (this.#n >= this.keep) return;
    const part = b.slice(0, this.keep - this.#n);
    this.#parts.push(part);
    this.#n += part.length;
  };
  get full(): boolean {
    return this.#n >= this.keep;
  }
  bytes(): Uint8Array {
    if (this.#parts.length === 1) return this.#parts[0];
    const out = new Uint8Array(this.#n);
    let at = 0;
    for (const p of this.#parts) out.set(p, at), at += p.length;
    return out;
  }
}

/** Reads one answer's head: status and the headers that frame the body (1xx answers skipped). */
async function readHead(
  r: Reader,
): Promise<{ status: number; length: number | null; chunked: boolean; close: boolean }> {
  for (let interim = 0;; interim++) {
    const head = await r.head();
    const m = /^HTTP\/1\.([01]) (\d{3})(?: |\r)/.exec(head);
    if (!m) throw new Error("the answer is not HTTP/1.x");
    const status = Number(m[2]);
    if (status >= 100 && status < 200 && status !== 101) {
      if (interim >= MAX_INTERIM) throw new Error(`more than ${MAX_INTERIM} interim answers`);
      continue;
    }
    let length: number | null = null;
    let chunked = false;
    let close = m[1] === "0";
    for (const line of head.split("\r\n").slice(1)) {
      const colon = line.indexOf(":");
      if (colon <= 0) continue;
      const name = line.slice(0, colon).trim().toLowerCase();
      const value = line.slice(colon + 1).trim().toLowerCase();
      if (name === "content-length") {
        if (!/^\d+$/.test(value) || (length !== null && length !== Number(value))) {
          throw new Error("the answer's Content-Length is not valid");
        }
        length = Number(value);
      } else if (name === "transfer-encoding") chunked = value.split(",").at(-1)!.trim() === "chunked";
      else if (name === "connection") {
        const tokens = value.split(",").map((t) => t.trim());
        if (tokens.includes("close")) close = true;
        else if (m[1] === "0" && tokens.includes("keep-alive")) close = false;
      }
    }
    if (status === 101) close = true; // a protocol switch we did not ask for: nothing to reuse
    if (status === 204 || status === 304) length = 0;
    return { status, length: chunked ? null : length, chunked, close };
  }
}

/**
 * Reads the body: keeps `keep` bytes; true when the connection can take another request (the
 * body's end was read within DRAIN_MAX).
 */
async function readBody(
  r: Reader,
  h: { length: number | null; chunked: boolean; close: boolean },
  kept: Kept,
  opts: { keep: number },
): Promise<boolean> {
  if (h.length !== null) {
    if (h.length <= DRAIN_MAX) {
      if (await r.take(h.length, kept.add) < h.length) throw new ConnectionEnded();
      return !h.close && !r.leftover;
    }
    // Too long to read to its end: what is kept of it, then the connection is closed.
    await r.take(Math.min(h.length, opts.keep), kept.add);
    return false;
  }
  if (h.chunked) {
    let total = 0;
    for (;;) {
      const hex = (await r.line()).split(";")[0].trim();
      if (!/^[0-9a-fA-F]{1,8}$/.test(hex)) throw new Error("a chunked body's size is not valid");
      const size = parseInt(hex, 16);
      if (size === 0) break;
      if (total + size > DRAIN_MAX) {
        // Too long to read to its end: what is kept of it, then the connection is closed.
        await r.take(Math.min(size, opts.keep), kept.add);
        return false;
      }
      if (await r.take(size, kept.add) < size) throw new ConnectionEnded();
      total += size;
      await r.line();
    }
    // Trailers, up to an empty line; no more of them than a head may have.
    for (let n = 0;;) {
      const trailer = await r.line();
      if (trailer === "") break;
      if ((n += trailer.length + 2) > MAX_HEAD) throw new Error(`the answer's trailers are over ${MAX_HEAD} bytes`);
    }
    return !h.close && !r.leftover;
  }
  // No framing: the body ends with the connection. Read what is kept, then hang up.
  while (!kept.full && await r.take(1024, kept.add) > 0);
  return false;
}

/** A keep-alive HTTP/1.1 client for POSTs (see the module comment). */
export class PostClient {
  #idle = new Map<string, Conn[]>();
  #sweep: ReturnType<typeof setInterval>;
  #closed = false;

  /** `caCerts`: extra root certificates in PEM (tests); the system's are used otherwise. */
  constructor(private readonly opts: { caCerts?: string[] } = {}) {
    this.#sweep = setInterval(() => this.#dropStale(), IDLE_MS);
    Deno.unrefTimer(Number(this.#sweep));
  }

  /**
   * POSTs `body` with `headers` (names and values without CR, LF or NUL); resolves with the
   * status and at most `keep` bytes of the body; rejects with HttpTimeout, or the connection's
   * error.
   */
  async post(
    target: PostTarget,
    headers: Record<string, string>,
    body: Uint8Array,
    opts: { timeoutMs: number; keep: number },
  ): Promise<PostAnswer> {
    const request = this.#request(target.url, headers, body);
    let timedOut = false;
    let current: Conn | null = null;
    let timer: ReturnType<typeof setTimeout> | undefined;
    const expired = new Promise<never>((_, reject) => {
      timer = setTimeout(() => {
        timedOut = true;
        current?.conn.close();
        reject(new HttpTimeout(opts.timeoutMs));
      }, opts.timeoutMs);
    });
    expired.catch(() => {});
    try {
      for (let attempt = 0;; attempt++) {
        let c = this.#takeIdle(target);
        if (!c) {
          const connecting = this.#connect(target);
          // One that connects after the timeout is closed.
          connecting.then((late) => timedOut && late.conn.close(), () => {});
          c = await Promise.race([connecting, expired]);
        }
        current = c;
        const r = new Reader(c);
        try {
          await writeAll(c.conn, request);
          const h = await readHead(r);
          const kept = new Kept(opts.keep);
          const reusable = await readBody(r, h, kept, opts);
          current = null;
          if (reusable) this.#putIdle(target, c);
          else c.conn.close();
          return { status: h.status, body: kept.bytes() };
        } catch (err) {
          current = null;
          try {
            c.conn.close();
          } catch { /* closed by the timeout */ }
          if (timedOut) throw new HttpTimeout(opts.timeoutMs);
          // The server closed an idle connection as we reused it: it never saw the request.
          if (c.reused && r.received === 0 && attempt === 0 && isConnectionGone(err)) continue;
          throw err;
        }
      }
    } finally {
      clearTimeout(timer);
    }
  }

  /** Closes the idle connections; POSTs under way finish on theirs. */
  close(): void {
    this.#closed = true;
    clearInterval(this.#sweep);
    for (const list of this.#idle.values()) for (const c of list) c.conn.close();
    this.#idle.clear();
  }

  #request(url: URL, headers: Record<string, string>, body: Uint8Array): Uint8Array {
    let head = `POST ${url.pathname}${url.search} HTTP/1.1\r\nhost: ${url.host}\r\n`;
    for (const name in headers) {
      const value = headers[name];
      if (/[\r\n\0]/.test(name) || /[\r\n\0]/.test(value)) {
        throw new Error(`header ${JSON.stringify(name)} is not valid`);
      }
      head += `${name}: ${value}\r\n`;
    }
    head += `content-length: ${body.length}\r\n\r\n`;
    const h = encoder.encode(head);
    const out = new Uint8Array(h.length + body.length);
    out.set(h);
    out.set(body, h.length);
    return out;
  }

  async #connect(target: PostTarget): Promise<Conn> {
    const tcp = await Deno.connect({ hostname: target.address, port: target.port });
    tcp.setNoDelay(true);
    let conn: Deno.Conn = tcp;
    if (target.url.protocol === "https:") {
      try {
        const tls = await Deno.startTls(tcp, {
          hostname: target.url.hostname.replace(/^\[(.*)\]$/, "$1"),
          caCerts: this.opts.caCerts,
        });
        await tls.handshake();
        conn = tls;
      } catch (err) {
        try {
          tcp.close();
        } catch { /* already closed with the TLS connection */ }
        throw err;
      }
    }
    return { conn, buf: new Uint8Array(4096), idleSince: 0, reused: false };
  }

  #key(t: PostTarget): string {
    return `${t.url.protocol}//${t.url.host}|${t.address}|${t.port}`;
  }

  #takeIdle(t: PostTarget): Conn | undefined {
    const list = this.#idle.get(this.#key(t));
    const now = performance.now();
    for (let c = list?.pop(); c; c = list?.pop()) {
      if (now - c.idleSince < IDLE_MS) return c;
      c.conn.close();
    }
    return undefined;
  }

  #putIdle(t: PostTarget, c: Conn): void {
    if (this.#closed) return c.conn.close();
    const key = this.#key(t);
    let list = this.#idle.get(key);
    if (!list) this.#idle.set(key, list = []);
    if (list.length >= MAX_IDLE) return c.conn.close();
    c.idleSince = performance.now();
    c.reused = true;
    list.push(c);
  }

  #dropStale(): void {
    const now = performance.now();
    for (const [key, list] of this.#idle) {
      const fresh = list.filter((c) => now - c.idleSince < IDLE_MS || (c.conn.close(), false));
      if (fresh.length) this.#idle.set(key, fresh);
      else this.#idle.delete(key);
    }
  }
}

async function writeAll(conn: Deno.Conn, bytes: Uint8Array): Promise<void> {
  for (let at = 0; at < bytes.length;) at += await conn.write(bytes.subarray(at));
}

/** A reset, a broken pipe or an end of stream: the other side hung up. */
function isConnectionGone(err: unknown): boolean {
  return err instanceof ConnectionEnded || err instanceof Deno.errors.ConnectionReset ||
    err instanceof Deno.errors.BrokenPipe || err instanceof Deno.errors.ConnectionAborted;
}
