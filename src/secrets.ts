/**
 * PP_ADMIN_TOKEN and PP_SECRET: taken from the environment, or generated on first start
 * and kept in `$PP_DATA_DIR/secrets.json` (mode 0600) so they survive restarts.
 */
import { join } from "node:path";
import type { Config } from "./config.ts";
import type { Secrets } from "./context.ts";
import { randomBase62 } from "./accounts/service.ts";

/**
 * Resolves both secrets from the environment, else the data dir, else new ones (saved).
 * `adminTokenGenerated` is true on the start that made the admin token (main.ts prints it then).
 */
export async function resolveSecrets(config: Readonly<Config>): Promise<Secrets & { adminTokenGenerated: boolean }> {
  const file = join(config.dataDir, "secrets.json");
  let saved: Partial<Secrets> = {};
  try {
    saved = JSON.parse(await Deno.readTextFile(file));
  } catch {
    // First start: nothing saved yet.
  }
  const kept: Secrets = {
    adminToken: saved.adminToken ?? `ppadm_${randomBase62(40)}`,
    secret: saved.secret ?? randomBase62(48),
  };
  if (kept.adminToken !== saved.adminToken || kept.secret !== saved.secret) {
    await Deno.mkdir(config.dataDir, { recursive: true });
    await Deno.writeTextFile(file, JSON.stringify(kept), { mode: 0o600 });
  }
  return {
    adminToken: config.adminToken ?? kept.adminToken,
    secret: config.secret ?? kept.secret,
    adminTokenGenerated: !config.adminToken && !saved.adminToken,
  };
}
