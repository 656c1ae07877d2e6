/**
 * Retention (PP_RETENTION_DAYS): the hourly `retention` job deletes sends that finished
 * before the window, their events, batches left empty, expired idempotency keys and outbox
 * files, in bounded statements; what is pending, recent or counted (monthly usage) stays.
 * Rows are backdated with SQL and the job is queued through graphile-worker, never waited for.
 */
import { loadConfig } from "../src/config.ts";
import { runRetention } from "../src/retention/service.ts";
import { assert, assertEquals } from "./assert.ts";
import { opts, send, type Stack, startStack, waitFor, waitForStatus } from "./helpers.ts";

/** Queues a `retention` job as an operator could (SQL) and waits until the worker has completed it. */
async function runJob(stack: Stack, timeoutMs = 30_000): Promise<void> {
  await stack.pg.query(`select graphile_worker.add_job('retention', '{}'::json)`);
  await waitFor(
    async () => {
      const r = await stack.pg.query(
        `select attempts, last_error from graphile_worker.jobs where task_identifier = 'retention'`,
      );
      if (r.rows.some((j) => j.last_error)) throw new Error(`retention failed: ${r.rows[0].last_error}`);
      return r.rows.length === 0;
    },
    timeoutMs,
    "the retention job to complete",
  );
}

async function exists(path: string): Promise<boolean> {
  return await Deno.stat(path).then(() => true, () => false);
}

/** Sets a send's created_at (and updated_at unless given apart) and its events' times `days` back. */
async function backdate(stack: Stack, ids: string[], days: number, updatedDaysAgo = days) {
  await stack.pg.query(
    `update sends set created_at = now() - make_interval(days => $2), updated_at = now() - make_interval(days => $3)
     where id = any($1::uuid[])`,
    [ids, days, updatedDaysAgo],
  );
  await stack.pg.query(
    `update email_events set occurred_at = now() - make_interval(days => $2) where send_id = any($1::uuid[])`,
    [ids, days],
  );
}

const usage = (stack: Stack) =>
  stack.pg.query("select account_id, month::text, used from account_usage order by 1, 2").then((r) => r.rows);

Deno.test("retention: PP_RETENTION_DAYS defaults to 30 and is at least 7 (the reputation window)", () => {
  assertEquals(loadConfig({}).retentionDays, 30);
  assertEquals(loadConfig({ PP_RETENTION_DAYS: "7" }).retentionDays, 7);
  let err: unknown = null;
  try {
    loadConfig({ PP_RETENTION_DAYS: "6" });
  } catch (e) {
    err = e;
  }
  assert(err instanceof Error && /PP_RETENTION_DAYS/.test(err.message), String(err));
});

