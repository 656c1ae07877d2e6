/**
 * The Postgres pool and the typed Kysely over it. One pool per process is shared by
 * kysely, graphile-worker and LISTEN/NOTIFY users.
 */
import { Kysely, PostgresDialect } from "kysely";
import pg from "pg";
import type { Database } from "./tables.ts";

// Keep `bigint` (event ids, counts) as strings and `date` as plain text: no silent
// precision loss and no timezone shift for calendar dates.
pg.types.setTypeParser(pg.types.builtins.DATE, (v: string) => v);

/** The handles a process needs to reach its database. */
export interface Db {
  db: Kysely<Database>;
  pool: pg.Pool;
  /** Ends every connection. */
  close(): Promise<void>;
}

/** Opens a pool of at most `max` connections to `url`. Nothing connects until first use. */
export function openDb(url: string, max = 20): Db {
  const pool = new pg.Pool({ connectionString: url, max, idleTimeoutMillis: 30_000 });
  // An idle client that loses its server (restart, kill) must not crash the process.
  const onError = (err: Error) =>
    console.error(JSON.stringify({ level: "warn", msg: "pg connection error", err: err.message }));
  pool.on("error", onError);
  pool.on("connect", (client: pg.PoolClient) => client.on("error", onError));
  const db = new Kysely<Database>({ dialect: new PostgresDialect({ pool }) });
  return {
    db,
    pool,
    async close() {
      await db.destroy();
    },
  };
}
