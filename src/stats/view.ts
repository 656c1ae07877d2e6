/** Stats as both transports show them: zod schemas (types, and the REST answer in openapi.json). */
import { z } from "zod";
import type { StatsCounts } from "./repo.ts";

const count = z.int().nonnegative();
const rate = z.number().min(0).max(1);

/** One period's row. */
export const StatsRow = z.strictObject({
  period: z.iso.date().describe("The first day of the period (UTC; a week starts on Monday)."),
  accepted: count.describe("Sends accepted (suppressed ones included)."),
  delivered: count,
  bounced: count,
  complained: count,
  opened: count.describe("Sends opened at least once (the first open counts)."),
  clicked: count.describe("Sends with at least one click."),
  failed: count,
  suppressed: count,
  unsubscribed: count,
  deliveryRate: rate.describe("delivered / (accepted − suppressed)."),
  openRate: rate.describe("opened / delivered."),
  clickRate: rate.describe("clicked / delivered."),
  bounceRate: rate.describe("bounced / (accepted − suppressed)."),
  complaintRate: rate.describe("complained / delivered."),
}).meta({ id: "StatsRow" });
export type StatsRow = z.infer<typeof StatsRow>;

/** `GET /api/v1/stats`. */
export const StatsList = z.strictObject({ data: z.array(StatsRow) }).meta({ id: "StatsList" });
export type StatsList = z.infer<typeof StatsList>;

/** `n / d`, 0 when nothing was there to divide by, at most 1, to four decimals. */
function ratio(n: number, d: number): number {
  return d > 0 ? Math.min(1, Math.round((n / d) * 10_000) / 10_000) : 0;
}

export function statsView(c: StatsCounts): StatsRow {
  const live = c.accepted - c.suppressed;
  return {
    ...c,
    deliveryRate: ratio(c.delivered, live),
    openRate: ratio(c.opened, c.delivered),
    clickRate: ratio(c.clicked, c.delivered),
    bounceRate: ratio(c.bounced, live),
    complaintRate: ratio(c.complained, c.delivered),
  };
}
