/**
 * Group commit: many callers' writes in one transaction. Postgres flushes its WAL at every
 * commit and commits transactions that NOTIFY, or that update the same hot row, one at a
 * time; one commit per email capped a process at a few hundred per second. Here the items
 * that arrive while `concurrency` groups are being written wait for the next group, so under
 * load one commit carries many items and at rest an item is written at once (no timer, no
 * added latency). Each caller's promise settles when its own item is durable.
 *
 * If a whole group fails (one bad row fails a set-wise statement, or a check throws), each of
 * its items is retried alone, so one item's error is never another's.
 */

/** Writes a group; returns one result per item, in order (nothing, when items have no result). */
export type GroupWriter<T, R> = (items: T[]) => Promise<[R] extends [void] ? void : R[]>;

/** Queues items and writes them in groups; see the module comment. */
export class GroupCommit<T, R = void> {
  #pending: { item: T; resolve: (r: R) => void; reject: (err: unknown) => void }[] = [];
  #inFlight = 0;

  /**
   * `max`: most items per group. `concurrency`: groups written at once (2 lets one group's
   * statements run while the other waits on its commit).
   */
  constructor(
    private readonly write: GroupWriter<T, R>,
    private readonly max = 1000,
    private readonly concurrency = 2,
  ) {}

  /** Resolves with the item's result once its group has committed. */
  add(item: T): Promise<R> {
    return new Promise((resolve, reject) => {
      this.#pending.push({ item, resolve, reject });
      this.#pump();
    });
  }

  #pump(): void {
    while (this.#inFlight < this.concurrency && this.#pending.length) {
      const group = this.#pending.splice(0, this.max);
      this.#inFlight++;
      void this.#writeGroup(group).finally(() => {
        this.#inFlight--;
        this.#pump();
      });
    }
  }

  async #writeGroup(group: { item: T; resolve: (r: R) => void; reject: (err: unknown) => void }[]): Promise<void> {
    try {
      const results = (await this.write(group.map((g) => g.item))) as R[] | void;
      group.forEach((g, i) => g.resolve(results?.[i] as R));
    } catch (err) {
      if (group.length === 1) return group[0].reject(err);
      await Promise.all(group.map(async (g) => {
        try {
          g.resolve(((await this.write([g.item])) as R[] | void)?.[0] as R);
        } catch (e) {
          g.reject(e);
        }
      }));
    }
  }
}
