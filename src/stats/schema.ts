/** GraphQL for stats: `stats(from, to, interval, tag)`. */
import { builder, upperCaseValues } from "../graphql/builder.ts";
import { STATS_INTERVALS } from "./inputs.ts";
import * as service from "./service.ts";
import type { StatsRow as StatsRowView } from "./view.ts";

const StatsInterval = builder.enumType("StatsInterval", {
  description: "DAY (UTC), WEEK (from Monday) or MONTH.",
  values: upperCaseValues(STATS_INTERVALS),
});

const StatsRow = builder.objectRef<StatsRowView>("StatsRow").implement({
  description: "One period's counts and rates.",
  fields: (t) => ({
    period: t.exposeString("period", { description: "The period's first day, YYYY-MM-DD." }),
    accepted: t.exposeInt("accepted"),
    delivered: t.exposeInt("delivered"),
    bounced: t.exposeInt("bounced"),
    complained: t.exposeInt("complained"),
    opened: t.exposeInt("opened", { description: "Sends opened at least once." }),
    clicked: t.exposeInt("clicked", { description: "Sends clicked at least once." }),
    failed: t.exposeInt("failed"),
    suppressed: t.exposeInt("suppressed"),
    unsubscribed: t.exposeInt("unsubscribed"),
    deliveryRate: t.exposeFloat("deliveryRate"),
    openRate: t.exposeFloat("openRate"),
    clickRate: t.exposeFloat("clickRate"),
    bounceRate: t.exposeFloat("bounceRate"),
    complaintRate: t.exposeFloat("complaintRate"),
  }),
});

builder.queryField("stats", (t) =>
  t.field({
    type: [StatsRow],
    description: "Every period from `from` to `to` (UTC dates, both included), oldest first; `tag` is key:value.",
    args: {
      from: t.arg.string({ required: true }),
      to: t.arg.string({ required: true }),
      interval: t.arg({ type: StatsInterval }),
      tag: t.arg.string(),
    },
    resolve: (_, a, ctx) =>
      service.stats(ctx.deps, ctx.principal, {
        from: a.from,
        to: a.to,
        ...(a.interval ? { interval: a.interval } : {}),
        tag: a.tag,
      }),
  }));
