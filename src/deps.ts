/**
 * The handles of one event loop (context.ts `Deps`), built over an opened database. The
 * API's loop and, in role `all`, the worker thread's (jobs/thread.ts) each build their own:
 * nothing of it crosses a thread.
 */
import type { Config } from "./config.ts";
import type { Deps, Secrets } from "./context.ts";
import type { Db } from "./db/database.ts";
import { noticeListener } from "./db/listen.ts";
import { CACHE_CHANNEL, dropAnnounced } from "./cache.ts";
import type { Logger } from "./log.ts";
import { RenderPool } from "./mail/render.ts";

/**
 * Heap cap of each render sandbox, MB: room for three 2 MB parts being built, small enough
 * that a template allocating without end dies in well under a second.
 */
const RENDER_HEAP_MB = 192;

/** The handles of one event loop, and how to let them go. */
export interface OpenedDeps {
  deps: Deps;
  /** Stops the renderer and the notice connection, then closes the pool. */
  close(): Promise<void>;
}

/**
 * The handles one event loop's services use over `opened` (its pool, of PP_DB_POOL_SIZE):
 * PP_RENDER_WORKERS render sandboxes and the LISTEN connection, with the caches following it.
 */
export async function openDeps(
  config: Readonly<Config>,
  opened: Db,
  secrets: Secrets,
  log: Logger,
  publicUrl: string,
): Promise<OpenedDeps> {
  const notices = noticeListener(opened.pool, log);
  // Every role caches keys, templates and account state: all of them follow the changes.
  notices.on(CACHE_CHANNEL, dropAnnounced);
  await notices.whenListening().catch((err) => {
    // It keeps trying; the caches serve nothing until it listens.
    log.warn("notice connection not up yet", { err: String(err) });
  });
  const deps: Deps = {
    db: opened.db,
    pool: opened.pool,
    config,
    secrets,
    log,
    publicUrl,
    renderer: new RenderPool({
      size: config.renderWorkers,
      timeoutMs: config.renderTimeoutMs,
      heapMb: RENDER_HEAP_MB,
      log,
    }),
    notices,
  };
  return {
    deps,
    async close() {
      deps.renderer.close();
      await notices.stop();
      await opened.close();
    },
  };
}
