/**
 * GraphiQL served by us: the page yoga renders for a browser's `GET /graphql` (`renderGraphiQL`),
 * and its scripts, styles, fonts, images and Monaco workers under `/graphql/assets/`, all from the
 * pinned `@graphql-yoga/render-graphiql` (yoga's own GraphiQL build for offline use; yoga's
 * default page loads its GraphiQL from unpkg instead).
 * No third-party origin: the page's Content-Security-Policy allows this origin only.
 *
 * The package holds the assets as strings; they are loaded once (on the first page or asset
 * request, so a process that never serves GraphiQL never holds them) and kept in memory under
 * names that carry their content's hash, so they are cached for a year.
 */
import { type GraphiQLOptions, type Plugin, shouldRenderGraphiQL } from "graphql-yoga";

/** Where the assets are served; `app.ts` routes every path under it to `graphiqlAsset`. */
export const GRAPHIQL_ASSETS_PATH = "/graphql/assets/";

/**
 * The page's policy: everything from this origin only, no inline script, no eval, no `data:` or
 * `blob:`. Monaco writes `<style>` elements (its theme's CSS) and style attributes at run time,
 * hence `style-src 'unsafe-inline'` (styles only; they can load nothing from elsewhere); its
 * workers are served here, not made from `blob:` URLs.
 */
export const GRAPHIQL_CSP = [
  "default-src 'self'",
  "script-src 'self'",
  "style-src 'self' 'unsafe-inline'",
  "font-src 'self'",
  "img-src 'self'",
  "connect-src 'self'",
  "worker-src 'self'",
  "object-src 'none'",
  "base-uri 'none'",
  "form-action 'none'",
  "frame-ancestors 'none'",
].join("; ");

/** The key hint in the headers editor (a placeholder; headers are not kept in the browser's storage). */
const KEY_HINT = JSON.stringify({ "X-API-Key": "pp_test_..." }, null, 2);

/** What the page opens with: the caller's account, and where the API key goes. */
export const GRAPHIQL_OPTIONS: GraphiQLOptions = {
  title: "Pigeon Perch Sends · GraphiQL",
  defaultQuery: [
    "# Put your API key in the Headers tab below,",
    "# then run this with Ctrl-Enter.",
    "{",
    "  account {",
    "    id",
    "    name",
    "  }",
    "}",
    "",
  ].join("\n"),
  headers: KEY_HINT,
  defaultHeaders: KEY_HINT,
  shouldPersistHeaders: false,
  defaultEditorToolsVisibility: "headers",
};

const YEAR_S = 365 * 24 * 3600;
const ASSET_HEADERS = {
  "cache-control": `public, max-age=${YEAR_S}, immutable`,
  "x-content-type-options": "nosniff",
  // A worker's policy is the one its script is served with.
  "content-security-policy": GRAPHIQL_CSP,
};
const PAGE_HEADERS = {
  "content-type": "text/html; charset=utf-8",
  "cache-control": "no-cache",
  "x-content-type-options": "nosniff",
  "referrer-policy": "no-referrer",
  "content-security-policy": GRAPHIQL_CSP,
};

const TYPES: Record<string, string> = {
  js: "text/javascript; charset=utf-8",
  css: "text/css; charset=utf-8",
  ico: "image/x-icon",
  woff2: "font/woff2",
  woff: "font/woff",
  ttf: "font/ttf",
  png: "image/png",
  svg: "image/svg+xml",
};

interface Asset {
  body: Uint8Array<ArrayBuffer>;
  type: string;
  /** The body gzipped, made on the first request that accepts it (text types only). */
  gzip?: Promise<Uint8Array<ArrayBuffer>>;
}

/** Types worth gzipping (woff/woff2 and png are compressed already). */
const COMPRESSIBLE = /^(text\/|image\/svg|image\/x-icon|font\/ttf)/;

/** Whether Accept-Encoding takes gzip (and not with q=0). */
function acceptsGzip(req: Request): boolean {
  return (req.headers.get("accept-encoding") ?? "").split(",").some((part) => {
    const [coding, ...params] = part.trim().toLowerCase().split(";");
    const q = params.map((p) => p.trim()).find((p) => p.startsWith("q="));
    return coding === "gzip" && (!q || Number(q.slice(2)) > 0);
  });
}

function gzipped(asset: Asset): Promise<Uint8Array<ArrayBuffer>> {
  asset.gzip ??= new Response(new Blob([asset.body]).stream().pipeThrough(new CompressionStream("gzip"))).bytes();
  return asset.gzip;
}

interface Assets {
  /** By file name (under GRAPHIQL_ASSETS_PATH). */
  files: Map<string, Asset>;
  /** The page's URLs. */
  urls: { favicon: string; css: string; boot: string; graphiql: string };
}

let loading: Promise<Assets> | null = null;

/** The assets, loaded once. */
function assets(): Promise<Assets> {
  loading ??= loadAssets().catch((err) => {
    loading = null;
    throw err;
  });
  return loading;
}

async function hashed(files: Map<string, Asset>, stem: string, ext: string, body: Uint8Array<ArrayBuffer>) {
  const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", body));
  const hex = Array.from(digest.subarray(0, 8), (b) => b.toString(16).padStart(2, "0")).join("");
  const name = `${stem}.${hex}.${ext}`;
  files.set(name, { body, type: TYPES[ext]! });
  return GRAPHIQL_ASSETS_PATH + name;
}

