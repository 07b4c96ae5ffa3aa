/**
 * The demo page's routes without a browser: served only with DEV_AUTH=1, bundled once by esbuild and
 * kept in memory, a build error answered as a 500 with esbuild's message (and tried again next time).
 */
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createDemoPageRoutes } from "../src/dev/demo-page.ts";
import { type E2EGateway, http, randomSecret, startE2EGateway } from "./support/e2e.ts";

describe("demo page routes", () => {
  let dir: string;
  beforeAll(async () => {
    dir = `${await mkdtemp(join(tmpdir(), "demo-page-"))}/`;
    await writeFile(`${dir}index.html`, "<!doctype html><title>t</title>");
    await writeFile(`${dir}app.css`, "body { margin: 0; }");
  });
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it("a build error answers 500 with esbuild's message; once fixed it builds, and the bundle is kept", async () => {
    const app = createDemoPageRoutes({ dir });
    await writeFile(`${dir}app.tsx`, "const broken: number = ;\n");
    const failed = await app.request("/demo/app.js");
    expect(failed.status).toBe(500);
    const body = (await failed.json()) as { error: { code: string; message: string } };
    expect(body.error.code).toBe("demo_build_failed");
    expect(body.error.message).toContain("app.tsx:1:");
    expect(body.error.message).toMatch(/\[ERROR\] Unexpected ";"/);

    // A failure is not kept: the next request builds again.
    await writeFile(`${dir}app.tsx`, 'const greeting: string = "first build";\nconsole.log(greeting);\n');
    const built = await app.request("/demo/app.js");
    expect(built.status).toBe(200);
    expect(built.headers.get("content-type")).toBe("text/javascript; charset=utf-8");
    const script = await built.text();
    expect(script).toContain("first build");
    expect(script).not.toContain(": string"); // TypeScript was compiled away

    // A success is kept in memory: a later change of the file is not rebuilt.
    await writeFile(`${dir}app.tsx`, 'console.log("second build");\n');
    expect(await (await app.request("/demo/app.js")).text()).toBe(script);

    const page = await app.request("/");
    expect(page.status).toBe(200);
    expect(page.headers.get("content-security-policy")).toMatch(/default-src 'none'.*script-src 'self'/);
    const css = await app.request("/demo/app.css");
    expect(css.headers.get("content-type")).toBe("text/css; charset=utf-8");
    expect(await css.text()).toBe("body { margin: 0; }");
  });

  describe("through a gateway", () => {
    let withDevAuth: E2EGateway;
    let withoutDevAuth: E2EGateway;
    beforeAll(async () => {
      // No chat instance is needed: none of these requests leaves the gateway.
      const options = { chatUpstreams: ["http://127.0.0.1:9"], internalToken: randomSecret() };
      withDevAuth = await startE2EGateway(options);
      withoutDevAuth = await startE2EGateway({ ...options, config: { devAuth: false } });
    });
    afterAll(async () => {
      await withDevAuth?.stop();
      await withoutDevAuth?.stop();
    });

    it("serves the real page and bundles the real demo with DEV_AUTH=1", async () => {
      const page = await http(withDevAuth.baseUrl, "GET", "/");
      expect(page.status).toBe(200);
      expect(page.text).toContain('<div id="root"></div>');
      const script = await http(withDevAuth.baseUrl, "GET", "/demo/app.js");
      expect(script.status).toBe(200);
      expect(script.text).toContain("Real-time updates are unavailable: refreshing every 5 seconds");
      expect(script.text).toContain("fallback-banner");
      expect(script.text).not.toContain("react.development"); // React's production build
    });

    it("serves none of it without DEV_AUTH", async () => {
      for (const path of ["/", "/demo/app.js", "/demo/app.css"]) {
        const res = await http(withoutDevAuth.baseUrl, "GET", path);
        expect(res.status).toBe(404);
        expect(res.body).toEqual({ error: { code: "not_found", message: expect.any(String) } });
      }
    });
  });
});
