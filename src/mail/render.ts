/**
 * Template rendering. Tenants' nunjucks text never runs in this process: `RenderPool`
 * sends every compile and render to long-lived sandbox processes (render_sandbox.ts: no
 * permissions, a capped heap), in groups, and kills and replaces one that passes the time
 * limit or dies. HTML is autoescaped; subject and text are rendered without HTML escaping
 * (an `&` in a subject stays an `&`), and the subject's line breaks are folded to spaces so
 * no value can add a header.
 */
import { fileURLToPath } from "node:url";
import { AppError, type FieldError } from "../errors.ts";
import type { Logger } from "../log.ts";
import { renderFailures } from "../metrics/metrics.ts";
import { lines } from "./ndjson.ts";

/** The parts of a stored template that rendering needs. */
export interface TemplateSource {
  id: string;
  updated_at: Date;
  html: string | null;
  text: string | null;
}

/** The contact values a template can use. */
export interface ContactFields {
  email: string;
  first_name: string | null;
  last_name: string | null;
  company: string | null;
  fields: Record<string, unknown>;
}

/** A rendered message body. */
export interface Rendered {
  subject: string;
  html?: string;
  text?: string;
  /** Variables the template used that neither the contact nor the personalizations had. */
  missingVariables: string[];
}

/**
 * A template that could not be rendered: a runtime error in it, or the time, output or
 * memory limit. Its message says which, and is safe to show to the tenant.
 */
export class RenderError extends Error {
  override name = "RenderError";
}

/**
 * The render context: contact fields, then custom fields, then the send's personalizations
 * (which win over both), then `extra` — values the service owns, such as `unsubscribe_url`,
 * which a personalization must not replace.
 */
export function renderContext(
  contact: ContactFields,
  personalizations: Record<string, unknown>,
  extra: Record<string, unknown> = {},
): Record<string, unknown> {
  const base: Record<string, unknown> = { email: contact.email };
  if (contact.first_name != null) base.first_name = contact.first_name;
  if (contact.last_name != null) base.last_name = contact.last_name;
  if (contact.company != null) base.company = contact.company;
  return { ...base, ...contact.fields, ...personalizations, ...extra };
}

/**
 * Refuses, with one 422 `validation_failed` naming each field, template sources that do not
 * compile (checked in the sandbox, like every render). `fields` maps a field's path to its
 * source; empty ones are skipped.
 */
export async function assertCompiles(
  renderer: RenderPool,
  fields: Record<string, string | null | undefined>,
): Promise<void> {
  const checked = await Promise.all(
    Object.entries(fields).map(async ([path, src]) => ({ path, err: src ? await renderer.check(src) : null })),
  );
  const errors: FieldError[] = checked.filter((c) => c.err !== null).map((c) => ({
    path: c.path,
    message: `does not compile as a template: ${c.err}`,
  }));
  if (errors.length) {
    throw new AppError("validation_failed", errors.map((e) => `${e.path}: ${e.message}`).join("; "), errors);
  }
}

// ---- the wire format shared with render_sandbox.ts ----

/** One template text: `key` names its compiled form in the sandbox, `src` is sent when the sandbox lacks it. */
export interface RenderPart {
  key: string;
  src?: string;
}

/** One unit of work: compile `check`, or render the parts with `context`. */
export interface RenderItem {
  check?: string;
  subject?: RenderPart;
  html?: RenderPart;
  text?: RenderPart;
  context?: Record<string, unknown>;
}

/** The sandbox's answer to item `i` of group `g`. */
export interface RenderReply {
  g: number;
  i: number;
  ok?: { subject?: string; html?: string; text?: string; missing?: string[] };
  err?: string;
}

// ---- the pool ----

/** What RenderPool needs to know; every field's default is the config's. */
export interface RenderPoolOptions {
  /** Sandbox processes. Default 2 (PP_RENDER_WORKERS). */
  size: number;
  /** Longest one compile or render may take, ms; past it the sandbox is killed. Default 2000 (PP_RENDER_TIMEOUT_MS). */
  timeoutMs: number;
  /** V8 heap cap of each sandbox, MB. Default 256. */
  heapMb: number;
  log: Logger;
}

