/**
 * UUIDv7 ids (RFC 9562): time-ordered, so new rows land at the right edge of the primary
 * key index, and rows created in the same millisecond by this process still sort in
 * creation order (the 12-bit rand_a field is a counter within a millisecond).
 */
let lastMs = 0;
let counter = 0;

/** A new UUIDv7, monotonic within this process. */
export function uuidv7(): string {
  let ms = Date.now();
  if (ms <= lastMs) {
    counter++;
    if (counter > 0xfff) {
      // 4,096 ids in one millisecond: borrow the next millisecond.
      lastMs++;
      counter = 0;
    }
    ms = lastMs;
  } else {
    lastMs = ms;
    counter = crypto.getRandomValues(new Uint16Array(1))[0] & 0x3ff;
  }
  const b = crypto.getRandomValues(new Uint8Array(16));
  for (let i = 0; i < 6; i++) b[i] = Math.floor(ms / 2 ** (8 * (5 - i))) & 0xff;
  b[6] = 0x70 | (counter >> 8);
  b[7] = counter & 0xff;
  b[8] = 0x80 | (b[8] & 0x3f);
  const h = Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}
