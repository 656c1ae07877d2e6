/**
 * Sending reputation (API.md): over the last 7 days and at least 100 sends, a bounce rate
 * of 10% or more, or a complaint rate of 0.5% or more, pauses the account's sending until
 * ops resume it; 5% / 0.1% raise a warning. Rates are counted from ops' last resume when
 * that is inside the window, so a resumed account is judged on what it sends afterwards.
 * Only live sends count: sandbox sends (`pp_test_` keys) never reach a mailbox, so they
 * neither dilute a bounce rate nor draw complaints; a complaint counts only for a send
 * inside the window (the SQL is reputationCounts in repo.ts).
 */
import type { Kysely } from "kysely";
import type { Database } from "../db/tables.ts";
import { forgetAccount } from "./service.ts";
import { pauseForReputation, reputationCounts } from "./repo.ts";
import { reputationPauses } from "../metrics/metrics.ts";

/** The thresholds, as fractions. */
export const REPUTATION = {
  windowDays: 7,
  minSends: 100,
  pauseBounce: 0.10,
  pauseComplaint: 0.005,
  warnBounce: 0.05,
  warnComplaint: 0.001,
} as const;

/** An account's standing. */
export interface Reputation {
  sends: number;
  bounces: number;
  complaints: number;
  bounceRate: number;
  complaintRate: number;
  status: "OK" | "WARNING" | "PAUSED";
}

/** Counts the window's live sends, their hard bounces and complaints, and the rates. */
export async function measure(db: Kysely<Database>, accountId: string): Promise<Omit<Reputation, "status">> {
  const { sends, bounces, complaints } = await reputationCounts(db, accountId, REPUTATION.windowDays);
  return {
    sends,
    bounces,
    complaints,
    bounceRate: sends ? bounces / sends : 0,
    complaintRate: sends ? complaints / sends : 0,
  };
}

/** What the rates call for: pause, warn, or nothing (below the minimum of sends, always OK). */
export function judge(m: Omit<Reputation, "status">): "OK" | "WARNING" | "PAUSE" {
  if (m.sends < REPUTATION.minSends) return "OK";
  if (m.bounceRate >= REPUTATION.pauseBounce || m.complaintRate >= REPUTATION.pauseComplaint) return "PAUSE";
  if (m.bounceRate >= REPUTATION.warnBounce || m.complaintRate >= REPUTATION.warnComplaint) return "WARNING";
  return "OK";
}

/** The account's reputation as GraphQL shows it (PAUSED while its sending is paused). */
export async function reputationOf(
  db: Kysely<Database>,
  account: { id: string; sending_enabled: boolean },
): Promise<Reputation> {
  const m = await measure(db, account.id);
  const j = judge(m);
  return { ...m, status: !account.sending_enabled ? "PAUSED" : j === "PAUSE" ? "WARNING" : j };
}

/**
 * Recomputes an account's rates and pauses its sending when they call for it. Returns the
 * verdict. An account already paused (by ops or earlier) is left as it is.
 */
export async function checkReputation(db: Kysely<Database>, accountId: string) {
  const m = await measure(db, accountId);
  const verdict = judge(m);
  if (verdict === "PAUSE") {
    const pct = (x: number) => `${(x * 100).toFixed(2)}%`;
    const reason = `reputation: ${pct(m.bounceRate)} bounces, ${pct(m.complaintRate)} complaints over ${m.sends} sends`;
    const paused = await pauseForReputation(db, accountId, reason);
    if (paused) {
      forgetAccount(accountId);
      reputationPauses.inc();
    }
    return { ...m, verdict, paused };
  }
  return { ...m, verdict, paused: false };
}
