/** `idempotencyKey` on GraphQL send mutations: the same rules, fingerprint and replay as the REST header. */
import { requireTenant } from "../context.ts";
import type { GraphQLContext } from "../graphql/builder.ts";
import { fingerprint, idempotent, validKey } from "./service.ts";

/**
 * Runs a send mutation under `input.idempotencyKey` (when given). `run` gets the input
 * without the key (the services' strict inputs do not know it) and answers what the
 * mutation returns, a JSON value; a replay answers the first result again, as stored (times
 * come back as ISO strings, which the `DateTime` scalar writes alike), and creates nothing.
 */
export async function idempotentMutation<I extends { idempotencyKey?: string | null }, T>(
  ctx: GraphQLContext,
  mutation: string,
  input: I,
  run: (input: Omit<I, "idempotencyKey">) => Promise<T>,
): Promise<T> {
  const { idempotencyKey, ...rest } = input;
  if (idempotencyKey == null) return await run(rest);
  const t = requireTenant(ctx.principal, "sending");
  let fresh: { value: T } | undefined;
  const out = await idempotent(
    ctx.deps,
    t,
    validKey(idempotencyKey, "input.idempotencyKey"),
    fingerprint(`graphql ${mutation}`, rest),
    async () => {
      fresh = { value: await run(rest) };
      return { status: 200, body: fresh.value };
    },
  );
  return fresh ? fresh.value : out.body as T;
}
