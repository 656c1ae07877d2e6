// Every process caches API keys, account state, templates and verified domains (src/cache.ts).
// A change to one of those rows, made anywhere (a service, a task, psql), is announced on
// `pp_cache` as `<topic>:<key>` when its transaction commits, so that every process drops the
// entry at once instead of trusting it until its TTL. Row triggers: these tables change
// rarely, and NOTIFY folds identical payloads of one transaction into one.
import { type Kysely, sql } from "kysely";

/** Table → the notice's topic and the columns that make its key (joined with `:`). */
const ANNOUNCED = [
  { table: "api_keys", topic: "api_key", key: ["key_hash"] },
  { table: "accounts", topic: "account", key: ["id"] },
  { table: "templates", topic: "template", key: ["account_id", "id"] },
  // A domain covers its subdomains: the notice names the account, whose every entry goes.
  { table: "domains", topic: "domain", key: ["account_id"] },
];

// deno-lint-ignore no-explicit-any
export async function up(db: Kysely<any>): Promise<void> {
  // Arguments: the topic, then the key's columns. The row is read as jsonb so that one
  // function serves every table.
  await sql`
    create function pp_cache_notice() returns trigger language plpgsql as $$
    declare
      r jsonb := to_jsonb(case when tg_op = 'DELETE' then old else new end);
      k text := tg_argv[0];
    begin
      for i in 1 .. tg_nargs - 1 loop
        k := k || ':' || coalesce(r ->> tg_argv[i], '');
      end loop;
      perform pg_notify('pp_cache', k);
      return null;
    end $$`.execute(db);
  for (const a of ANNOUNCED) {
    const args = [a.topic, ...a.key].map((v) => `'${v}'`).join(", ");
    await sql`create trigger ${sql.raw(`${a.table}_cache_notice`)}
      after insert or update or delete on ${sql.table(a.table)}
      for each row execute function pp_cache_notice(${sql.raw(args)})`.execute(db);
  }
}

// deno-lint-ignore no-explicit-any
export async function down(db: Kysely<any>): Promise<void> {
  for (const a of ANNOUNCED) {
    await sql`drop trigger if exists ${sql.raw(`${a.table}_cache_notice`)} on ${sql.table(a.table)}`.execute(db);
  }
  await sql`drop function if exists pp_cache_notice()`.execute(db);
}
