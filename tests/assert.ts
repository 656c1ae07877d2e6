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

/** `fn`'s promise rejects (with an instance of `type`, and a message containing `includes`, when given). */
export async function assertRejects(
  fn: () => Promise<unknown>,
  // deno-lint-ignore no-explicit-any
  type?: new (...args: any[]) => Error,
  includes?: string,
): Promise<void> {
  await nodeAssert.rejects(fn, (err: unknown) => {
    if (type) nodeAssert.ok(err instanceof type, `rejected with ${err}, not a ${type.name}`);
    if (includes) {
      nodeAssert.ok(String((err as Error)?.message).includes(includes), `${err} does not say "${includes}"`);
    }
    return true;
  });
}