/** How long an item may run before the items queued behind it in its group go elsewhere, ms. */
const SLOW_MS = 100;
/**
 * The most any part of a message may weigh, in UTF-8 bytes (API.md: 2 MB per part): a
 * rendered one (render_sandbox.ts), and a submitted message's own (submission/inputs.ts).
 */
export const MAX_PART_BYTES = 2 * 1024 * 1024;
/** Most items sent to a sandbox in one group. */
const GROUP_MAX = 50;
/** Compiled sources a sandbox keeps; the oldest is dropped past this. */
const KNOWN_MAX = 2_000;
/** Compile checks remembered here (sources up to CHECK_CACHE_SRC_MAX characters). */
const CHECK_CACHE_MAX = 2_000;
const CHECK_CACHE_SRC_MAX = 4_096;
/** Sandboxes that die before they are ready, in a row, before queued work is failed. */
const START_FAILURES_MAX = 3;

const SANDBOX = fileURLToPath(new URL("./render_sandbox.ts", import.meta.url));
const CONFIG = fileURLToPath(new URL("../../deno.json", import.meta.url));

interface Job {
  /** Sources by part; subject is always there for a render. */
  parts: {
    subject?: RenderPart & { src: string };
    html?: RenderPart & { src: string };
    text?: RenderPart & { src: string };
  };
  check?: string;
  context?: Record<string, unknown>;
  resolve: (r: NonNullable<RenderReply["ok"]>) => void;
  reject: (e: Error) => void;
}

interface Sandbox {
  proc: Deno.ChildProcess;
  writer: WritableStreamDefaultWriter<Uint8Array>;
  ready: boolean;
  /**
   * The group being rendered (the whole line the sandbox was sent), the index of its first
   * unanswered item, and how many of its items are still this sandbox's to answer: #slow
   * hands the rest to others, but the sandbox renders them anyway and stays busy until it
   * has (their answers only count as progress).
   */
  group: Job[] | null;
  next: number;
  live: number;
  g: number;
  /** Keys this sandbox has compiled, oldest first; `drops` are evicted keys to tell it. */
  known: Map<string, true>;
  drops: string[];
  timer?: ReturnType<typeof setTimeout>;
  slowTimer?: ReturnType<typeof setTimeout>;
  /** Set once this sandbox is being replaced, so its exit is handled once. */
  gone: boolean;
  stderr: string;
}

/**
 * Renders and compile-checks templates in sandbox processes. Work arrives from many
 * deliveries at once; what arrives while the sandboxes are busy goes in the next group, so
 * a busy pool costs one pipe write per group. When an item passes the time limit, or its
 * sandbox dies (out of memory), that item fails with a RenderError, the sandbox is replaced
 * and the rest of its group is rendered again elsewhere: one tenant's template never fails
 * another's.
 */
export class RenderPool {
  #queue: Job[] = [];
  #sandboxes: Sandbox[] = [];
  #scheduled = false;
  #closed = false;
  #startFailures = 0;
  #respawn?: ReturnType<typeof setTimeout>;
  #checks = new Map<string, string | null>();
  #encoder = new TextEncoder();

  constructor(private readonly opts: RenderPoolOptions) {
    for (let i = 0; i < opts.size; i++) this.#spawn();
  }

