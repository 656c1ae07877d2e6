/**
 * The public tracking endpoints: open pixel (`GET /t/o/:token`), click redirect
 * (`GET /t/c/:token`) and unsubscribe (`GET /u/:token` asks to confirm, `POST /u/:token`
 * unsubscribes — RFC 8058 one-click). They verify the token, queue a `record_event` job
 * and answer at once; a tampered or unknown token is a 404, never a redirect.
 */
import type { Deps } from "../context.ts";
import { type TokenKind, verifyToken } from "../mail/tracking.ts";
import type { RecordedEventType, RecordEventPayload } from "./inputs.ts";
import { GroupCommit } from "../db/group_commit.ts";
import { recordEvents } from "./jobs.ts";

/** A transparent 1×1 GIF (also what the benchmark's bare baseline answers). */
export const GIF = Uint8Array.from(
  atob("R0lGODlhAQABAIAAAAAAAP///yH5BAEAAAAALAAAAAABAAEAAAIBRAA7"),
  (c) => c.charCodeAt(0),
);

const NOT_FOUND = () => new Response("Not found\n", { status: 404, headers: { "content-type": "text/plain" } });

/**
 * The client's address: the socket's, or with PP_TRUST_PROXY the first X-Forwarded-For
 * hop (a client could otherwise claim any address, e.g. Apple's, to skew machine flags).
 */
function clientIp(deps: Deps, req: Request, remote?: Deno.NetAddr): string | undefined {
  const forwarded = deps.config.trustProxy ? req.headers.get("x-forwarded-for")?.split(",")[0]?.trim() : undefined;
  return forwarded || remote?.hostname;
}

/**
 * Hits are recorded in groups, one transaction per group (what arrives while a group
 * commits is the next group): the endpoints answer once their hit is recorded, so nothing
 * acknowledged is lost with the process. Recording directly, not through a `record_event`
 * job, saves each group graphile-worker's add_job, get_job and completion (~1.2 ms of
 * Postgres per group, measured with pg_stat_statements).
 */
const batchers = new WeakMap<Deps, GroupCommit<RecordEventPayload>>();

// Links of delivered sends never change: keep recent ones in memory for the redirect.
const linkCache = new Map<string, string[]>();
const LINK_CACHE_MAX = 10_000;

async function linksOf(deps: Deps, sendId: string): Promise<string[] | null> {
  const hit = linkCache.get(sendId);
  if (hit) return hit;
  const row = await deps.db.selectFrom("sends").select("links").where("id", "=", sendId).executeTakeFirst();
  if (!row?.links) return null;
  if (linkCache.size >= LINK_CACHE_MAX) linkCache.delete(linkCache.keys().next().value!);
  linkCache.set(sendId, row.links);
  return row.links;
}

function record(
  deps: Deps,
  sendId: string,
  type: RecordedEventType,
  req: Request,
  remote: Deno.NetAddr | undefined,
  extra: Record<string, unknown> = {},
) {
  let batcher = batchers.get(deps);
  if (!batcher) {
    batchers.set(
      deps,
      batcher = new GroupCommit((events) => recordEvents(deps, events)),
    );
  }
  return batcher.add({
    sendId,
    type,
    occurredAt: new Date().toISOString(),
    data: {
      userAgent: req.headers.get("user-agent") ?? "",
      ip: clientIp(deps, req, remote),
      method: req.method,
      ...extra,
    },
  });
}

function claims(deps: Deps, token: string, kind: TokenKind) {
  return verifyToken(deps.secrets.secret, token, kind);
}

/** GET /t/o/:token → 200 GIF, never cached. */
export async function openPixel(deps: Deps, token: string, req: Request, remote?: Deno.NetAddr): Promise<Response> {
  const c = claims(deps, token, "open");
  if (!c) return NOT_FOUND();
  await record(deps, c.sendId, "opened", req, remote);
  return new Response(GIF, {
    headers: { "content-type": "image/gif", "cache-control": "no-store, no-cache, must-revalidate, max-age=0" },
  });
}

/** GET /t/c/:token → 302 to the URL stored for that send and link; 404 otherwise. */
export async function clickRedirect(deps: Deps, token: string, req: Request, remote?: Deno.NetAddr): Promise<Response> {
  const c = claims(deps, token, "click");
  if (!c) return NOT_FOUND();
  const url = (await linksOf(deps, c.sendId))?.[c.link];
  if (!url) return NOT_FOUND();
  await record(deps, c.sendId, "clicked", req, remote, { url, link: c.link });
  return new Response(null, { status: 302, headers: { location: url, "cache-control": "no-store" } });
}

const page = (title: string, body: string) =>
  new Response(
    `<!doctype html><html><head><meta charset="utf-8"><meta name="viewport" content="width=device-width">` +
      `<meta name="robots" content="noindex"><title>${title}</title></head>` +
      `<body style="font-family:system-ui,sans-serif;max-width:32rem;margin:4rem auto;padding:0 1rem">${body}</body></html>`,
    { headers: { "content-type": "text/html; charset=utf-8", "cache-control": "no-store" } },
  );

/** GET /u/:token → a page that asks to confirm. A GET never unsubscribes: scanners prefetch links. */
export function unsubscribePage(deps: Deps, token: string): Response {
  if (!claims(deps, token, "unsubscribe")) return NOT_FOUND();
  return page(
    "Unsubscribe",
    `<h1>Unsubscribe?</h1><p>You will no longer receive these emails.</p>` +
      `<form method="post"><input type="hidden" name="List-Unsubscribe" value="One-Click">` +
      `<button type="submit">Unsubscribe</button></form>`,
  );
}

/** POST /u/:token → unsubscribes (RFC 8058 one-click body, or the confirm form); no cookies needed. */
export async function unsubscribePost(
  deps: Deps,
  token: string,
  req: Request,
  remote?: Deno.NetAddr,
): Promise<Response> {
  const c = claims(deps, token, "unsubscribe");
  if (!c) return NOT_FOUND();
  const body = await req.text().catch(() => "");
  const oneClick = new URLSearchParams(body).get("List-Unsubscribe") === "One-Click";
  await record(deps, c.sendId, "unsubscribed", req, remote, { via: oneClick ? "one-click" : "page" });
  return page("Unsubscribed", `<h1>You are unsubscribed.</h1><p>You will not receive these emails any more.</p>`);
}
