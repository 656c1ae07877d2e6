/**
 * RSA-SHA256 signatures (RSASSA-PKCS1-v1_5, DKIM's `a=rsa-sha256`) for DKIM.
 *
 * Why not just node:crypto: under Deno, `crypto.sign("sha256", …)` with a 2048-bit key takes
 * 1.5–1.9 ms per signature, while the system OpenSSL signs in ~0.28 ms (`openssl speed rsa2048`),
 * and a CPU profile showed DKIM signing bounding delivery throughput. So we call libcrypto 3
 * through `Deno.dlopen`, and fall back to node:crypto where the library cannot be loaded (no
 * libcrypto.so.3, another OS, or no FFI permission). Both produce the same bytes: PKCS#1 v1.5
 * signatures are deterministic.
 *
 * Glossary: a *backend* is the implementation ("openssl" or "node:crypto"); the *key cache*
 * holds one parsed key per PEM string, so a PEM is parsed once, not per signature.
 */
import { createPrivateKey, type KeyObject, sign as nodeSign } from "node:crypto";
import { Buffer } from "node:buffer";
import { createLogger, type Logger, type LogLevel } from "../log.ts";

/** Signs bytes with RSASSA-PKCS1-v1_5 over SHA-256. */
export interface RsaSigner {
  /**
   * Which implementation signs: libcrypto through FFI (on Deno's blocking pool or the calling
   * thread), libcrypto on signing threads of our own (threadSigner), or the node:crypto fallback.
   */
  readonly backend: "openssl" | "openssl-thread" | "node:crypto";
  /**
   * The signature of `data` (256 bytes for a 2048-bit key) with `privateKeyPem`, an
   * unencrypted PEM RSA private key (PKCS#8 `PRIVATE KEY` as generateDkimKeys writes, or
   * PKCS#1 `RSA PRIVATE KEY`). Rejects for an unreadable, encrypted or non-RSA key.
   * `data` must not change until the promise settles.
   */
  sign(data: Uint8Array, privateKeyPem: string): Promise<Uint8Array>;
  /** Frees the cached keys (and unloads the library, for an openssl signer); call only once no signature is pending. */
  close(): void;
}

/** Parsed keys kept per signer: one per domain key in use. Default: 1,000, oldest dropped first. */
const KEY_CACHE_MAX = 1_000;

/**
 * Where libcrypto 3 is looked for, first hit wins: Debian/Ubuntu multiarch paths, then the
 * plain soname (the dynamic loader's own search: ld.so.cache, LD_LIBRARY_PATH).
 */
export const LIBCRYPTO_CANDIDATES: readonly string[] = [
  "/usr/lib/x86_64-linux-gnu/libcrypto.so.3",
  "/lib/x86_64-linux-gnu/libcrypto.so.3",
  "/usr/lib/aarch64-linux-gnu/libcrypto.so.3",
  "/lib/aarch64-linux-gnu/libcrypto.so.3",
  "/usr/lib64/libcrypto.so.3",
  "/usr/lib/libcrypto.so.3",
  "libcrypto.so.3",
];

/**
 * Whether openssl signatures run as `nonblocking` FFI calls on Deno's blocking thread pool
 * (so on the second core, while the event loop goes on) or on the calling thread. Default:
 * true. Measured on this 2-core machine (medians of 5 runs): with 10 concurrent callers,
 * 5,300 signatures/s nonblocking vs 3,700/s synchronous (node:crypto: 670/s); composing,
 * signing and relaying mail 10 at a time, 1,400 messages/s vs 1,080/s (450/s with
 * node:crypto; 2,080/s unsigned). One caller at a time is slower nonblocking (2,700/s vs
 * 3,700/s: the thread hop costs ~15 µs plus wake-ups), but deliveries run concurrently.
 */
export const OPENSSL_NONBLOCKING_DEFAULT = true;

const SYMBOLS = {
  BIO_new_mem_buf: { parameters: ["buffer", "i32"], result: "pointer" },
  BIO_free: { parameters: ["pointer"], result: "i32" },
  PEM_read_bio_PrivateKey: { parameters: ["pointer", "pointer", "pointer", "buffer"], result: "pointer" },
  EVP_PKEY_get_base_id: { parameters: ["pointer"], result: "i32" },
  EVP_PKEY_get_size: { parameters: ["pointer"], result: "i32" },
  EVP_PKEY_free: { parameters: ["pointer"], result: "void" },
  EVP_sha256: { parameters: [], result: "pointer" },
  EVP_MD_CTX_new: { parameters: [], result: "pointer" },
  EVP_MD_CTX_free: { parameters: ["pointer"], result: "void" },
  EVP_DigestSignInit: { parameters: ["pointer", "pointer", "pointer", "pointer", "pointer"], result: "i32" },
  EVP_DigestSign: { parameters: ["pointer", "buffer", "buffer", "buffer", "usize"], result: "i32" },
  // The same function, run on Deno's blocking thread pool; resolves with its int result.
  EVP_DigestSign_nonblocking: {
    name: "EVP_DigestSign",
    parameters: ["pointer", "buffer", "buffer", "buffer", "usize"],
    result: "i32",
    nonblocking: true,
  },
  ERR_get_error: { parameters: [], result: "u64" },
  ERR_error_string_n: { parameters: ["u64", "buffer", "usize"], result: "void" },
  ERR_clear_error: { parameters: [], result: "void" },
} as const satisfies Deno.ForeignLibraryInterface;

