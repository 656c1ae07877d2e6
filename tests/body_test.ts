/**
 * Large request bodies (rest/body.ts): at most LARGE_BODIES bodies over LARGE_BODY bytes are
 * read and held at once; the next one waits for a slot before more of it is read, whether it
 * declares its length or streams it, and goes on once a slot is given back. Smaller bodies
 * never wait. Real Request streams, read as the HTTP edge reads them.
 */
import { BodyLease, LARGE_BODIES, LARGE_BODY, readBody } from "../src/rest/body.ts";
import { AppError } from "../src/errors.ts";
import { assert, assertEquals } from "./assert.ts";

/** A body of `size` bytes in 64 KiB chunks, counting what was pulled from it. */
function body(size: number) {
  const state = { pulled: 0 };
  const stream = new ReadableStream<Uint8Array>({
    pull(c) {
      const n = Math.min(65536, size - state.pulled);
      if (n <= 0) return c.close();
      state.pulled += n;
      c.enqueue(new Uint8Array(n));
    },
  }, { highWaterMark: 0 });
  return { stream, state };
}

const settledWithin = (p: Promise<unknown>, ms: number) =>
  Promise.race([p.then(() => true), new Promise((r) => setTimeout(() => r(false), ms))]);

Deno.test("large bodies: a fourth waits for a slot, small ones do not", async () => {
  const size = LARGE_BODY + 1024 * 1024;
  const limit = 64 * 1024 * 1024;
  const held = Array.from({ length: LARGE_BODIES }, () => new BodyLease(60_000));
  for (const lease of held) {
    const b = body(size);
    const got = await readBody(new Request("http://x/", { method: "POST", body: b.stream }), limit, lease);
    assertEquals(got.byteLength, size);
  }
  // Streamed: read up to the large-body mark, then it waits.
  const next = new BodyLease(60_000);
  const streamed = body(size);
  const reading = readBody(new Request("http://x/", { method: "POST", body: streamed.stream }), limit, next);
  assertEquals(await settledWithin(reading, 300), false, "the fourth large body waits");
  assert(streamed.state.pulled <= LARGE_BODY + 2 * 65536, `pulled ${streamed.state.pulled} while waiting`);
  // Declared: it waits before a byte is read.
  const declaredLease = new BodyLease(60_000);
  const declared = body(size);
  const declaring = readBody(
    new Request("http://x/", { method: "POST", body: declared.stream, headers: { "content-length": String(size) } }),
    limit,
    declaredLease,
  );
  // A small body goes on meanwhile.
  const small = await readBody(new Request("http://x/", { method: "POST", body: "{}" }), limit, new BodyLease(60_000));
  assertEquals(small.byteLength, 2);
  assertEquals(await settledWithin(declaring, 100), false);
  assertEquals(declared.state.pulled, 0, "nothing of a declared large body is read while it waits");
  // A slot given back lets the first waiter go on, then the next.
  held[0].release();
  held[0].release(); // twice: still one slot
  assertEquals((await reading).byteLength, size);
  assertEquals(await settledWithin(declaring, 100), false, "one slot freed, one waiter through");
  next.release();
  assertEquals((await declaring).byteLength, size);
  for (const lease of [...held, declaredLease]) lease.release();
});

Deno.test("a body cut off before its end is 400 invalid_json, not an unexpected error", async () => {
  let sent = false;
  const stream = new ReadableStream<Uint8Array>({
    pull(c) {
      if (sent) {
        return c.error(new Deno.errors.BadResource("Cannot read request body as underlying resource unavailable"));
      }
      sent = true;
      c.enqueue(new TextEncoder().encode('{"to":"x@exa'));
    },
  });
  const err = await readBody(new Request("http://x/", { method: "POST", body: stream }), 1024).then(
    () => null,
    (e) => e,
  );
  assert(err instanceof AppError, String(err));
  assertEquals([err.code, err.message], ["invalid_json", "the request body ended before it was complete"]);
});

Deno.test("a large body not all there by its slot's deadline is 408 request_timeout, and the slot goes back", async () => {
  const limit = 64 * 1024 * 1024;
  // Every slot taken by a body that sends past the large-body mark, then nothing.
  const stalledLeases = Array.from({ length: LARGE_BODIES }, () => new BodyLease(200));
  const stalled = stalledLeases.map((lease) => {
    let sent = 0;
    const stream = new ReadableStream<Uint8Array>({
      pull(c) {
        if (sent > LARGE_BODY) return new Promise(() => {}); // never more
        sent += 65536;
        c.enqueue(new Uint8Array(65536));
      },
    }, { highWaterMark: 0 });
    return readBody(new Request("http://x/", { method: "POST", body: stream }), limit, lease).then(
      () => null,
      (e) => e,
    );
  });
  for (const err of await Promise.all(stalled)) {
    assert(err instanceof AppError, String(err));
    assertEquals(err.code, "request_timeout");
  }
  assert(stalledLeases.every((l) => !l.held), "each slot given back");
  // So the next large body is read at once.
  const next = new BodyLease(60_000);
  const b = body(LARGE_BODY + 65536);
  const got = await readBody(new Request("http://x/", { method: "POST", body: b.stream }), limit, next);
  assertEquals(got.byteLength, LARGE_BODY + 65536);
  next.release();
});