const DATA_URL = /url\(\s*["']?data:(?<type>[a-z0-9+./-]+);base64,(?<data>[A-Za-z0-9+/=]+)["']?\s*\)/g;
const EXT_OF: Record<string, string> = {
  "font/woff2": "woff2",
  "font/woff": "woff",
  "font/ttf": "ttf",
  "image/png": "png",
  "image/svg+xml": "svg",
};

function fromBase64(data: string): Uint8Array<ArrayBuffer> {
  const bin = atob(data);
  const out = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
  return out;
}

async function loadAssets(): Promise<Assets> {
  const g = await import("@graphql-yoga/render-graphiql/graphiql");
  const enc = new TextEncoder();
  const files = new Map<string, Asset>();
  const text = (stem: string, ext: string, s: string) => hashed(files, stem, ext, enc.encode(s));

  // The stylesheet's fonts and images are data: URLs; each becomes a file of its own, so the
  // policy needs no `data:` and a browser fetches only the fonts it uses.
  const moved = new Map<string, string>();
  for (const m of g.css.matchAll(DATA_URL)) {
    const ext = EXT_OF[m.groups!.type!];
    if (!ext || moved.has(m[0])) continue;
    moved.set(m[0], `url(${await hashed(files, "graphiql-" + ext, ext, fromBase64(m.groups!.data!))})`);
  }
  const css = g.css.replace(DATA_URL, (m) => moved.get(m) ?? m);

  const favicon = /^data:image\/x-icon;base64,(.*)$/.exec(g.favicon);
  const workers = {
    editorWorkerService: await text("editor.worker", "js", g.editorWorkerService),
    json: await text("json.worker", "js", g.jsonWorker),
    graphql: await text("graphql.worker", "js", g.graphqlWorker),
  };
  // Set before the bundle runs (Monaco reads it), and renders once the page is parsed.
  const boot = `"use strict";
(function () {
  var workers = ${JSON.stringify(workers)};
  self.MonacoEnvironment = {
    globalAPI: false,
    getWorkerUrl: function (moduleId, label) { return workers[label] || workers.editorWorkerService; },
  };
  document.addEventListener("DOMContentLoaded", function () {
    var options = JSON.parse(document.getElementById("graphiql-options").textContent);
    YogaGraphiQL.renderYogaGraphiQL(document.getElementById("root"), options);
  });
})();
`;
  return {
    files,
    urls: {
      favicon: favicon ? await hashed(files, "favicon", "ico", fromBase64(favicon[1]!)) : "",
      css: await text("graphiql", "css", css),
      boot: await text("graphiql-boot", "js", boot),
      graphiql: await text("yoga-graphiql", "js", g.js),
    },
  };
}

const escapeHtml = (s: string) =>
  s.replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]!);

/**
 * yoga's `renderGraphiQL`: the page, with every script and style from `/graphql/assets/` and the
 * options as JSON data (no inline script). `useGraphiQLHeaders` adds the policy.
 */
export async function renderGraphiQL(opts: GraphiQLOptions): Promise<string> {
  const { urls } = await assets();
  // JSON in a <script type="application/json"> element: no "<" can close it.
  const options = JSON.stringify(opts).replace(/</g, "\\u003c");
  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>${escapeHtml(opts.title ?? "GraphiQL")}</title>
${urls.favicon ? `<link rel="icon" href="${urls.favicon}">` : ""}
<link rel="stylesheet" href="${urls.css}">
</head>
<body id="body" class="no-focus-outline">
<noscript>GraphiQL needs JavaScript.</noscript>
<div id="root"></div>
<script type="application/json" id="graphiql-options">${options}</script>
<script src="${urls.boot}"></script>
<script src="${urls.graphiql}"></script>
</body>
</html>
`;
}

/** A yoga plugin: the GraphiQL page's answer gets the policy and its other headers. */
export function useGraphiQLHeaders(): Plugin {
  return {
    onResponse({ request, response }) {
      if (!shouldRenderGraphiQL(request) || !response.headers.get("content-type")?.startsWith("text/html")) return;
      for (const [name, value] of Object.entries(PAGE_HEADERS)) response.headers.set(name, value);
    },
  };
}

/**
 * `GET|HEAD /graphql/assets/<name>`: an asset with its type and a year's cache (names carry
 * their content's hash); 404 for any other name, 405 for other methods. No key needed.
 */
export async function graphiqlAsset(req: Request, pathname: string): Promise<Response> {
  if (req.method !== "GET" && req.method !== "HEAD") {
    return new Response("Method not allowed\n", { status: 405, headers: { allow: "GET, HEAD" } });
  }
  const { files } = await assets();
  const asset = files.get(pathname.slice(GRAPHIQL_ASSETS_PATH.length));
  if (!asset) {
    return new Response("Not found\n", { status: 404, headers: { "content-type": "text/plain; charset=utf-8" } });
  }
  const headers: Record<string, string> = { ...ASSET_HEADERS, "content-type": asset.type };
  let body = asset.body;
  if (COMPRESSIBLE.test(asset.type)) {
    headers.vary = "accept-encoding";
    if (acceptsGzip(req)) {
      body = await gzipped(asset);
      headers["content-encoding"] = "gzip";
    }
  }
  return new Response(req.method === "HEAD" ? null : body, { headers });
}