type LibCrypto = Deno.DynamicLibrary<typeof SYMBOLS>["symbols"];

/** NID_rsaEncryption: what EVP_PKEY_get_base_id answers for an RSA key. */
const EVP_PKEY_RSA = 6;

/**
 * An openssl signer: loads libcrypto 3 from `paths` (default LIBCRYPTO_CANDIDATES).
 * `nonblocking` (default OPENSSL_NONBLOCKING_DEFAULT) runs each EVP_DigestSign on Deno's
 * blocking thread pool. Throws when FFI is not permitted or no candidate loads.
 */
export function openSslSigner(opts: { nonblocking?: boolean; paths?: readonly string[] } = {}): RsaSigner {
  const errors: string[] = [];
  let lib: Deno.DynamicLibrary<typeof SYMBOLS> | null = null;
  for (const path of opts.paths ?? LIBCRYPTO_CANDIDATES) {
    // Checked first: without the permission Deno.dlopen would prompt on a terminal.
    if (Deno.permissions.querySync({ name: "ffi", path }).state !== "granted") {
      errors.push(`${path}: no FFI permission (--allow-ffi)`);
      continue;
    }
    try {
      lib = Deno.dlopen(path, SYMBOLS);
      break;
    } catch (err) {
      errors.push(`${path}: ${err instanceof Error ? err.message : String(err)}`);
    }
  }
  if (!lib) throw new Error(`libcrypto 3 not loaded (${errors.join("; ")})`);
  return createOpenSslSigner(lib, opts.nonblocking ?? OPENSSL_NONBLOCKING_DEFAULT);
}

function createOpenSslSigner(lib: Deno.DynamicLibrary<typeof SYMBOLS>, nonblocking: boolean): RsaSigner {
  const c: LibCrypto = lib.symbols;
  const sha256 = c.EVP_sha256(); // a static object: never freed
  const keys = new Map<string, { pkey: Deno.PointerObject; size: number }>();
  // With a NULL callback, a non-NULL `u` is the passphrase: an encrypted PEM then fails with
  // an empty one instead of OpenSSL's default callback prompting on the terminal.
  const emptyPassphrase = new Uint8Array(1);

  function opensslError(what: string): Error {
    const code = c.ERR_get_error();
    let detail = "";
    if (code) {
      const buf = new Uint8Array(256);
      c.ERR_error_string_n(code, buf, BigInt(buf.length));
      detail = `: ${new TextDecoder().decode(buf.subarray(0, buf.indexOf(0)))}`;
    }
    c.ERR_clear_error();
    return new Error(`openssl ${what} failed${detail}`);
  }

  function key(pem: string): { pkey: Deno.PointerObject; size: number } {
    const hit = keys.get(pem);
    if (hit) return hit;
    const bytes = new TextEncoder().encode(pem);
    const bio = c.BIO_new_mem_buf(bytes, bytes.length);
    if (!bio) throw opensslError("BIO_new_mem_buf");
    let pkey: Deno.PointerValue;
    try {
      pkey = c.PEM_read_bio_PrivateKey(bio, null, null, emptyPassphrase);
    } finally {
      c.BIO_free(bio);
    }
    if (!pkey) throw opensslError("PEM_read_bio_PrivateKey");
    if (c.EVP_PKEY_get_base_id(pkey) !== EVP_PKEY_RSA) {
      c.EVP_PKEY_free(pkey);
      throw new Error("the DKIM private key is not an RSA key");
    }
    const entry = { pkey, size: c.EVP_PKEY_get_size(pkey) };
    if (keys.size >= KEY_CACHE_MAX) {
      // Safe with signatures in flight: EVP_DigestSignInit took its own reference to the
      // key (the EVP_PKEY_CTX holds it until EVP_MD_CTX_free), and it ran synchronously.
      const [oldPem, old] = keys.entries().next().value!;
      keys.delete(oldPem);
      c.EVP_PKEY_free(old.pkey);
    }
    keys.set(pem, entry);
    return entry;
  }

  return {
    backend: "openssl",
    async sign(data, pem) {
      const { pkey, size } = key(pem);
      const ctx = c.EVP_MD_CTX_new();
      if (!ctx) throw opensslError("EVP_MD_CTX_new");
      try {
        if (c.EVP_DigestSignInit(ctx, null, sha256, null, pkey) !== 1) throw opensslError("EVP_DigestSignInit");
        const sig = new Uint8Array(size);
        const sigLen = new BigUint64Array([BigInt(size)]); // size_t in/out
        // The buffers stay referenced here until the call returns, as nonblocking calls need.
        const ok = nonblocking
          ? await c.EVP_DigestSign_nonblocking(ctx, sig, sigLen, data, BigInt(data.length))
          : c.EVP_DigestSign(ctx, sig, sigLen, data, BigInt(data.length));
        // A failure on a pool thread leaves its error on that thread's queue: no detail then.
        if (ok !== 1) throw opensslError("EVP_DigestSign");
        return sig.subarray(0, Number(sigLen[0]));
      } finally {
        c.EVP_MD_CTX_free(ctx);
      }
    },
    close() {
      for (const { pkey } of keys.values()) c.EVP_PKEY_free(pkey);
      keys.clear();
      lib.close();
    },
  };
}

