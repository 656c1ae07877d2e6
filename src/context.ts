/**
 * What every service call receives: the shared handles (`Deps`) and who is calling
 * (`Principal`). Built once per process (Deps) and once per request (Principal).
 */
import type { Kysely } from "kysely";
import type pg from "pg";
import type { Config } from "./config.ts";
import type { Database, KeyScope } from "./db/tables.ts";
import { AppError } from "./errors.ts";
import type { Listener } from "./db/listen.ts";
import { type Logger, withFields } from "./log.ts";
import type { RenderPool } from "./mail/render.ts";

/** Secrets resolved at start (from the environment or the data dir). */
export interface Secrets {
  adminToken: string;
  secret: string;
}

/** Process-wide handles passed to services, resolvers and tasks. */
export interface Deps {
  db: Kysely<Database>;
  pool: pg.Pool;
  config: Readonly<Config>;
  secrets: Secrets;
  log: Logger;
  /** Base of tracking and unsubscribe links: PP_PUBLIC_URL, else http://HOST:PORT as bound. */
  publicUrl: string;
  /** Where every template is compiled and rendered: sandbox processes, never this one. */
  renderer: RenderPool;
  /** The service's LISTEN connection: live events and cache notices (src/db/listen.ts). */
  notices: Listener;
}

const roots = new WeakMap<Deps, Deps>();

/**
 * The deps of one request: the process's, with a logger whose lines carry `requestId`. What
 * outlives a request (group commits, hubs) is built on {@link processDeps}, never on these.
 */
export function forRequest(deps: Deps, requestId: string | undefined): Deps {
  if (!requestId) return deps;
  const root = processDeps(deps);
  const copy: Deps = { ...root, log: withFields(root.log, { requestId }) };
  roots.set(copy, root);
  return copy;
}

/** The process's deps behind a request's (itself for the process's own). */
export function processDeps(deps: Deps): Deps {
  return roots.get(deps) ?? deps;
}

/**
 * A tenant authenticated by an API key. `mode: "test"` keys send to the outbox only; a
 * `sending` key may only send and read what it sent (requireTenant), and a key with
 * `domains` may send only from those (and their subdomains).
 */
export interface Tenant {
  kind: "tenant";
  accountId: string;
  apiKeyId: string;
  mode: "live" | "test";
  scope: KeyScope;
  domains: string[] | null;
}

/** The operator holding PP_ADMIN_TOKEN. */
export interface Admin {
  kind: "admin";
}

/** Who is calling; null when no credential was given. */
export type Principal = Tenant | Admin | null;

/**
 * The tenant, or 401 `unauthorized`; 403 `forbidden` when the key's scope is below `needs`.
 * Every call needs a `full` key unless it says `"sending"`: creating, cancelling and
 * rescheduling sends and batches, and reading sends, batches and their events.
 */
export function requireTenant(p: Principal, needs: KeyScope = "full"): Tenant {
  if (p?.kind !== "tenant") {
    throw new AppError("unauthorized", "a valid API key is required (X-API-Key or Authorization: Bearer)");
  }
  if (needs === "full" && p.scope !== "full") {
    throw new AppError("forbidden", "this key's scope (SENDING) allows sending and reading sends only");
  }
  return p;
}

/** Passes for the admin token, else 401 `unauthorized`. */
export function requireAdmin(p: Principal): Admin {
  if (p?.kind !== "admin") {
    throw new AppError("unauthorized", "this operation needs the admin token (Authorization: Bearer <PP_ADMIN_TOKEN>)");
  }
  return p;
}
