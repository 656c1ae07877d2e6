/**
 * Segments: saved contact filters (rules ANDed, see repo.ts segmentWhere). Membership is live: it is
 * evaluated when asked (count, preview, a segment send's expansion), never stored.
 */
import type { Kysely } from "kysely";
import type { Deps, Principal } from "../context.ts";
import { requireTenant } from "../context.ts";
import type { Database } from "../db/tables.ts";
import { AppError } from "../errors.ts";
import { isUuid, parseInput } from "../validation.ts";
import { CreateSegmentInput } from "./inputs.ts";
import * as repo from "./repo.ts";
import type { SegmentRow } from "./repo.ts";

/** Creates a segment for the caller's account; 422 `validation_failed` naming each bad rule (`rules.N.op`). */
export async function createSegment(deps: Deps, p: Principal, input: unknown): Promise<SegmentRow> {
  const t = requireTenant(p);
  const v = parseInput(CreateSegmentInput, input);
  const row = await repo.insertSegment(deps.db, {
    account_id: t.accountId,
    name: v.name,
    // A string: node-pg would turn a JS array into a Postgres array, not JSON.
    rules: JSON.stringify(v.rules),
    updated_at: new Date(),
  });
  deps.log.info("segment created", { accountId: t.accountId, segmentId: row.id });
  return row;
}

/** One of the caller's segments, or null (unknown, another account's, or not a uuid). */
export async function getSegment(deps: Deps, p: Principal, id: string): Promise<SegmentRow | null> {
  const t = requireTenant(p);
  return (await findSegment(deps.db, t.accountId, id)) ?? null;
}

/** The caller's segments, newest first, at most `first` (1–500, default 100). */
export function listSegments(deps: Deps, p: Principal, first = 100): Promise<SegmentRow[]> {
  const t = requireTenant(p);
  return repo.listSegments(deps.db, t.accountId, Math.min(Math.max(first, 1), 500));
}

/** How many of the segment's account's contacts match it now, whatever their status. */
export function memberCount(deps: Deps, segment: SegmentRow): Promise<number> {
  return repo.countMembers(deps.db, segment.account_id, segment.rules);
}

/** The newest `first` (0–100, default 10) contacts that match the segment now, any status. */
export function preview(deps: Deps, segment: SegmentRow, first = 10) {
  return repo.listMembers(deps.db, segment.account_id, segment.rules, Math.min(Math.max(first, 0), 100));
}

/**
 * An account's segment by id, or undefined when it is unknown, another account's or not a
 * uuid (so a caller's bad id never reaches Postgres as a cast error). Takes `db` so it runs
 * inside a transaction.
 */
export async function findSegment(db: Kysely<Database>, accountId: string, id: string) {
  return isUuid(id) ? await repo.findSegment(db, accountId, id) : undefined;
}

/** Like findSegment, but 422 `segment_not_found` instead of undefined. */
export async function requireSegment(db: Kysely<Database>, accountId: string, id: string): Promise<SegmentRow> {
  const s = await findSegment(db, accountId, id);
  if (!s) throw new AppError("segment_not_found", `segment ${id} not found`);
  return s;
}