/** The node:crypto signer: the fallback, ~6x slower than openssl under Deno. */
export function nodeCryptoSigner(): RsaSigner {
  const keys = new Map<string, KeyObject>();
  function key(pem: string): KeyObject {
    let k = keys.get(pem);
    if (k) return k;
    k = createPrivateKey({ key: pem, format: "pem", passphrase: "" });
    if (k.asymmetricKeyType !== "rsa") throw new Error("the DKIM private key is not an RSA key");
    if (keys.size >= KEY_CACHE_MAX) keys.delete(keys.keys().next().value!);
    keys.set(pem, k);
    return k;
  }
  return {
    backend: "node:crypto",
    sign(data, pem) {
      try {
        const sig = nodeSign("sha256", data, key(pem));
        return Promise.resolve(new Uint8Array(sig.buffer, sig.byteOffset, sig.byteLength));
      } catch (err) {
        return Promise.reject(err);
      }
    },
    close() {
      keys.clear();
    },
  };
}

/** Idle time after which a signing thread is stopped (the next signature starts it again). */
const SIGNING_THREAD_IDLE_MS = 10_000;

/** A signature's thread went away before answering. */
class ThreadGone extends Error {}

/** What the signing thread answers (rsa_thread.ts). */
type ThreadReply =
  | { ready: true }
  | { ready: false; error: string }
  | { id: number; sig: Uint8Array }
  | { id: number; error: string };

/**
 * A signer that signs with libcrypto on signing threads of their own (Deno Workers running
 * rsa_thread.ts, calling it synchronously), started on the first signature and stopped after
 * SIGNING_THREAD_IDLE_MS without one.
 *
 * Why: on Deno's blocking pool (the nonblocking FFI call) each signature under way had a
 * thread of its own, ~75 in the drain, and the event loop that delivers, runnable 94% of the
 * time, ran 56%: it waited 38% in the run queue behind them (schedstat, 2-core machine). One
 * thread working through a queue of signatures leaves it the other core. Alternating bench
 * runs: drain 525 / 505 → 702 / 561 emails/s; mixed (`all`) delivered 347 / 344 → 465 /
 * 400 emails/s while accepting 685 / 636 → 669 / 601 sends/s (a signing thread at nice 10
 * was tried too: the drain gained, the mixed row lost 15%). Signatures go to the
 * thread with the fewest under way. When a thread cannot load libcrypto or dies, its
 * signatures (and later ones) are made by `fallback`, once logged to `log`.
 */
