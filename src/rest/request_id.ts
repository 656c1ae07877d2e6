/**
 * Request ids (`X-Request-Id`): the caller's when it is sane, else a new one, given once per
 * request by rest/observe.ts and read back by the edges (rest/router.ts, graphql/http.ts),
 * which hand the request's services a logger carrying it (context.ts forRequest).
 */

/** A caller's request id is kept when it is this: at most 128 characters, none that a log or header would mangle. */
const SANE_REQUEST_ID = /^[A-Za-z0-9._:@=+\/-]{1,128}$/;

const ids = new WeakMap<Request, string>();

/** The request's id: its `X-Request-Id` when sane, else a new random one. */
export function requestIdOf(req: Request): string {
  const given = req.headers.get("x-request-id");
  return given !== null && SANE_REQUEST_ID.test(given) ? given : crypto.randomUUID();
}

/** Gives `req` its id (requestIdOf) and remembers it for requestIdFor. */
export function assignRequestId(req: Request): string {
  const id = requestIdOf(req);
  ids.set(req, id);
  return id;
}

/** The id assignRequestId gave this request (undefined for a request that did not come through it). */
export function requestIdFor(req: Request): string | undefined {
  return ids.get(req);
}
