/**
 * The demo chat page (CONTRACT §3 `GET /`), served only in development with DEV_AUTH=1: `app.ts` mounts
 * these routes only when it has a dev-token signer.
 *
 * - `GET /` the page (`services/gateway/demo/index.html`),
 * - `GET /demo/app.js` its script: `services/gateway/demo/app.tsx` on `@listings-chat/react` and
 *   `@listings-chat/client` (React's production build), bundled by esbuild at the first request and kept in memory (a failed build answers 500 with esbuild's message
 *   and is tried again at the next request, so fixing the file and reloading is enough),
 * - `GET /demo/app.css` its style sheet,
 * - `GET /dev/img/<name>.svg` the pictures of the demo's seeded listings and people (`seed.ts`).
 *
 * The page runs under a strict Content-Security-Policy (its own script and styles only, connections to
 * its own origin), a second line behind the page's rule of rendering every message with `textContent`.
 */
import { readFile } from "node:fs/promises";
import { fileURLToPath } from "node:url";
import { errorBody } from "@listings-chat/shared";
import { Hono } from "hono";
import { PLACEHOLDER_IMAGES } from "./placeholder-images.ts";

/** Where the demo's sources live: `services/gateway/demo/`. */
export const DEMO_DIR = fileURLToPath(new URL("../../demo/", import.meta.url));

export interface DemoPageOptions {
  /** The demo's folder (index.html, app.tsx, app.css); tests point it elsewhere. */
  dir?: string;
}

export const DemoErrorCode = { buildFailed: "demo_build_failed" } as const;

/**
 * Same-origin only: `'self'` also covers the page's own `ws:`/`wss:` origin for the WebSocket. Images are the
 * exception: a listing's photo and a person's avatar are wherever the platform keeps them (its CDN), and an
 * image cannot run code. So are a photo's upload and its bytes (CONTRACT §11): a presigned URL of whichever
 * S3-compatible store the chat service uses, whose origin this page cannot know (development storage is
 * `'self'`).
 */
const CONTENT_SECURITY_POLICY = [
  "default-src 'none'",
  "script-src 'self'",
  "style-src 'self'",
  "connect-src 'self' https: http:",
  "img-src 'self' https: http:",
  "base-uri 'none'",
  "form-action 'none'",
  "frame-ancestors 'none'",
].join("; ");

/** Bundles `entry` for the browser; the esbuild message on failure. */
async function bundle(entry: string): Promise<{ ok: true; code: string } | { ok: false; message: string }> {
  // Imported on first use, so that a gateway without DEV_AUTH never loads esbuild.
  const esbuild = await import("esbuild");
  try {
    const result = await esbuild.build({
      entryPoints: [entry],
      bundle: true,
      write: false,
      format: "esm",
      platform: "browser",
      target: "es2022",
      sourcemap: "inline",
      jsx: "automatic",
      // React's production build: its development build is slower and warns on the console, which tests read.
      define: { "process.env.NODE_ENV": '"production"' },
      logLevel: "silent",
      charset: "utf8",
    });
    const [output] = result.outputFiles;
    if (!output) return { ok: false, message: "esbuild produced no output" };
    return { ok: true, code: output.text };
  } catch (error) {
    const failure = error as { errors?: Parameters<typeof esbuild.formatMessages>[0] };
    if (failure.errors?.length) {
      const lines = await esbuild.formatMessages(failure.errors, { kind: "error", color: false });
      return { ok: false, message: lines.join("\n").trim() };
    }
    return { ok: false, message: error instanceof Error ? error.message : String(error) };
  }
}

/** The demo page's routes, to mount with `app.route("/", createDemoPageRoutes())`. */
export function createDemoPageRoutes(options: DemoPageOptions = {}) {
  const dir = options.dir ?? DEMO_DIR;
  /** The bundle in memory once it built; a build in progress is shared by the requests that wait for it. */
  let script: Promise<Awaited<ReturnType<typeof bundle>>> | undefined;
  const files = new Map<string, Promise<string>>();
  const file = (name: string) => {
    let text = files.get(name);
    if (!text) {
      text = readFile(`${dir}${name}`, "utf8");
      // A read that failed is tried again at the next request.
      text.catch(() => files.delete(name));
      files.set(name, text);
    }
    return text;
  };

  const app = new Hono();
  app.use(async (c, next) => {
    await next();
    c.header("Content-Security-Policy", CONTENT_SECURITY_POLICY);
    c.header("X-Content-Type-Options", "nosniff");
    c.header("Referrer-Policy", "no-referrer");
    c.header("Cache-Control", "no-cache");
  });

  app.get("/", async (c) => c.html(await file("index.html")));

  app.get("/demo/app.css", async (c) => {
    c.header("Content-Type", "text/css; charset=utf-8");
    return c.body(await file("app.css"));
  });

  app.get("/dev/img/:name", (c) => {
    const name = c.req.param("name");
    const svg = Object.hasOwn(PLACEHOLDER_IMAGES, name) ? PLACEHOLDER_IMAGES[name] : undefined;
    if (svg === undefined) return c.json(errorBody("not_found", "no such demo picture"), 404);
    c.header("Content-Type", "image/svg+xml");
    return c.body(svg);
  });

  app.get("/demo/app.js", async (c) => {
    script ??= bundle(`${dir}app.tsx`);
    const built = await script;
    if (!built.ok) {
      script = undefined;
      return c.json(
        errorBody(DemoErrorCode.buildFailed, `the demo page's script did not build: ${built.message}`),
        500,
      );
    }
    c.header("Content-Type", "text/javascript; charset=utf-8");
    return c.body(built.code);
  });

  return app;
}
