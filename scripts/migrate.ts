/** `deno task migrate`: applies pending migrations to DATABASE_URL (or the embedded database) and exits. */
import { loadConfig } from "../src/config.ts";
import { openDb } from "../src/db/database.ts";
import { startEmbeddedPostgres } from "../src/db/embedded.ts";
import { migrate } from "../src/db/migrate.ts";
import { resolve } from "node:path";

const config = loadConfig(Deno.env.toObject());
const embedded = config.databaseUrl ? null : await startEmbeddedPostgres(resolve(config.dataDir, "postgres"));
const { db, pool, close } = openDb(config.databaseUrl ?? embedded!.url, 2);
await migrate(db, pool);
await close();
await embedded?.stop();
console.log("migrations applied");
