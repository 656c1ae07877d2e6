/**
 * A webhook receiver for the tests: a real HTTP server on loopback that keeps every POST, and
 * the check a user's backend makes of each (the npm `standardwebhooks` package's `verify()`).
 */
import { Webhook } from "standardwebhooks";
import type { Json } from "./helpers.ts";

/** One POST the receiver got. */
export interface Received {
  headers: Record<string, string>;
  body: string;
  at: number;
}

/** An HTTP receiver; `answer` decides each reply (default 200), and may wait first. */
export interface Receiver {
  url: string;
  got: Received[];
  answer: (n: number) => Promise<Response> | Response;
  close(): Promise<void>;
}

export function startReceiver(): Receiver {
  const r: Receiver = {
    url: "",
    got: [],
    answer: () => new Response("ok"),
    close: async () => await server.shutdown(),
  };
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, async (req) => {
    r.got.push({ headers: Object.fromEntries(req.headers), body: await req.text(), at: Date.now() });
    return await r.answer(r.got.length);
  });
  r.url = `http://127.0.0.1:${(server.addr as Deno.NetAddr).port}/hooks`;
  return r;
}

/** The receiver's POSTs of one event type, verified with the endpoint's secret (throws when one does not verify). */
export function verified(r: Receiver, secret: string, type?: string): Json[] {
  const hook = new Webhook(secret);
  return r.got.map((g) => hook.verify(g.body, g.headers) as Json).filter((b) => !type || b.type === type);
}
