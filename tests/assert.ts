/** Assertions for the tests, on node:assert (jsr is not reachable from these machines). */
import nodeAssert from "node:assert/strict";

/** Fails unless `v` is truthy. */
export function assert(v: unknown, msg?: string): asserts v {
  nodeAssert.ok(v, msg);
}

/** Deep, strict equality. */
export function assertEquals<T>(actual: unknown, expected: T, msg?: string): asserts actual is T {
  nodeAssert.deepStrictEqual(actual, expected, msg);
}

/** Strict inequality. */
export function assertNotEquals(actual: unknown, expected: unknown, msg?: string): void {
  nodeAssert.notDeepStrictEqual(actual, expected, msg);
}

/** The string matches the pattern. */
export function assertMatch(actual: string, re: RegExp, msg?: string): void {
  nodeAssert.match(actual, re, msg);
}

/** The string does not match the pattern. */
export function assertNotMatch(actual: string, re: RegExp, msg?: string): void {
  nodeAssert.doesNotMatch(actual, re, msg);
}
