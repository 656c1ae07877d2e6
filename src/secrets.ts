/**
 * Secrets kept in `$PP_DATA_DIR/secrets.json` (mode 0600) so they survive restarts:
 * PP_ADMIN_TOKEN and PP_SECRET (taken from the environment when set, else generated on first
 * start) and the embedded Postgres's password (generated on its first start, see
 * db/embedded.ts). Each writer merges its fields into the file and keeps the others.
 */
import { join } from "node:path";
import type { Config } from "./config.ts";
import type { Secrets } from "./context.ts";
import { randomBase62 } from "./accounts/service.ts";

/** What secrets.json holds; files written by earlier versions lack the newer fields. */
interface SavedSecrets {
  adminToken?: string;
  secret?: string;
  /** The embedded Postgres role `postgres`'s password. */
  postgresPassword?: string;
}

function secretsFile(dataDir: string): string {
  return join(dataDir, "secrets.json");
}

/** The saved secrets of `dataDir`; none when the file does not exist yet. */
async function readSaved(dataDir: string): Promise<SavedSecrets> {
  try {
    return JSON.parse(await Deno.readTextFile(secretsFile(dataDir)));
  } catch {
    return {}; // first start: nothing saved yet
  }
}

/**
 * Merges `values` into secrets.json. Written to a new owner-only file that then replaces the
 * old one, so the file is never half-written nor readable by others, even for a moment.
 */
async function save(dataDir: string, values: SavedSecrets): Promise<void> {
  const merged = { ...await readSaved(dataDir), ...values };
  await Deno.mkdir(dataDir, { recursive: true });
  const file = secretsFile(dataDir);
  const tmp = `${file}.${randomBase62(8)}.tmp`;
  try {
    await Deno.writeTextFile(tmp, JSON.stringify(merged), { mode: 0o600 });
    await Deno.rename(tmp, file);
  } catch (err) {
    await Deno.remove(tmp).catch(() => {});
    throw err;
  }
}

/**
 * Resolves both secrets from the environment, else the data dir, else new ones (saved).
 * `adminTokenGenerated` is true on the start that made the admin token (main.ts prints it then).
 */
export async function resolveSecrets(config: Readonly<Config>): Promise<Secrets & { adminTokenGenerated: boolean }> {
  const saved = await readSaved(config.dataDir);
  const kept: Secrets = {
    adminToken: saved.adminToken ?? `ppadm_${randomBase62(40)}`,
    secret: saved.secret ?? randomBase62(48),
  };
  if (kept.adminToken !== saved.adminToken || kept.secret !== saved.secret) await save(config.dataDir, kept);
  return {
    adminToken: config.adminToken ?? kept.adminToken,
    secret: config.secret ?? kept.secret,
    adminTokenGenerated: !config.adminToken && !saved.adminToken,
  };
}

/**
 * The embedded Postgres's password kept in `dataDir`'s secrets.json, or, when none is kept
 * yet, a new random one (40 base62 characters) that is saved before it is returned, so that
 * it is never set on the server without being on disk first. `saved` tells which.
 */
export async function embeddedPostgresPassword(dataDir: string): Promise<{ password: string; saved: boolean }> {
  const kept = (await readSaved(dataDir)).postgresPassword;
  if (kept) return { password: kept, saved: true };
  const password = randomBase62(40);
  await save(dataDir, { postgresPassword: password });
  return { password, saved: false };
}
