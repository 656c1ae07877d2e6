/** Input shapes of stats (`GET /api/v1/stats`, GraphQL `stats`). */
import { z } from "zod";

/** How stats are grouped: by UTC day, ISO week (from Monday) or month. */
export const STATS_INTERVALS = ["day", "week", "month"] as const;
export type StatsInterval = typeof STATS_INTERVALS[number];

/** The longest range one query covers, days (three years: every interval stays a few hundred rows at most). */
export const MAX_STATS_DAYS = 1_100;

const day = z.iso.date("must be a date, YYYY-MM-DD");

/** Whether both ends parsed (the range checks name `to` only then; a bad date is named by itself). */
const bothDates = (v: { from: string; to: string }) => !isNaN(Date.parse(v.from)) && !isNaN(Date.parse(v.to));

/** Query of `GET /api/v1/stats` and arguments of `stats`: a UTC date range, both ends included. */
export const StatsInput = z.strictObject({
  from: day,
  to: day,
  interval: z.enum(STATS_INTERVALS).default("day"),
  tag: z.string().regex(/^[^:]+:.*$/, "must be key:value").max(601).nullish()
    .describe("Only the sends with this tag, as `key:value`."),
}).refine((v) => !bothDates(v) || v.from <= v.to, { path: ["to"], message: "must not be before from" })
  .refine((v) => !bothDates(v) || (Date.parse(v.to) - Date.parse(v.from)) / 86_400_000 < MAX_STATS_DAYS, {
    path: ["to"],
    message: `the range covers at most ${MAX_STATS_DAYS} days`,
  }).meta({ id: "StatsQuery" });
export type StatsInput = z.infer<typeof StatsInput>;
