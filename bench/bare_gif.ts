/**
 * The tracking scenario's baseline in its own process: a bare Deno.serve answering every
 * request with the service's open pixel (the same GIF and cache headers), and nothing else.
 * Prints "ready" once it listens. Usage: deno run -A bench/bare_gif.ts <port>
 */
import { GIF } from "../src/events/tracking_http.ts";

Deno.serve(
  { port: Number(Deno.args[0]), hostname: "127.0.0.1", onListen: () => console.log("ready") },
  () =>
    new Response(GIF, {
      headers: { "content-type": "image/gif", "cache-control": "no-store, no-cache, must-revalidate, max-age=0" },
    }),
);
