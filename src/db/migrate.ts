/**
 * Brings a database up to date: our kysely migrations from `migrations/`, then
 * graphile-worker's own schemas (jobs/schemas.ts). Safe to run from several processes at once
 * (kysely takes an advisory lock; graphile-worker does too).
 */
import type { Kysely } from "kysely";
import { type Migration, type MigrationProvider, Migrator } from "kysely/migration";
import { runMigrations as runWorkerMigrations } from "graphile-worker";
import type pg from "pg";
import type { Database } from "./tables.ts";
import { JOB_SCHEMAS } from "../jobs/schemas.ts";

const MIGRATIONS_DIR = new URL("../../migrations/", import.meta.url);

/** Reads `migrations/NNNN_name.ts` files, in name order. */
class DirectoryProvider implements MigrationProvider {
  async getMigrations(): Promise<Record<string, Migration>> {
    const names: string[] = [];
    for await (const entry of Deno.readDir(MIGRATIONS_DIR)) {
      if (entry.isFile && /^\d{4}_.+\.ts$/.test(entry.name)) names.push(entry.name);
    }
    names.sort();
    const out: Record<string, Migration> = {};
    for (const name of names) out[name.replace(/\.ts$/, "")] = await import(new URL(name, MIGRATIONS_DIR).href);
    return out;
  }
}

/** Applies every pending migration; throws with the failing migration's error. */
export async function migrate(db: Kysely<Database>, pool: pg.Pool): Promise<void> {
  const migrator = new Migrator({ db, provider: new DirectoryProvider() });
  const { error, results } = await migrator.migrateToLatest();
  const failed = results?.find((r) => r.status === "Error");
  if (error) throw new Error(`migration ${failed?.migrationName ?? ""} failed: ${String(error)}`);
  for (const schema of JOB_SCHEMAS) await runWorkerMigrations({ pgPool: pool, schema });
}
