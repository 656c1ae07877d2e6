/**
 * Group commit for tracking hits: while one batch is being queued, the hits that arrive
 * wait for the next, so under load one `add_job` carries hundreds of events and at rest
 * a hit is queued at once. A caller's promise settles when its hit is stored — the
 * endpoint answers only then, so nothing acknowledged can be lost with the process.
 */
import type { Kysely } from "kysely";
import type { Database } from "../db/tables.ts";
import type { RecordEventPayload } from "./inputs.ts";
import { enqueueEvents } from "./repo.ts";

/** Most events per queued job. */
export const MAX_BATCH_EVENTS = 1000;

/** Queues events in batches; see the module comment. */
export class EventBatcher {
  #pending: { event: RecordEventPayload; done: (err?: unknown) => void }[] = [];
  #flushing = false;

  constructor(private readonly db: Kysely<Database>) {}

  /** Resolves once `event` is in the job queue (rejects if queueing failed). */
  add(event: RecordEventPayload): Promise<void> {
    return new Promise((resolve, reject) => {
      this.#pending.push({ event, done: (err) => err ? reject(err) : resolve() });
      if (!this.#flushing) void this.#flush();
    });
  }

  async #flush(): Promise<void> {
    this.#flushing = true;
    while (this.#pending.length) {
      const batch = this.#pending.splice(0, MAX_BATCH_EVENTS);
      try {
        await enqueueEvents(this.db, batch.map((b) => b.event));
        for (const b of batch) b.done();
      } catch (err) {
        for (const b of batch) b.done(err);
      }
    }
    this.#flushing = false;
  }
}
