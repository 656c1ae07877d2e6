/**
 * The bench's measuring tools, shared by the scenarios (bench/scenarios/): the result row,
 * autocannon loads, closed loops for the raw baselines, and what the machine's processes
 * used (CPU, memory) while a scenario ran. Nothing here knows the service.
 */
import autocannon from "autocannon";
import type pg from "pg";

/** One row of results.json (and of the printed table), keyed by the scenario's name. */
export interface Scenario {
  value: number;
  unit: string;
  target: string;
  baseline?: number;
  ratio?: number;
  pass: boolean;
  /** What else was measured (percentiles, counts), for the table. */
  details: Record<string, number | string>;
}

/** Connections of the saturating HTTP loads and of the closed-loop baselines beside them. */
export const CONNECTIONS = 32;

export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
/** `n` rounded to `d` decimals. */
export const round = (n: number, d = 0) => Math.round(n * 10 ** d) / 10 ** d;
/** A port for a process of the bench; random, so that two runs' leftovers do not collide. */
export const freePort = () => 40_000 + Math.floor(Math.random() * 9_000);

/** The nearest-rank `p`th percentile of `xs`; NaN when there are none. */
export function pct(xs: number[], p: number): number {
  if (xs.length === 0) return NaN;
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.ceil(p / 100 * s.length) - 1)];
}

/** autocannon's figures for one load: answers with `expect`/s over the run, latency percentiles in ms. */
export interface Load {
  ok: number;
  other: number;
  rps: number;
  p50: number;
  p99: number;
}

/** Runs one autocannon load from this process; answers other than `expect` count as `other`. */
export async function load(opts: autocannon.Options, expect: number): Promise<Load> {
  const r = await autocannon(opts);
  const codes = r.statusCodeStats as unknown as Record<string, { count: number }>;
  const ok = codes?.[String(expect)]?.count ?? 0;
  const seconds = r.duration || Number(opts.duration);
  return {
    ok,
    other: r.requests.total - ok + r.errors + r.timeouts,
    rps: ok / seconds,
    p50: r.latency.p50,
    p99: r.latency.p99,
  };
}

/**
 * The warm-up before a measured load: `opts` for 2 s at 8 connections, so that the JIT and
 * the pools' connections are ready when the measurement starts. Its figures are dropped.
 */
export async function warmUp(opts: autocannon.Options, expect: number): Promise<void> {
  await load({ ...opts, connections: 8, duration: 2 }, expect);
}

/** Loads of equal length as one: answers summed, rates averaged, the median p50 and the worst p99. */
export function combine(loads: Load[]): Load {
  return {
    ok: loads.reduce((n, l) => n + l.ok, 0),
    other: loads.reduce((n, l) => n + l.other, 0),
    rps: loads.reduce((n, l) => n + l.rps, 0) / loads.length,
    p50: pct(loads.map((l) => l.p50), 50),
    p99: Math.max(...loads.map((l) => l.p99)),
  };
}

/** Runs `fn` from `workers` loops for `seconds`; how many ran and each one's latency. */
export async function closedLoop(workers: number, seconds: number, fn: () => Promise<void>) {
  const lat: number[] = [];
  const until = performance.now() + seconds * 1000;
  const t0 = performance.now();
  await Promise.all(Array.from({ length: workers }, async () => {
    while (performance.now() < until) {
      const t = performance.now();
      await fn();
      lat.push(performance.now() - t);
    }
  }));
  return { n: lat.length, seconds: (performance.now() - t0) / 1000, lat };
}

/**
 * Runs `fn` in one transaction on a connection of `pool` (the raw baselines' writes). An
 * error ends the bench, so there is no rollback: the connection is released either way.
 */
export async function inTransaction(pool: pg.Pool, fn: (c: pg.PoolClient) => Promise<void>): Promise<void> {
  const c = await pool.connect();
  try {
    await c.query("begin");
    await fn(c);
    await c.query("commit");
  } finally {
    c.release();
  }
}

/** CPU seconds (user + system, all threads) used so far by each process, keyed by pid; and each one's command name and parent. */
export async function cpuTimes(): Promise<Map<number, { comm: string; s: number; ppid: number }>> {
  const out = new Map<number, { comm: string; s: number; ppid: number }>();
  for await (const e of Deno.readDir("/proc")) {
    if (!/^\d+$/.test(e.name)) continue;
    try {
      const stat = await Deno.readTextFile(`/proc/${e.name}/stat`);
      const close = stat.lastIndexOf(")");
      const f = stat.slice(close + 2).split(" "); // from field 3 (state) on
      out.set(Number(e.name), {
        comm: stat.slice(stat.indexOf("(") + 1, close),
        s: (Number(f[11]) + Number(f[12])) / 100,
        ppid: Number(f[1]),
      });
    } catch { /* the process ended */ }
  }
  return out;
}

