/** `idempotencyKey` on GraphQL send mutations: the same rules as the REST header. */
import { requireTenant } from "../context.ts";
import type { GraphQLContext } from "../graphql/builder.ts";
import { fingerprint, idempotent, validKey } from "./service.ts";

/** JSON with object keys sorted, so equal inputs give equal fingerprints. */
function stable(v: unknown): string {
  if (Array.isArray(v)) return `[${v.map(stable).join(",")}]`;
  if (v && typeof v === "object") {
    return `{${
      Object.keys(v).sort().map((k) => `${JSON.stringify(k)}:${stable((v as Record<string, unknown>)[k])}`).join(",")
    }}`;
  }
  return JSON.stringify(v ?? null);
}

/**
 * Runs a send mutation under `input.idempotencyKey` (when given). `toJson` keeps what is
 * needed to answer again; `fromJson` rebuilds the answer from it (e.g. reads the send).
 */
export async function idempotentMutation<T>(
  ctx: GraphQLContext,
  mutation: string,
  input: { idempotencyKey?: string | null },
  run: () => Promise<T>,
  toJson: (r: T) => unknown,
  fromJson: (j: unknown) => Promise<T> | T,
): Promise<T> {
  const { idempotencyKey, ...rest } = input;
  if (idempotencyKey == null) return await run();
  const t = requireTenant(ctx.principal);
  let fresh: T | undefined;
  const out = await idempotent(
    ctx.deps,
    t,
    validKey(idempotencyKey, "input.idempotencyKey"),
    fingerprint("graphql", mutation, stable(rest)),
    async () => {
      fresh = await run();
      return { status: 200, body: toJson(fresh) };
    },
  );
  return out.replayed ? await fromJson(out.body) : fresh!;
}