Deno.test("retention: old finished sends, their events, keys and outbox files go; the rest stays", opts, async (t) => {
  const stack = await startStack();
  try {
    const outbox = `${stack.dataDir}/outbox`;

    await t.step("the job is on the worker's hourly cron", async () => {
      // The worker thread registers its crontab as its runner starts, which may come after
      // the stack answers HTTP: wait for it (CI once read 0 here).
      const known = () =>
        stack.count(`select count(*) from graphile_worker._private_known_crontabs where identifier = 'retention'`);
      await waitFor(async () => await known() === 1, 10_000, "the retention crontab");
      assertEquals(await known(), 1);
    });

    // A TEST key: every message is written to the outbox as <send id>.eml.
    const tenant = await stack.tenant({ mode: "TEST" });
    const mail = (to: string, extra: Record<string, unknown> = {}) => ({ templateId: tenant.templateId, to, ...extra });
    const idempotent = (key: string) => ({ "idempotency-key": key });
    const oldSends = [
      await send(stack, tenant.key, mail("old-1@example.test"), idempotent("old-key-1")),
      await send(stack, tenant.key, mail("old-2@example.test"), idempotent("old-key-2")),
    ];
    const recent = await send(stack, tenant.key, mail("recent@example.test"), idempotent("new-key-1"));
    // Created before the window but finished inside it (held, then delivered): kept.
    const lateFinish = await send(stack, tenant.key, mail("late@example.test"));
    const inFlight = await send(stack, tenant.key, mail("inflight@example.test"));
    const held = await send(stack, tenant.key, mail("held@example.test"));
    const batch = (to: string[]) =>
      stack.api("POST", "/api/v1/sends/batch", {
        key: tenant.key,
        body: { templateId: tenant.templateId, recipients: to.map((x) => ({ to: x })) },
      }).then((r) => {
        assertEquals(r.status, 202, JSON.stringify(r.body));
        return r.body as { batchId: string; sends: { id: string }[] };
      });
    const oldBatch = await batch(["ob-1@example.test", "ob-2@example.test", "ob-3@example.test"]);
    const newBatch = await batch(["nb-1@example.test", "nb-2@example.test"]);
    const delivered = [...oldSends, recent, lateFinish, inFlight, held, ...oldBatch.sends, ...newBatch.sends];
    for (const s of delivered) await waitForStatus(stack, tenant.key, s.id, ["delivered"]);
    // Not finished, however old: one scheduled beyond the schedule horizon (no job yet), one
    // within it (a job due later); below, one a worker is still delivering and one held queued.
    const farAway = await send(
      stack,
      tenant.key,
      mail("far@example.test", { scheduledAt: new Date(Date.now() + 5 * 86_400_000).toISOString() }),
    );
    const soon = await send(
      stack,
      tenant.key,
      mail("soon@example.test", { scheduledAt: new Date(Date.now() + 300_000).toISOString() }),
    );
    assertEquals([farAway.status, soon.status], ["scheduled", "scheduled"]);

    const oldIds = [...oldSends.map((s) => s.id), ...oldBatch.sends.map((s) => s.id)];
    const keptIds = [
      recent.id,
      lateFinish.id,
      inFlight.id,
      held.id,
      farAway.id,
      soon.id,
      ...newBatch.sends.map((s) => s.id),
    ];
    await backdate(stack, oldIds, 40);
    await backdate(stack, [lateFinish.id], 40, 3);
    await backdate(stack, [inFlight.id, held.id, farAway.id, soon.id], 40);
    // As a worker mid-delivery and a paused account's held send would leave them.
    await stack.pg.query(`update sends set status = 'sending' where id = $1`, [inFlight.id]);
    await stack.pg.query(`update sends set status = 'queued' where id = $1`, [held.id]);
    await stack.pg.query(`update batches set created_at = now() - interval '40 days' where id = $1`, [
      oldBatch.batchId,
    ]);
    await stack.pg.query(
      `update idempotency_keys set created_at = now() - interval '40 days' where key in ('old-key-1', 'old-key-2')`,
    );
    // Outbox files without a send: one older than the window, one recent, and a file that is
    // not a message.
    const orphanOld = `${outbox}/${crypto.randomUUID()}.eml`;
    const orphanNew = `${outbox}/${crypto.randomUUID()}.eml`;
    const notMail = `${outbox}/notes.txt`;
    for (const f of [orphanOld, orphanNew, notMail]) await Deno.writeTextFile(f, "x");
    const longAgo = new Date(Date.now() - 40 * 86_400_000);
    await Deno.utime(orphanOld, longAgo, longAgo);
    await Deno.utime(notMail, longAgo, longAgo);

    // Webhook deliveries of an endpoint (disabled, so these sends queued none of their own):
    // two that are over and older than the window, one as old but still pending, one recent.
    const { rows: [endpoint] } = await stack.pg.query(
      `insert into webhook_endpoints (account_id, url, enabled, secret_enc)
       values ($1, 'https://hooks.example.test/in', false, 'sealed') returning id`,
      [tenant.accountId],
    );
    const delivery = async (status: string, days: number) => {
      const { rows: [d] } = await stack.pg.query(
        `insert into webhook_deliveries (endpoint_id, account_id, event_type, payload, status, created_at)
         values ($1, $2, 'email.delivered', '{}', $3, now() - make_interval(days => $4)) returning id`,
        [endpoint.id, tenant.accountId, status, days],
      );
      await stack.pg.query(
        `insert into webhook_attempts (delivery_id, response_status, duration_ms) values ($1, 204, 3)`,
        [
          d.id,
        ],
      );
      return d.id as string;
    };
    const oldDeliveries = [await delivery("succeeded", 40), await delivery("failed", 40)];
    const keptDeliveries = [await delivery("pending", 40), await delivery("succeeded", 1)];

    const usageBefore = await usage(stack);
    const contactsBefore = await stack.count("select count(*) from contacts");
    assert(await stack.count("select count(*) from email_events where send_id = any($1::uuid[])", [oldIds]) >= 15);
    for (const id of oldIds) assert(await exists(`${outbox}/${id}.eml`));

    await t.step("one run of the job (queued through graphile-worker)", async () => {
      await runJob(stack);
    });

    await t.step("old finished sends, their events and their outbox files are gone", async () => {
      for (const id of oldIds) {
        assertEquals((await stack.api("GET", `/api/v1/sends/${id}`, { key: tenant.key })).status, 404);
        assertEquals(await exists(`${outbox}/${id}.eml`), false, `outbox file of ${id}`);
      }
      assertEquals(await stack.count("select count(*) from sends where id = any($1::uuid[])", [oldIds]), 0);
      assertEquals(await stack.count("select count(*) from email_events where send_id = any($1::uuid[])", [oldIds]), 0);
    });

    await t.step(
      "recent, late-finished, scheduled, queued and in-flight sends stay, with events and files",
      async () => {
        const statuses = await Promise.all(
          keptIds.map((id) => stack.api("GET", `/api/v1/sends/${id}`, { key: tenant.key }).then((r) => r.body.status)),
        );
        assertEquals(statuses, [
          "delivered",
          "delivered",
          "sending",
          "queued",
          "scheduled",
          "scheduled",
          "delivered",
          "delivered",
        ]);
        for (const s of [recent, lateFinish, ...newBatch.sends]) {
          assert(await exists(`${outbox}/${s.id}.eml`), `outbox file of ${s.id}`);
          assertEquals(await stack.count("select count(*) from email_events where send_id = $1", [s.id]), 3);
        }
      },
    );

    await t.step("the old batch (its sends gone) is gone; the recent one stays", async () => {
      assertEquals((await stack.api("GET", `/api/v1/batches/${oldBatch.batchId}`, { key: tenant.key })).status, 404);
      const b = await stack.api("GET", `/api/v1/batches/${newBatch.batchId}`, { key: tenant.key });
      assertEquals(b.status, 200);
    });

    await t.step("old idempotency keys are gone, recent ones stay", async () => {
      const keys = await stack.pg.query("select key from idempotency_keys order by key");
      assertEquals(keys.rows.map((r) => r.key), ["new-key-1"]);
    });

    await t.step("outbox files older than the window go; recent ones and other files stay", async () => {
      assertEquals(await exists(orphanOld), false);
      assertEquals(await exists(orphanNew), true);
      assertEquals(await exists(notMail), true);
    });

    await t.step("webhook deliveries that are over and older than the window go with their attempts", async () => {
      const left = await stack.pg.query(
        `select id from webhook_deliveries where endpoint_id = $1 order by created_at`,
        [
          endpoint.id,
        ],
      );
      assertEquals(left.rows.map((r) => r.id).sort(), [...keptDeliveries].sort());
      assertEquals(
        await stack.count("select count(*) from webhook_attempts where delivery_id = any($1::uuid[])", [oldDeliveries]),
        0,
      );
      assertEquals(
        await stack.count("select count(*) from webhook_attempts where delivery_id = any($1::uuid[])", [
          keptDeliveries,
        ]),
        2,
      );
    });

    await t.step("monthly usage and contacts are unchanged", async () => {
      assertEquals(await usage(stack), usageBefore);
      assertEquals(await stack.count("select count(*) from contacts"), contactsBefore);
    });

    /** Inserts `n` delivered sends 40 days old with two events each, and `n` expired idempotency keys, set-wise. */
    const bulk = async (n: number, tag: string) => {
      const contact = (await stack.pg.query("select id from contacts where account_id = $1 limit 1", [
        tenant.accountId,
      ])).rows[0].id;
      await stack.pg.query(
        `insert into sends (id, account_id, contact_id, template_id, to_email, subject, from_email, track_opens,
           track_clicks, status, message_id, created_at, updated_at)
         select gen_random_uuid(), $1, $2, $3, $4, 's', 'orders@shop.test', false, false, 'delivered',
           '<' || g || '.' || $4 || '>', now() - interval '40 days' - g * interval '1 second',
           now() - interval '40 days'
         from generate_series(1, $5::int) g`,
        [tenant.accountId, contact, tenant.templateId, `${tag}@example.test`, n],
      );
      await stack.pg.query(
        `insert into email_events (send_id, account_id, type, occurred_at)
         select s.id, s.account_id, t.type, s.created_at from sends s, unnest(array['sent', 'delivered']) t(type)
         where s.account_id = $1 and s.to_email = $2`,
        [tenant.accountId, `${tag}@example.test`],
      );
      await stack.pg.query(
        `insert into idempotency_keys (api_key_id, key, fingerprint, state, created_at)
         select $1, $2 || g, 'f', 'done', now() - interval '2 days' from generate_series(1, $3::int) g`,
        [tenant.apiKeyId, tag, n],
      );
    };

    await t.step(
      "25,000 old sends with 50,000 events: all gone in bounded statements, each its own transaction",
      async () => {
        await bulk(25_000, "bulk");
        // Every delete statement's row count and transaction, recorded by statement triggers.
        await stack.pg.query(`
        create table retention_audit (tbl text, n int, tx bigint);
        create function retention_audit() returns trigger language plpgsql as $$
          begin
            insert into retention_audit select tg_table_name, count(*), txid_current() from old_rows having count(*) > 0;
            return null;
          end $$;
        create trigger sends_audit after delete on sends referencing old table as old_rows
          for each statement execute function retention_audit();
        create trigger events_audit after delete on email_events referencing old table as old_rows
          for each statement execute function retention_audit();
        create trigger keys_audit after delete on idempotency_keys referencing old table as old_rows
          for each statement execute function retention_audit();`);
        await runJob(stack, 120_000);
        assertEquals(await stack.count("select count(*) from sends where to_email = 'bulk@example.test'"), 0);
        assertEquals(await stack.count("select count(*) from idempotency_keys where key like 'bulk%'"), 0);
        const audit = await stack.pg.query(
          "select tbl, count(*)::int as statements, sum(n)::int as rows, max(n) as largest, count(distinct tx)::int as txs from retention_audit group by tbl order by tbl",
        );
        const by = Object.fromEntries(audit.rows.map((r) => [r.tbl, r]));
        assertEquals(by.sends.rows, 25_000);
        assertEquals(by.email_events.rows, 50_000);
        assertEquals(by.idempotency_keys.rows, 25_000);
        for (const r of audit.rows) {
          assert(r.largest <= 10_000, `${r.tbl}: a statement deleted ${r.largest} rows`);
          assert(r.statements >= 3, `${r.tbl}: ${r.statements} statements`);
          assertEquals(r.txs, r.statements, `${r.tbl}: one transaction per statement`);
        }
        await stack.pg.query(`drop trigger sends_audit on sends; drop trigger events_audit on email_events;
        drop trigger keys_audit on idempotency_keys`);
        assertEquals(await usage(stack), usageBefore);
        // What was kept before is still there.
        assertEquals(await stack.count("select count(*) from sends where id = any($1::uuid[])", [keptIds]), 8);
      },
    );

    await t.step("measured: one run over 25,000 old sends and 50,000 events", async () => {
      await bulk(25_000, "timed");
      const report = await runRetention(stack.service.deps);
      assertEquals([report.sends, report.events, report.idempotencyKeys], [25_000, 50_000, 25_000]);
      console.log(`retention run: 25,000 sends, 50,000 events, 25,000 keys deleted in ${report.ms} ms`);
    });
  } finally {
    await stack.stop();
  }
});