/** CPU seconds by kind of thread (threadTimes). */
export interface ThreadTimes {
  main: number;
  worker: number;
  v8: number;
  io: number;
}

/**
 * CPU seconds used so far by the threads of `pid` that run JavaScript: `main` (the thread
 * whose id is the pid) and `worker` (Deno's Web Worker threads, named worker-N: the
 * service's worker thread and its report parser), `v8` (V8's helper threads: concurrent
 * GC and compilation) and `io` (tokio's threads: sockets, files, DNS).
 */
export async function threadTimes(pid: number): Promise<ThreadTimes> {
  const out = { main: 0, worker: 0, v8: 0, io: 0 };
  for await (const t of Deno.readDir(`/proc/${pid}/task`)) {
    try {
      const stat = await Deno.readTextFile(`/proc/${pid}/task/${t.name}/stat`);
      const close = stat.lastIndexOf(")");
      const comm = stat.slice(stat.indexOf("(") + 1, close);
      const f = stat.slice(close + 2).split(" ");
      const s = (Number(f[11]) + Number(f[12])) / 100;
      if (Number(t.name) === pid) out.main += s;
      else if (comm.startsWith("worker-")) out.worker += s;
      else if (comm.startsWith("V8 ")) out.v8 += s;
      else if (comm.startsWith("tokio-")) out.io += s;
    } catch { /* the thread ended */ }
  }
  return out;
}

/** Measures where the CPU went while a scenario's measured phase ran (see cpuMeter). */
export interface CpuMeter {
  /** Runs `fn`; its result and the CPU figures (`cpu_*_pct`) over its wall time. */
  measure<T>(fn: () => Promise<T>): Promise<[T, Record<string, number>]>;
}

/**
 * Where the machine's CPU went during a scenario, as % of one core over its wall time: the
 * service (and, of its first process, the main and worker threads: threadTimes), Postgres
 * (every `postgres` process), the SMTP sink and this process (the load generator and the
 * baselines). On 2 cores, 200% in all is a saturated machine.
 */
export function cpuMeter(pids: { service: number[]; sink: number }): CpuMeter {
  return {
    async measure(fn) {
      const before = await cpuTimes();
      const none: ThreadTimes = { main: 0, worker: 0, v8: 0, io: 0 };
      const threadsBefore = await threadTimes(pids.service[0]).catch(() => none);
      const t0 = performance.now();
      const result = await fn();
      const after = await cpuTimes();
      const threadsAfter = await threadTimes(pids.service[0]).catch(() => none);
      const threadPct = (k: keyof ThreadTimes) => Math.round((threadsAfter[k] - threadsBefore[k]) / wall * 100);
      const wall = (performance.now() - t0) / 1000;
      const used = (pick: (pid: number, comm: string, ppid: number) => boolean) => {
        let s = 0;
        for (const [pid, a] of after) if (pick(pid, a.comm, a.ppid)) s += a.s - (before.get(pid)?.s ?? 0);
        return Math.round(s / wall * 100);
      };
      return [result, {
        cpu_service_pct: used((pid) => pids.service.includes(pid)),
        // The first service process's JavaScript threads: the HTTP side and the worker thread.
        cpu_service_main_thread_pct: threadPct("main"),
        cpu_service_worker_thread_pct: threadPct("worker"),
        cpu_service_v8_helpers_pct: threadPct("v8"),
        cpu_service_io_threads_pct: threadPct("io"),
        // The service's children: its render sandboxes (mail/render.ts).
        cpu_render_pct: used((_, __, ppid) => pids.service.includes(ppid)),
        cpu_postgres_pct: used((_, comm) => comm === "postgres"),
        cpu_sink_pct: used((pid) => pid === pids.sink),
        cpu_bench_pct: used((pid) => pid === Deno.pid),
      }];
    },
  };
}

/** Resident memory of a process in MB: now (VmRSS) and its peak so far (VmHWM). */
export async function rssOf(pid: number): Promise<{ rss: number; hwm: number }> {
  const s = await Deno.readTextFile(`/proc/${pid}/status`);
  const kb = (k: string) => Number(s.match(new RegExp(`${k}:\\s+(\\d+)`))?.[1] ?? 0);
  return { rss: kb("VmRSS") / 1024, hwm: kb("VmHWM") / 1024 };
}
