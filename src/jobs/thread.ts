/**
 * The worker on a thread of its own (role `all`): a Deno Worker running thread_main.ts,
 * with its own event loop, pool, render sandboxes and LISTEN connection, so the API and
 * the worker use the two cores independently. What crosses the thread is this file's few
 * messages; the worker half itself is side.ts's startWorkerSide, as in role `worker`.
 */
import type { Config } from "../config.ts";
import type { Secrets } from "../context.ts";
import type { Logger } from "../log.ts";
import type { MetricsJson } from "../metrics/metrics.ts";

/** What the worker thread needs to start: everything the API side resolved already. */
export interface ThreadInit {
  /**
   * What the thread runs: the worker half without webhooks (`worker`), or the webhook
   * dispatcher alone (`webhooks`, a thread of its own: see server.ts).
   */
  part: "worker" | "webhooks";
  config: Readonly<Config>;
  /** The database URL actually in use (the embedded one's, when it was started). */
  databaseUrl: string;
  secrets: Secrets;
  /** Base of tracking links, as the API side listens. */
  publicUrl: string;
}

/** Parent → thread. */
export type ToThread =
  | { kind: "start"; init: ThreadInit }
  | { kind: "metrics"; id: number }
  | { kind: "stop" };

/** Thread → parent. */
export type FromThread =
  | { kind: "ready" }
  | { kind: "start_failed"; error: string }
  | { kind: "metrics"; id: number; metrics: MetricsJson }
  | { kind: "stopped" };

/** The running worker thread, seen from the API side. */
export interface WorkerThread {
  /** The thread's own counters and histograms (`pp_*`), for the process's /metrics. */
  metrics(): Promise<MetricsJson>;
  /** Graceful stop of the worker half (running jobs finish), then the thread ends. */
  stop(): Promise<void>;
}

/** How long /metrics waits for the thread's counters before it answers without them, ms. */
const METRICS_TIMEOUT_MS = 5_000;

/** One thread's life: started, ready, answering, stopped or dead. */
class Thread {
  readonly worker: Worker;
  readonly ready: Promise<void>;
  /** Settles when the thread is gone, whichever way. */
  readonly ended: Promise<"stopped" | "died">;
  #pending = new Map<number, (m: MetricsJson) => void>();
  #nextId = 0;
  #end!: (how: "stopped" | "died") => void;

  constructor(init: ThreadInit, log: Logger) {
    this.worker = new Worker(new URL("./thread_main.ts", import.meta.url), { type: "module", name: `pp-${init.part}` });
    this.ended = new Promise((res) => this.#end = res);
    this.ready = new Promise((resolve, reject) => {
      this.worker.onmessage = (e: MessageEvent<FromThread>) => {
        const m = e.data;
        if (m.kind === "ready") resolve();
        else if (m.kind === "start_failed") {
          reject(new Error(`the ${init.part} thread could not start: ${m.error}`));
          this.#finish("died");
        } else if (m.kind === "metrics") this.#pending.get(m.id)?.(m.metrics);
        else if (m.kind === "stopped") this.#finish("stopped");
      };
      this.worker.onerror = (e: ErrorEvent) => {
        // Handled here: unhandled, a thread's error would end the whole process.
        e.preventDefault();
        log.error("worker thread failed", { part: init.part, err: e.message });
        reject(new Error(`the ${init.part} thread failed: ${e.message}`));
        this.#finish("died");
      };
    });
    this.ready.catch(() => {});
    this.#post({ kind: "start", init });
  }

  metrics(): Promise<MetricsJson> {
    const id = this.#nextId++;
    return new Promise((resolve) => {
      const timer = setTimeout(() => done([]), METRICS_TIMEOUT_MS);
      const done = (m: MetricsJson) => {
        clearTimeout(timer);
        this.#pending.delete(id);
        resolve(m);
      };
      this.#pending.set(id, done);
      this.#post({ kind: "metrics", id });
    });
  }

  stop(): Promise<unknown> {
    this.#post({ kind: "stop" });
    return this.ended;
  }

  #post(m: ToThread): void {
    this.worker.postMessage(m);
  }

  #finish(how: "stopped" | "died"): void {
    this.worker.terminate();
    for (const done of this.#pending.values()) done([]);
    this.#end(how);
  }
}

/**
 * Starts the worker thread and resolves once its runner listens for jobs (rejects when it
 * cannot start, as an in-process worker's start would throw). A thread that dies later
 * ends the process with exit code 1, as an uncaught error on one event loop did: the
 * supervisor starts it again, and the new runner's heartbeat check frees the dead one's jobs.
 */
export async function startWorkerThread(init: ThreadInit, log: Logger): Promise<WorkerThread> {
  const thread = new Thread(init, log);
  await thread.ready;
  let stopping = false;
  thread.ended.then((how) => {
    if (how === "stopped" || stopping) return;
    log.error("the worker thread died; exiting", { part: init.part });
    Deno.exit(1);
  });
  return {
    metrics: () => thread.metrics(),
    async stop() {
      stopping = true;
      await thread.stop();
    },
  };
}