  /** Renders `subjectSrc` (the send's, fixed at acceptance) and the template's HTML and text with `context`. */
  async render(tpl: TemplateSource, subjectSrc: string, context: Record<string, unknown>): Promise<Rendered> {
    const v = tpl.updated_at.getTime();
    const r = await this.#submit({
      parts: {
        subject: { key: `s:${subjectSrc}`, src: subjectSrc },
        html: tpl.html ? { key: `${tpl.id}:${v}:h`, src: tpl.html } : undefined,
        text: tpl.text ? { key: `${tpl.id}:${v}:t`, src: tpl.text } : undefined,
      },
      context,
    });
    return { subject: r.subject ?? "", html: r.html, text: r.text, missingVariables: r.missing ?? [] };
  }

  /**
   * Checks that `src` compiles; returns the compiler's message when it does not (also when
   * compiling passes the time or memory limit). Used to refuse a broken template when it is
   * saved or accepted, not when it is sent. Short sources' answers are remembered.
   */
  async check(src: string): Promise<string | null> {
    const cacheable = src.length <= CHECK_CACHE_SRC_MAX;
    if (cacheable && this.#checks.has(src)) return this.#checks.get(src)!;
    let err: string | null = null;
    try {
      await this.#submit({ parts: {}, check: src });
    } catch (e) {
      if (!(e instanceof RenderError)) throw e;
      err = e.message;
    }
    if (cacheable) {
      if (this.#checks.size >= CHECK_CACHE_MAX) this.#checks.delete(this.#checks.keys().next().value!);
      this.#checks.set(src, err);
    }
    return err;
  }

  /** Kills the sandboxes; queued and running work fails. */
  close(): void {
    this.#closed = true;
    clearTimeout(this.#respawn);
    for (const s of this.#sandboxes) this.#retire(s);
    this.#failQueued(new Error("the renderer is stopping"));
  }

  #submit(job: Omit<Job, "resolve" | "reject">): Promise<NonNullable<RenderReply["ok"]>> {
    if (this.#closed) return Promise.reject(new Error("the renderer is stopping"));
    return new Promise((resolve, reject) => {
      this.#queue.push({ ...job, resolve, reject });
      // Everything submitted in this tick goes out together.
      if (!this.#scheduled) {
        this.#scheduled = true;
        queueMicrotask(() => {
          this.#scheduled = false;
          this.#pump();
        });
      }
    });
  }

  #spawn(): void {
    const { heapMb } = this.opts;
    const proc = new Deno.Command(Deno.execPath(), {
      // No --allow-* flag: the sandbox may read its modules and nothing else.
      args: [
        "run",
        "--quiet",
        "--no-prompt",
        `--config=${CONFIG}`,
        `--v8-flags=--max-old-space-size=${heapMb}`,
        SANDBOX,
      ],
      stdin: "piped",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    const s: Sandbox = {
      proc,
      writer: proc.stdin.getWriter(),
      ready: false,
      group: null,
      next: 0,
      live: 0,
      g: 0,
      known: new Map(),
      drops: [],
      gone: false,
      stderr: "",
    };
    this.#sandboxes.push(s);
    // Writes to a sandbox that just died fail; its exit is handled below.
    s.writer.closed.catch(() => {});
    this.#read(s);
    this.#readStderr(s);
    proc.status.then((st) => this.#exited(s, st));
  }

  async #read(s: Sandbox) {
    try {
      for await (const line of lines(s.proc.stdout)) {
        if (s.gone) return;
        const reply = JSON.parse(line) as RenderReply & { ready?: boolean };
        if (reply.ready) {
          s.ready = true;
          this.#startFailures = 0;
          this.#pump();
          continue;
        }
        if (!s.group || reply.g !== s.g) continue;
        s.next = reply.i + 1;
        // Items handed elsewhere by #slow are answered there; here they are only progress.
        if (reply.i < s.live) {
          const job = s.group[reply.i];
          if (reply.err !== undefined) {
            // A compile check's refusal is a validation answer, not a failed render.
            if (job.check === undefined) renderFailures.inc({ reason: "template_error" });
            job.reject(new RenderError(reply.err));
          } else job.resolve(reply.ok ?? {});
        }
        this.#arm(s);
        if (s.next >= s.group.length) {
          s.group = null;
          this.#pump();
        }
      }
    } catch {
      // The pipe broke: the exit handler deals with it.
    }
  }

  async #readStderr(s: Sandbox) {
    try {
      for await (const chunk of s.proc.stderr.pipeThrough(new TextDecoderStream())) {
        s.stderr = (s.stderr + chunk).slice(-2_000);
      }
    } catch {
      // Ended with the process.
    }
  }

  #pump(): void {
    if (this.#closed) return;
    for (const s of this.#sandboxes) {
      if (this.#queue.length === 0) return;
      if (!s.ready || s.gone || s.group) continue;
      this.#dispatch(s, this.#queue.splice(0, GROUP_MAX));
    }
  }

  #dispatch(s: Sandbox, group: Job[]): void {
    s.group = group;
    s.next = 0;
    s.live = group.length;
    s.g++;
    const items: RenderItem[] = group.map((job) => {
      if (job.check !== undefined) return { check: job.check };
      const item: RenderItem = { context: job.context };
      for (const name of ["subject", "html", "text"] as const) {
        const part = job.parts[name];
        if (part) item[name] = { key: part.key, src: this.#learn(s, part.key) ? part.src : undefined };
      }
      return item;
    });
    // A key dropped and learned again within this group stays.
    const drop = s.drops.filter((k) => !s.known.has(k));
    const line = JSON.stringify({ g: s.g, drop: drop.length ? drop : undefined, items });
    s.drops = [];
    this.#arm(s);
    s.writer.write(this.#encoder.encode(line + "\n")).catch(() => {});
  }

  /** Records that `s` will have compiled `key`; true when it does not have it yet (send the source). */
  #learn(s: Sandbox, key: string): boolean {
    if (s.known.delete(key)) {
      s.known.set(key, true);
      return false;
    }
    s.known.set(key, true);
    if (s.known.size > KNOWN_MAX) {
      const oldest = s.known.keys().next().value!;
      s.known.delete(oldest);
      s.drops.push(oldest);
    }
    return true;
  }

  /** (Re)starts the timers of the item `s` is on now: the time limit, and the slow mark. */
  #arm(s: Sandbox): void {
    clearTimeout(s.timer);
    clearTimeout(s.slowTimer);
    if (!s.group || s.next >= s.group.length) return;
    s.timer = setTimeout(() => this.#timedOut(s), this.opts.timeoutMs);
    if (s.next + 1 < s.live) s.slowTimer = setTimeout(() => this.#slow(s), SLOW_MS);
  }

  /**
   * An item has run for SLOW_MS: the rest of its group goes back to the queue for another
   * sandbox, so the items behind a template that loops wait SLOW_MS, not the time limit.
   * Rendering is pure, so the ones this sandbox still renders are merely rendered twice.
   */
  #slow(s: Sandbox): void {
    if (s.gone || !s.group || s.next + 1 >= s.live) return;
    this.#queue.unshift(...s.group.slice(s.next + 1, s.live));
    s.live = s.next + 1;
    this.#pump();
  }

  #timedOut(s: Sandbox): void {
    if (s.gone || !s.group) return;
    this.opts.log.warn("template render timed out; sandbox replaced", { timeoutMs: this.opts.timeoutMs });
    this.#fail(s, `rendering took longer than the ${this.opts.timeoutMs} ms limit`, "timeout");
  }

  #exited(s: Sandbox, st: Deno.CommandStatus): void {
    if (s.gone) return;
    if (!s.ready) {
      this.#startFailures++;
      this.opts.log.error("render sandbox failed to start", {
        code: st.code,
        signal: st.signal,
        stderr: s.stderr.slice(-500),
      });
      this.#retire(s);
      if (this.#startFailures >= START_FAILURES_MAX) {
        this.#failQueued(new Error(`the render sandbox cannot start: ${s.stderr.slice(-300)}`));
      }
      if (!this.#closed) {
        this.#respawn = setTimeout(
          () => this.#closed || this.#spawn(),
          Math.min(30_000, 250 * 2 ** this.#startFailures),
        );
      }
      return;
    }
    this.opts.log.warn("render sandbox died; replaced", { code: st.code, signal: st.signal });
    this.#fail(s, "rendering ran out of memory or crashed its sandbox", "crashed");
  }

  /**
   * The item `s` was rendering fails with `reason`; the rest of its group goes back to the
   * front of the queue; `s` is replaced.
   */
  #fail(s: Sandbox, reason: string, kind: "timeout" | "crashed"): void {
    const group = s.group;
    const { next, live } = s;
    this.#retire(s);
    // The culprit is blamed only if it was still this sandbox's (not a handed-away one).
    if (group && next < live) {
      if (group[next].check === undefined) renderFailures.inc({ reason: kind });
      group[next].reject(new RenderError(reason));
      this.#queue.unshift(...group.slice(next + 1, live));
    }
    if (!this.#closed) this.#spawn();
    this.#pump();
  }

  #retire(s: Sandbox): void {
    if (s.gone) return;
    s.gone = true;
    clearTimeout(s.timer);
    clearTimeout(s.slowTimer);
    this.#sandboxes = this.#sandboxes.filter((x) => x !== s);
    try {
      s.proc.kill("SIGKILL");
    } catch {
      // Already exited.
    }
    if (this.#closed && s.group) {
      for (const job of s.group.slice(s.next, s.live)) job.reject(new Error("the renderer is stopping"));
    }
  }

  #failQueued(err: Error): void {
    for (const job of this.#queue.splice(0)) job.reject(err);
  }
}
