/**
 * The public tracking endpoints: open pixel (`GET /t/o/:token`), click redirect
 * (`GET /t/c/:token`) and unsubscribe (`GET /u/:token` asks to confirm, `POST /u/:token`
 * unsubscribes — RFC 8058 one-click). They verify the token, queue a `record_event` job
 * and answer at once; a tampered or unknown token is a 404, never a redirect.
 */
import { type Deps, processDeps } from "../context.ts";
import { type TokenKind, verifyToken } from "../mail/tracking.ts";
import { BODY_LIMITS, readText } from "../rest/body.ts";
import type { RecordedEventType, RecordEventPayload } from "./inputs.ts";
import { GroupCommit } from "../db/group_commit.ts";
import { recordEvents } from "./jobs.ts";
import { findSendLinks } from "./repo.ts";
import { LRUCache } from "lru-cache";

/** A transparent 1×1 GIF (also what the benchmark's bare baseline answers). */
export const GIF = Uint8Array.from(
  atob("R0lGODlhAQABAIAAAAAAAP///yH5BAEAAAAALAAAAAABAAEAAAIBRAA7"),
  (c) => c.charCodeAt(0),
);

const NOT_FOUND = () => new Response("Not found\n", { status: 404, headers: { "content-type": "text/plain" } });

/** The longest User-Agent kept with an event: real ones are ~100–300 characters. */
export const USER_AGENT_MAX = 512;

/** The longest client address kept (an IPv6 address with a zone and port fits). */
const ADDRESS_MAX = 64;

/**
 * The client's address: the socket's, or with PP_TRUST_PROXY the rightmost X-Forwarded-For
 * entry. The trusted proxy appends the address it was connected from to whatever the
 * request brought, so the last entry is the only one a client cannot write; everything left
 * of it is the client's own claim (one could otherwise claim e.g. Apple's range to skew
 * machine flags). This assumes one trusted proxy in front; a chain of them is not supported.
 */
function clientIp(deps: Deps, req: Request, remote?: Deno.NetAddr): string | undefined {
  if (deps.config.trustProxy) {
    const forwarded = req.headers.get("x-forwarded-for");
    if (forwarded) {
      const last = forwarded.slice(forwarded.lastIndexOf(",") + 1).trim();
      if (last) return last.slice(0, ADDRESS_MAX);
    }
  }
  return remote?.hostname;
}

/** At most `max` UTF-16 units of `s`, never ending on half of a surrogate pair. */
function truncate(s: string, max: number): string {
  if (s.length <= max) return s;
  const code = s.charCodeAt(max - 1);
  return s.slice(0, code >= 0xd800 && code <= 0xdbff ? max - 1 : max);
}

/**
 * Hits are recorded in groups, one transaction per group (what arrives while a group
 * commits is the next group): the endpoints answer once their hit is recorded, so nothing
 * acknowledged is lost with the process. Recording directly, not through a `record_event`
 * job, saves each group graphile-worker's add_job, get_job and completion (~1.2 ms of
 * Postgres per group, measured with pg_stat_statements).
 */
const batchers = new WeakMap<Deps, GroupCommit<RecordEventPayload>>();

/** Sends whose links are kept in memory, at most. */
const LINK_CACHE_MAX = 10_000;
/** What the kept links may take: 16 MiB, counted as UTF-16 bytes plus a little per entry. */
const LINK_CACHE_BYTES = 16 * 1024 * 1024;

function linksSize(links: string[]): number {
  let n = 64;
  for (const url of links) n += 2 * url.length + 32;
  return n;
}

/**
 * Links of delivered sends never change: recent sends' links stay in memory for the
 * redirect, least recently used out first. Bounded by count and by size (a send may carry
 * up to 500 links of any length), so a few huge messages cannot hold the heap.
 */
const linkCache = new LRUCache<string, string[]>({
  max: LINK_CACHE_MAX,
  maxSize: LINK_CACHE_BYTES,
  sizeCalculation: linksSize,
});

async function linksOf(deps: Deps, sendId: string): Promise<string[] | null> {
  const hit = linkCache.get(sendId);
  if (hit) return hit;
  const links = await findSendLinks(deps.db, sendId);
  if (!links) return null;
  linkCache.set(sendId, links); // a list over LINK_CACHE_BYTES on its own is simply not kept
  return links;
}

function record(
  deps: Deps,
  sendId: string,
  type: RecordedEventType,
  req: Request,
  remote: Deno.NetAddr | undefined,
  extra: Record<string, unknown> = {},
) {
  const root = processDeps(deps); // one batcher per process, not per request
  let batcher = batchers.get(root);
  if (!batcher) {
    batchers.set(
      root,
      batcher = new GroupCommit((events) => recordEvents(root, events)),
    );
  }
  return batcher.add({
    sendId,
    type,
    occurredAt: new Date().toISOString(),
    data: {
      userAgent: truncate(req.headers.get("user-agent") ?? "", USER_AGENT_MAX),
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
  const body = await readText(req, BODY_LIMITS.unsubscribe);
  const oneClick = new URLSearchParams(body).get("List-Unsubscribe") === "One-Click";
  await record(deps, c.sendId, "unsubscribed", req, remote, { via: oneClick ? "one-click" : "page" });
  return page("Unsubscribed", `<h1>You are unsubscribed.</h1><p>You will not receive these emails any more.</p>`);
}