export function threadSigner(
  opts: { threads: number; fallback: RsaSigner; log: Logger; paths?: readonly string[]; idleMs?: number },
): RsaSigner {
  interface Slot {
    worker: Worker;
    ready: Promise<boolean>;
    waiting: Map<number, { resolve(sig: Uint8Array): void; reject(err: Error): void }>;
    idle?: ReturnType<typeof setTimeout>;
  }
  const slots: (Slot | null)[] = Array.from({ length: Math.max(1, opts.threads) }, () => null);
  let nextId = 0;
  let broken = false;

  function stop(i: number, err?: Error): void {
    const slot = slots[i];
    if (!slot) return;
    slots[i] = null;
    if (slot.idle !== undefined) clearTimeout(slot.idle);
    slot.worker.terminate();
    for (const w of slot.waiting.values()) w.reject(new ThreadGone(err?.message ?? "signing thread stopped"));
  }

  function start(i: number): Slot {
    const worker = new Worker(new URL("./rsa_thread.ts", import.meta.url).href, { type: "module" });
    const slot: Slot = { worker, waiting: new Map(), ready: null! };
    slot.ready = new Promise<boolean>((resolve) => {
      worker.onmessage = (e: MessageEvent<ThreadReply>) => {
        const m = e.data;
        if ("ready" in m) {
          if (!m.ready) opts.log.warn("DKIM signing thread: libcrypto did not load there", { reason: m.error });
          return resolve(m.ready);
        }
        const w = slot.waiting.get(m.id);
        if (!w) return;
        slot.waiting.delete(m.id);
        if ("sig" in m) w.resolve(m.sig);
        else w.reject(new Error(m.error));
        if (slot.waiting.size === 0) {
          const idle = setTimeout(() => {
            if (slots[i] === slot && slot.waiting.size === 0) stop(i);
          }, opts.idleMs ?? SIGNING_THREAD_IDLE_MS);
          // The timer does not keep the process alive; the worker does until the timer stops it.
          Deno.unrefTimer(idle);
          slot.idle = idle;
        }
      };
      worker.onerror = (e) => {
        e.preventDefault();
        opts.log.warn("DKIM signing thread died", { err: e.message });
        // Before it was ready: its signatures go to the fallback.
        resolve(false);
        stop(i, new Error(`signing thread died: ${e.message}`));
      };
    });
    worker.postMessage({ paths: opts.paths });
    return slots[i] = slot;
  }

  async function onThread(data: Uint8Array, pem: string): Promise<Uint8Array> {
    let i = 0;
    for (let j = 1; j < slots.length; j++) {
      if ((slots[j]?.waiting.size ?? 0) < (slots[i]?.waiting.size ?? 0)) i = j;
    }
    const slot = slots[i] ?? start(i);
    if (!await slot.ready) {
      broken = true;
      stop(i);
      return await opts.fallback.sign(data, pem);
    }
    if (slot.idle !== undefined) clearTimeout(slot.idle);
    slot.idle = undefined;
    const id = nextId++;
    try {
      return await new Promise<Uint8Array>((resolve, reject) => {
        slot.waiting.set(id, { resolve, reject });
        // A copy: the caller may reuse `data` once this resolves, and a transfer would take it.
        slot.worker.postMessage({ id, data, pem });
      });
    } catch (err) {
      // The thread died or was closed under it: signed here instead. A key refused there is refused.
      if (err instanceof ThreadGone) return await opts.fallback.sign(data, pem);
      throw err;
    }
  }

  return {
    backend: "openssl-thread",
    sign(data, pem) {
      return broken ? opts.fallback.sign(data, pem) : onThread(data, pem);
    },
    close() {
      for (let i = 0; i < slots.length; i++) stop(i);
      opts.fallback.close();
    },
  };
}

let shared: RsaSigner | null = null;

/**
 * The process-wide signer: libcrypto 3 on a signing thread when it loads (threadSigner, with
 * the in-thread openssl signer as its fallback), else node:crypto. Chosen on the first call,
 * which logs the choice once (info) to `log` (default: a stderr logger at PP_LOG_LEVEL,
 * "info" when unset or unreadable, as config.ts reads it).
 */
export function rsaSigner(log?: Logger): RsaSigner {
  if (shared) return shared;
  log ??= createLogger(envLogLevel());
  try {
    const threads = Math.max(1, Math.min(4, navigator.hardwareConcurrency - 1));
    shared = threadSigner({ threads, fallback: openSslSigner(), log });
    log.info("DKIM RSA signatures: openssl libcrypto via FFI on signing threads", { threads });
  } catch (err) {
    shared = nodeCryptoSigner();
    log.info("DKIM RSA signatures: node:crypto fallback (~6x slower)", {
      reason: err instanceof Error ? err.message : String(err),
    });
  }
  return shared;
}

/** Signs `data` with the process-wide signer (see rsaSigner); resolves with the signature bytes. */
export function rsaSignSha256(data: Uint8Array, privateKeyPem: string, log?: Logger): Promise<Uint8Array> {
  return rsaSigner(log).sign(data, privateKeyPem);
}

/** The same, as base64 (the form of DKIM's `b=` tag). */
export async function rsaSignSha256Base64(data: Uint8Array, privateKeyPem: string, log?: Logger): Promise<string> {
  const sig = await rsaSignSha256(data, privateKeyPem, log);
  return Buffer.from(sig.buffer, sig.byteOffset, sig.byteLength).toString("base64");
}

/** PP_LOG_LEVEL when readable without a prompt and valid, else "info" (its default). */
function envLogLevel(): LogLevel {
  if (Deno.permissions.querySync({ name: "env", variable: "PP_LOG_LEVEL" }).state !== "granted") return "info";
  const level = Deno.env.get("PP_LOG_LEVEL");
  return level === "debug" || level === "info" || level === "warn" || level === "error" ? level : "info";
}
