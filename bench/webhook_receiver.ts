/**
 * The webhooks scenario's receiver in its own process: answers every POST 204 at once and
 * keeps, per delivery, the lag from the event's `occurredAt` (when it was recorded) to its
 * arrival here, and its event's type. `GET /stats` answers `{ count, first, last, lags, types }`
 * (epoch ms; lags in ms; `types[i]` is the type of `lags[i]`).
 * Prints "ready" once it listens. Usage: deno run -A bench/webhook_receiver.ts <port>
 */
const lags: number[] = [];
const types: string[] = [];
let first = 0;
let last = 0;

Deno.serve(
  { port: Number(Deno.args[0]), hostname: "127.0.0.1", onListen: () => console.log("ready") },
  async (req) => {
    if (req.method === "GET") return Response.json({ count: lags.length, first, last, lags, types });
    const body = await req.json() as { data?: { event?: { occurredAt?: string; type?: string } } };
    const now = Date.now();
    if (!first) first = now;
    last = now;
    const at = Date.parse(body.data?.event?.occurredAt ?? "");
    lags.push(Number.isNaN(at) ? 0 : now - at);
    types.push(body.data?.event?.type ?? "");
    return new Response(null, { status: 204 });
  },
);
