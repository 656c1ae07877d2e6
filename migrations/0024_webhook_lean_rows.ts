// Less work per webhook delivery in Postgres (three rows are written for each, and each
// event of each send makes one):
//
// - The payload is `json`, not `jsonb`: it is built once by the trigger and sent as stored,
//   never queried inside, so jsonb's binary form was work on the way in (building it) and on
//   the way out (`payload::text` at every claim), and its statistics were most of what an
//   analyze of the table did (230–255 → 35–58 ms for 20,000 rows, measured). Keys keep the
//   order they are built in (`type`, `timestamp`, `data`).
// - Attempts and queue rows no longer carry foreign keys to their delivery: each one checked
//   cost a lookup and a row lock on the delivery it names (the attempt is written in the
//   statement that updates that delivery; the queue row in the one that inserts it). They are
//   only written for deliveries those statements hold (webhooks/repo.ts); what the cascade did
//   on a delete (an endpoint's, retention's) a statement trigger does, set-wise.
//   Measured with both (the trigger's insert, the claims, the records of 20,000 deliveries, groups
//   of 200): 1.34–1.63 s → 0.98 s.
import { type Kysely, sql } from "kysely";
import { queueWebhooksFunction } from "./0010_webhooks.ts";
import { QUEUE_ROWS } from "./0023_webhook_queue_table.ts";

// deno-lint-ignore no-explicit-any
export async function up(db: Kysely<any>): Promise<void> {
  await sql`alter table webhook_deliveries alter column payload type json using payload::json`.execute(db);
  await sql.raw(queueWebhooksFunction(QUEUE_ROWS, "json_build_object")).execute(db);
  await sql`alter table webhook_attempts drop constraint webhook_attempts_delivery_id_fkey`.execute(db);
  await sql`alter table webhook_queue drop constraint webhook_queue_delivery_id_fkey`.execute(db);
  await sql`create function pp_webhook_deliveries_deleted() returns trigger language plpgsql as $$
    begin
      -- A probe of each index per row: joined to the transition table (no statistics) these
      -- could be planned as scans of the whole tables, once per retention slice.
      delete from webhook_attempts where delivery_id = any(array(select id from gone));
      delete from webhook_queue where delivery_id = any(array(select id from gone));
      return null;
    end $$`.execute(db);
  await sql`create trigger webhook_deliveries_deleted after delete on webhook_deliveries
    referencing old table as gone for each statement execute function pp_webhook_deliveries_deleted()`.execute(db);
}

// deno-lint-ignore no-explicit-any
export async function down(db: Kysely<any>): Promise<void> {
  await sql`drop trigger webhook_deliveries_deleted on webhook_deliveries`.execute(db);
  await sql`drop function pp_webhook_deliveries_deleted()`.execute(db);
  await sql`delete from webhook_attempts a where not exists (select 1 from webhook_deliveries d where d.id = a.delivery_id)`
    .execute(db);
  await sql`delete from webhook_queue q where not exists (select 1 from webhook_deliveries d where d.id = q.delivery_id)`
    .execute(db);
  await sql`alter table webhook_attempts add constraint webhook_attempts_delivery_id_fkey
    foreign key (delivery_id) references webhook_deliveries (id) on delete cascade`.execute(db);
  await sql`alter table webhook_queue add constraint webhook_queue_delivery_id_fkey
    foreign key (delivery_id) references webhook_deliveries (id) on delete cascade`.execute(db);
  await sql.raw(queueWebhooksFunction(QUEUE_ROWS)).execute(db);
  await sql`alter table webhook_deliveries alter column payload type jsonb using payload::jsonb`.execute(db);
}
