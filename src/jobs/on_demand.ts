/**
 * A thread that runs only while it has something to do: `wanted()` is asked every
 * `everyMs`; the thread is started when it says yes, and stopped once it has said no for
 * `idleMs`. Role `all` runs its webhook dispatcher this way (server.ts): the thread's
 * isolate and pool are ~40–55 MB (measured: the drain's peak RSS 280 → 335 MB with it idle),
 * which a service without webhook endpoints should not carry.
 */
import type { Logger } from "../log.ts";
import type { MetricsJson } from "../metrics/metrics.ts";
import type { WorkerThread } from "./thread.ts";

/** The thread, as far as the process sees it: its counts while it runs, and a stop. */
export interface OnDemandThread {
  /** The running thread's counts; none while it is not running (its counters start again from 0). */
  metrics(): Promise<MetricsJson>;
  /** Checks now (when no check is under way) rather than at the next tick. */
  wake(): void;
  /** Stops the checks and the thread, if it runs. */
  stop(): Promise<void>;
}

/** Starts the checks (the first one at once). A `wanted()` that throws leaves things as they are. */
export function onDemandThread(opts: {
  name: string;
  start: () => Promise<WorkerThread>;
  wanted: () => Promise<boolean>;
  everyMs: number;
  idleMs: number;
  log: Logger;
}): OnDemandThread {
  let thread: WorkerThread | null = null;
  let lastWanted = 0;
  let stopped = false;
  let failing = false;
  let timer: ReturnType<typeof setTimeout> | undefined;
  let checking: Promise<void> = Promise.resolve();

  async function check(): Promise<void> {
    try {
      const wanted = await opts.wanted();
      failing = false;
      if (wanted) lastWanted = performance.now();
      if (stopped) return;
      if (wanted && !thread) {
        const t0 = performance.now();
        thread = await opts.start();
        opts.log.info("thread started", { thread: opts.name, ms: Math.round(performance.now() - t0) });
      } else if (!wanted && thread && performance.now() - lastWanted >= opts.idleMs) {
        const t = thread;
        thread = null;
        await t.stop();
        opts.log.info("thread stopped: nothing to do", { thread: opts.name, idleMs: opts.idleMs });
      }
    } catch (err) {
      if (!failing) opts.log.warn("thread check failed; trying again", { thread: opts.name, err: String(err) });
      failing = true;
    }
  }

  let busy = false;
  const loop = () => {
    clearTimeout(timer);
    busy = true;
    checking = check().finally(() => {
      busy = false;
      if (!stopped) timer = setTimeout(loop, opts.everyMs);
    });
  };
  loop();

  return {
    metrics: () => thread?.metrics() ?? Promise.resolve([]),
    wake() {
      if (!busy && !stopped) loop();
    },
    async stop() {
      stopped = true;
      clearTimeout(timer);
      await checking;
      const t = thread;
      thread = null;
      await t?.stop();
    },
  };
}
