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

/**
 * How long taking a connection may wait, ms: for a new connection to a Postgres that does
 * not answer, or for a free one in a full pool. Past it the query fails as `unavailable`
 * (errors.ts), so a request answers 503 within seconds instead of hanging.
 */
export const CONNECT_TIMEOUT_MS = 3_000;

/**
 * A pool of at most `max` connections to `url`, opened as needed. An idle client that loses
 * its server (restart, kill) is logged, never a crash.
 */
export function openPool(url: string, max: number): pg.Pool {
  const pool = new pg.Pool({
    connectionString: url,
    max,
    idleTimeoutMillis: 30_000,
    connectionTimeoutMillis: CONNECT_TIMEOUT_MS,
    // A dead peer (a Postgres host that vanished) is noticed by TCP keepalive, not never.
    keepAlive: true,
  });
  const onError = (err: Error) =>
    console.error(JSON.stringify({ level: "warn", msg: "pg connection error", err: err.message }));
  pool.on("error", onError);
  pool.on("connect", (client: pg.PoolClient) => client.on("error", onError));
  return pool;
}

/** Opens a pool of at most `max` connections to `url` and the Kysely over it. Nothing connects until first use. */
export function openDb(url: string, max = 20): Db {
  const pool = openPool(url, max);
  const db = new Kysely<Database>({ dialect: new PostgresDialect({ pool }) });
  return {
    db,
    pool,
    async close() {
      await db.destroy();
    },
  };
}

/** Whether Postgres answers `select 1` on `pool` within `timeoutMs` (never throws). */
export async function ping(pool: pg.Pool, timeoutMs: number): Promise<boolean> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<boolean>((r) => timer = setTimeout(() => r(false), timeoutMs));
  try {
    return await Promise.race([pool.query("select 1").then(() => true, () => false), timeout]);
  } finally {
    clearTimeout(timer);
  }
}
