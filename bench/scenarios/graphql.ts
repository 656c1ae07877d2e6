import { combine, CONNECTIONS, type Load, load, round, type Scenario, warmUp } from "../lib.ts";
import type { Bench } from "../stack.ts";

/**
 * GraphQL vs REST ("graphql"): the GraphQL query `send(id)` of the `read` sample, every field
 * and its events, at CONNECTIONS connections; queries/s answered 200, p50 and p99. It runs in
 * alternating halves of `loadS / 2` with its baseline (REST, GraphQL, REST, GraphQL), so that
 * the drift of the shared machine falls on both sides alike; the halves are combined.
 *
 * Baseline: REST GET /api/v1/sends/:id of the same send (the same fields), under the same load.
 * Target: ≥ 0.7× REST.
 */
export async function graphqlVsRest(b: Bench): Promise<Record<string, Scenario>> {
  b.log("GraphQL vs REST");
  const sendId = b.samples.read;
  const rest = { url: `${b.base}/api/v1/sends/${sendId}`, headers: b.auth };
  const graph = {
    url: `${b.base}/graphql`,
    method: "POST" as const,
    body: JSON.stringify({
      query: `query($id: ID!) { send(id: $id) { id status to from subject templateId contactId batchId messageId
      personalizations tags trackOpens trackClicks sandbox scheduledAt sentAt deliveredAt openedAt clickedAt bouncedAt
      missingVariables createdAt updatedAt error { code message } events { type occurredAt data } } }`,
      variables: { id: sendId },
    }),
    headers: b.auth,
  };
  await warmUp(rest, 200);
  await warmUp(graph, 200);
  const restRounds: Load[] = [];
  const graphRounds: Load[] = [];
  const [, graphCpu] = await b.cpu.measure(async () => {
    for (let half = 0; half < 2; half++) {
      restRounds.push(await load({ ...rest, connections: CONNECTIONS, duration: b.loadS / 2 }, 200));
      graphRounds.push(await load({ ...graph, connections: CONNECTIONS, duration: b.loadS / 2 }, 200));
    }
  });
  const restLoad = combine(restRounds);
  const graphLoad = combine(graphRounds);
  return {
    "graphql": {
      value: round(graphLoad.rps),
      unit: "send(id) queries/s",
      target: "≥ 0.7× REST GET /api/v1/sends/:id",
      baseline: round(restLoad.rps),
      ratio: round(graphLoad.rps / restLoad.rps, 2),
      pass: graphLoad.rps >= 0.7 * restLoad.rps,
      details: {
        ...graphCpu,
        p50_ms: graphLoad.p50,
        p99_ms: graphLoad.p99,
        rest_p50_ms: restLoad.p50,
        rest_p99_ms: restLoad.p99,
      },
    },
  };
}
