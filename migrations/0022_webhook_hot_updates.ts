// Recording an attempt updates its delivery in place (a HOT update) instead of writing a new
// copy of the row into every index. The partial index of pending deliveries by
// next_attempt_at made every such update non-HOT (an update that changes an indexed column,
// or one in an index's predicate, must add index entries): each outcome added entries to the
// primary key and the endpoint index too, and the dead ones stayed until a vacuum. Nothing
// reads deliveries by that index but the backlog gauges, which now count the webhook queue's
// jobs instead (webhooks/repo.ts backlog). A fillfactor of 80 leaves each page room for the
// updated versions of its rows (a delivery is updated once when its first attempt succeeds).
import { type Kysely, sql } from "kysely";

// deno-lint-ignore no-explicit-any
export async function up(db: Kysely<any>): Promise<void> {
  await sql`drop index if exists webhook_deliveries_pending`.execute(db);
  await sql`alter table webhook_deliveries set (fillfactor = 80)`.execute(db);
}

// deno-lint-ignore no-explicit-any
export async function down(db: Kysely<any>): Promise<void> {
  await sql`alter table webhook_deliveries reset (fillfactor)`.execute(db);
  await sql`create index webhook_deliveries_pending on webhook_deliveries (next_attempt_at) where status = 'pending'`
    .execute(db);
}
