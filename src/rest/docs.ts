/**
 * `GET /docs`: the API reference, rendered in the browser from `/api/v1/openapi.json` by
 * Swagger UI (the pinned npm `swagger-ui-dist`), whose script and style are served from here,
 * under `/docs/assets/<version>/`. No third-party origin: the bundle loads no fonts (its style
 * names system fonts only) and its online validator badge (validator.swagger.io) is off
 * (`validatorUrl: null`); the page's Content-Security-Policy allows this origin only, and no
 * inline script (the page's setup is the served `init.js`). The style sheet's pictures are
 * `data:` URLs; each is served as a file of its own, so the page asks for nothing but this
 * origin and the policy needs no `data:`.
 *
 * Why Swagger UI: redoc 2 always shows its logo from cdn.redoc.ly, redoc 3 sends telemetry
 * to otel.cloud.redocly.com, and RapiDoc loads Google fonts unless told not to.
 */
import getAbsoluteFSPath from "swagger-ui-dist/absolute-path.js";
import { AppError } from "../errors.ts";
import type { Logger } from "../log.ts";
import { OPENAPI_PATH } from "./openapi.ts";
import { methodNotAllowed, problemResponse } from "./problem.ts";

/** The reference page's path; its assets are under `${DOCS_PATH}/assets/`. */
export const DOCS_PATH = "/docs";

/**
 * The page's policy. Swagger UI sets styles from script (`style-src 'unsafe-inline'`). A `new
 * Function` probe in the bundle falls back when `unsafe-eval` is refused.
 */
export const DOCS_CSP = [
  "default-src 'none'",
  "script-src 'self'",
  "style-src 'self' 'unsafe-inline'",
  "img-src 'self'",
  "font-src 'self'",
  "connect-src 'self'",
  "base-uri 'none'",
  "form-action 'none'",
  "frame-ancestors 'none'",
].join("; ");

/** Swagger UI's setup: this service's document, deep links, nothing fetched from elsewhere. */
const INIT_JS = `"use strict";
window.ui = SwaggerUIBundle({
  url: ${JSON.stringify(OPENAPI_PATH)},
  dom_id: "#docs",
  deepLinking: true,
  validatorUrl: null,
  presets: [SwaggerUIBundle.presets.apis],
  plugins: [SwaggerUIBundle.plugins.DownloadUrl],
  layout: "BaseLayout",
  defaultModelsExpandDepth: 0,
  displayRequestDuration: true,
});
`;

const FILES = {
  "swagger-ui-bundle.js": "text/javascript; charset=utf-8",
  "favicon-32x32.png": "image/png",
} as const;

interface Assets {
  version: string;
  files: Map<string, { body: Uint8Array<ArrayBuffer> | string; type: string }>;
}

/** A `url(…)` of a style sheet: double-quoted, single-quoted (both with CSS escapes) or bare. */
const CSS_URL = /url\(\s*(?:"((?:[^"\\]|\\.)*)"|'((?:[^'\\]|\\.)*)'|([^)\s"']*))\s*\)/g;
const EXT: Record<string, string> = { "image/svg+xml": "svg", "image/png": "png", "image/jpeg": "jpg" };

/**
 * The style sheet with each `data:` picture moved to a file of `files` (`image-<n>.<ext>`, beside
 * it, so the URL is relative); fetch() decodes a data: URL, base64 or percent-encoded.
 */
async function withoutDataUrls(css: string, files: Assets["files"]): Promise<string> {
  const moved = new Map<string, string>();
  for (const m of css.matchAll(CSS_URL)) {
    const url = (m[1] ?? m[2] ?? m[3]).replace(/\\(.)/g, "$1");
    if (!url.startsWith("data:") || moved.has(m[0])) continue;
    const res = await fetch(url);
    const type = res.headers.get("content-type")?.split(";")[0] ?? "";
    if (!EXT[type]) throw new Error(`swagger-ui.css has a data: URL of type ${type}`);
    const name = `image-${moved.size + 1}.${EXT[type]}`;
    files.set(name, { body: await res.bytes(), type });
    moved.set(m[0], `url("${name}")`);
  }
  return css.replace(CSS_URL, (m) => moved.get(m) ?? m);
}

let loading: Promise<Assets> | null = null;

/** The package's files, read once, on the first request for the page or an asset. */
function assets(): Promise<Assets> {
  loading ??= (async () => {
    const dir = getAbsoluteFSPath();
    const { version } = JSON.parse(await Deno.readTextFile(`${dir}/package.json`));
    const files: Assets["files"] = new Map();
    for (const [name, type] of Object.entries(FILES)) {
      files.set(name, { body: await Deno.readFile(`${dir}/${name}`), type });
    }
    const css = await withoutDataUrls(await Deno.readTextFile(`${dir}/swagger-ui.css`), files);
    files.set("swagger-ui.css", { body: css, type: "text/css; charset=utf-8" });
    files.set("init.js", { body: INIT_JS, type: "text/javascript; charset=utf-8" });
    return { version: String(version), files };
  })().catch((err) => {
    loading = null;
    throw err;
  });
  return loading;
}

function page(version: string): string {
  const at = `${DOCS_PATH}/assets/${version}`;
  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Pigeon Perch Sends · API reference</title>
<link rel="icon" type="image/png" href="${at}/favicon-32x32.png">
<link rel="stylesheet" href="${at}/swagger-ui.css">
</head>
<body>
<div id="docs"></div>
<script src="${at}/swagger-ui-bundle.js"></script>
<script src="${at}/init.js"></script>
</body>
</html>
`;
}

const COMMON = {
  "x-content-type-options": "nosniff",
  "referrer-policy": "no-referrer",
  "content-security-policy": DOCS_CSP,
};

/**
 * The handler of `/docs` and `/docs/assets/<version>/<file>` (GET and HEAD): the page, or one of
 * its assets (cached for a year: the version is in the path); 404 for anything else.
 */
export async function docsHandler(req: Request, pathname: string, log: Logger): Promise<Response> {
  try {
    if (req.method !== "GET" && req.method !== "HEAD") return methodNotAllowed(req.method, "GET, HEAD", log);
    const { version, files } = await assets();
    const head = req.method === "HEAD";
    if (pathname === DOCS_PATH) {
      return new Response(head ? null : page(version), {
        headers: { ...COMMON, "content-type": "text/html; charset=utf-8", "cache-control": "no-cache" },
      });
    }
    const prefix = `${DOCS_PATH}/assets/${version}/`;
    const file = pathname.startsWith(prefix) ? files.get(pathname.slice(prefix.length)) : undefined;
    if (!file) throw new AppError("not_found", `no route for ${pathname}`);
    return new Response(head ? null : file.body, {
      headers: { ...COMMON, "content-type": file.type, "cache-control": "public, max-age=31536000, immutable" },
    });
  } catch (err) {
    return problemResponse(err, log, { method: req.method, path: pathname });
  }
}
