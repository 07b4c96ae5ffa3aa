/**
 * The packed `@listings-chat/client` as a monolith team installs it: `npm pack` of the build, installed into
 * fresh consumer projects that each build with their own toolchain. Each project gets the tarball in its own
 * `node_modules`; the tools (TypeScript, Vite, webpack) are this repository's, pointed at the project.
 *
 * Also: "are the types wrong" (every resolution mode sees types that match the JavaScript), publint, and the
 * size budget of `size-limit` (package.json), which fails when the gzipped client grows past it.
 */
import { execFile } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { createRequire } from "node:module";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { packClient } from "../scripts/build.ts";

const run = promisify(execFile);
const require = createRequire(import.meta.url);
const packageDir = fileURLToPath(new URL("..", import.meta.url));
const tsc = require.resolve("typescript/bin/tsc");
/** A command-line tool of this repository's devDependencies (npm links them into the root's node_modules/.bin). */
const bin = (name: string) => fileURLToPath(new URL(`../../../node_modules/.bin/${name}`, import.meta.url));

let workDir: string;
let tarball: string;

/** npm as the test was started with (`npm test` sets npm_execpath), else the one on PATH. */
function npm(args: string[], cwd: string) {
  const npmCli = process.env.npm_execpath;
  return npmCli?.endsWith(".js")
    ? run(process.execPath, [npmCli, ...args], { cwd })
    : run("npm", args, { cwd, shell: process.platform === "win32" });
}

/** A fresh project with `files`, the packed client installed from its tarball (no registry: it has no dependencies). */
async function consumer(name: string, files: Record<string, string>): Promise<string> {
  const dir = join(workDir, name);
  mkdirSync(dir, { recursive: true });
  for (const [path, text] of Object.entries({ "package.json": '{ "name": "consumer", "private": true }', ...files })) {
    mkdirSync(dirname(join(dir, path)), { recursive: true });
    writeFileSync(join(dir, path), text);
  }
  await npm(["install", tarball, "--offline", "--no-audit", "--no-fund", "--ignore-scripts", "--no-package-lock"], dir);
  return dir;
}

/**
 * Code a page would write, typed: a wrong call must fail to compile (`@ts-expect-error` is itself an error when
 * nothing fails, so types that decayed to `any` fail the build).
 */
const PAGE_CODE = `
import { ChatClient, ErrorCode, AccessTokenRefusedError, type ChatEvent, type ChatClientMode } from "@listings-chat/client";
import { Limits, type Message } from "@listings-chat/client/protocol";

const client = new ChatClient({
  baseUrl: "https://chat.example.com",
  getAccessToken: async ({ refresh }) => {
    if (refresh) throw new AccessTokenRefusedError("signed out");
    return "token";
  },
});
client.on("event", (event: ChatEvent) => {
  if (event.type === "new_message") {
    const message: Message = event.message;
    console.log(message.content.slice(0, Limits.maxContentChars));
  }
});
client.on("mode", ({ to }: { to: ChatClientMode }) => console.log(to, ErrorCode.rateLimited));
// @ts-expect-error a chat id is a number
void client.send("seven", "hello");
client.start();
export { client };
`;

beforeAll(async () => {
  workDir = mkdtempSync(join(tmpdir(), "client-consumers-"));
  tarball = packClient(join(workDir, "packs"));
}, 120_000);

afterAll(() => {
  if (workDir) rmSync(workDir, { recursive: true, force: true });
});

describe("the packed client", () => {
  it("holds the built modules and declarations, and neither sources nor tests", async () => {
    const { stdout } = await run("tar", ["tzf", tarball]);
    const files = stdout.trim().split("\n");
    expect(files).toContain("package/esm/index.js");
    expect(files).toContain("package/esm/index.d.ts");
    expect(files).toContain("package/cjs/index.js");
    expect(files).toContain("package/cjs/protocol/index.d.ts");
    expect(files).toContain("package/CHANGELOG.md");
    expect(files.filter((file) => /\.ts$/.test(file) && !file.endsWith(".d.ts"))).toEqual([]);
    expect(files.filter((file) => /test|testing|fake-server/.test(file))).toEqual([]);
    const manifest = JSON.parse((await run("tar", ["xzOf", tarball, "package/package.json"])).stdout);
    expect(manifest.dependencies ?? {}).toEqual({});
    expect(manifest.sideEffects).toBe(false);
    expect(manifest.private).toBeUndefined();
  });

  it("has types that every resolution mode agrees with (arethetypeswrong) and passes publint", async () => {
    const { stdout } = await run(bin("attw"), [tarball, "--format", "json"]).catch((error) => {
      throw new Error(`attw found problems:\n${error.stdout}`);
    });
    const report = JSON.parse(stdout) as {
      problems: Record<string, unknown[]>;
      analysis: { entrypoints: Record<string, { resolutions: Record<string, { resolution?: { fileName: string } }> }> };
    };
    expect(Object.values(report.problems).flat()).toEqual([]);
    // Both entry points were found, and each resolves to declarations in all four modes.
    for (const entry of [".", "./protocol"]) {
      const resolutions = report.analysis.entrypoints[entry]?.resolutions ?? {};
      expect(Object.keys(resolutions).sort(), entry).toEqual(["bundler", "node10", "node16-cjs", "node16-esm"]);
      for (const [mode, { resolution }] of Object.entries(resolutions)) {
        expect(resolution?.fileName, `${entry} in ${mode}`).toMatch(/\.d\.ts$/);
      }
    }
    await run(bin("publint"), ["run", tarball, "--strict"]).catch((error) => {
      throw new Error(`publint found problems:\n${error.stdout}${error.stderr}`);
    });
  }, 60_000);

  it("stays within its gzipped size budget (size-limit)", async () => {
    const { stdout } = await run(bin("size-limit"), ["--json"], { cwd: packageDir }).catch((error) => {
      throw new Error(`size-limit: over budget or failed:\n${error.stdout}${error.stderr}`);
    });
    const checks = JSON.parse(stdout) as Array<{ name: string; passed: boolean; size: number }>;
    expect(checks.length).toBeGreaterThanOrEqual(3);
    for (const check of checks) expect(check, check.name).toMatchObject({ passed: true });
    const codesAlone = checks.find((check) => check.name === "ErrorCode alone");
    // An enum import does not drag the client in: a few hundred bytes, not the client's kilobytes.
    expect(codesAlone?.size).toBeLessThan(600);
  }, 60_000);
});

describe("consumer projects build against the packed client", () => {
  for (const resolution of ["node16", "bundler", "node10"] as const) {
    it(`plain tsc, moduleResolution ${resolution}`, async () => {
      const module = resolution === "node16" ? "node16" : resolution === "bundler" ? "esnext" : "commonjs";
      const files: Record<string, string> = {
        "tsconfig.json": JSON.stringify({
          compilerOptions: {
            module,
            moduleResolution: resolution,
            target: "es2022",
            lib: ["es2022", "dom"],
            strict: true,
            noEmit: true,
            types: [],
          },
          include: ["src"],
        }),
        "src/page.ts": PAGE_CODE,
      };
      if (resolution === "node16") {
        // A CommonJS file of the same project: `require` finds the CJS build and its own declarations.
        files["src/server.cts"] =
          'import client = require("@listings-chat/client");\nexport const code: string = client.ErrorCode.rateLimited;\n';
        files["package.json"] = '{ "name": "consumer", "private": true, "type": "module" }';
      }
      const dir = await consumer(`tsc-${resolution}`, files);
      await run(process.execPath, [tsc, "-p", join(dir, "tsconfig.json")]).catch((error) => {
        throw new Error(`tsc (${resolution}) failed:\n${error.stdout}${error.stderr}`);
      });
    }, 60_000);
  }

  it("Vite: the page bundles, and a page that imports only ErrorCode gets none of the client", async () => {
    const dir = await consumer("vite", {
      "package.json": '{ "name": "consumer", "private": true, "type": "module" }',
      "index.html": '<!doctype html><script type="module" src="/src/page.ts"></script>',
      "codes.html": '<!doctype html><script type="module" src="/src/codes.ts"></script>',
      "src/page.ts": PAGE_CODE,
      "src/codes.ts": 'import { ErrorCode } from "@listings-chat/client";\nconsole.log(ErrorCode.rateLimited);\n',
    });
    const { build } = await import("vite");
    /** One page built on its own, as its site would build it; the text of its scripts. */
    const scriptsOf = async (page: string) => {
      const outDir = join(dir, `out-${page}`);
      await build({
        root: dir,
        configFile: false,
        logLevel: "silent",
        build: { outDir, rollupOptions: { input: join(dir, `${page}.html`) } },
      });
      const assets = join(outDir, "assets");
      const scripts = readdirSync(assets).filter((file) => file.endsWith(".js"));
      expect(scripts.length).toBeGreaterThan(0);
      return scripts.map((file) => readFileSync(join(assets, file), "utf8")).join("\n");
    };
    expect(await scriptsOf("index")).toContain("refreshing every 5 seconds");
    const codes = await scriptsOf("codes");
    expect(codes).toContain("rate_limited");
    expect(codes).not.toContain("refreshing every 5 seconds");
    expect(codes.length).toBeLessThan(2000);
  }, 60_000);

  it("webpack with ts-loader (moduleResolution node, the classic set-up)", async () => {
    const dir = await consumer("webpack", {
      "tsconfig.json": JSON.stringify({
        compilerOptions: {
          module: "es2020",
          moduleResolution: "node",
          target: "es2020",
          strict: true,
          lib: ["es2022", "dom"],
          types: [],
        },
      }),
      "src/index.ts": PAGE_CODE,
    });
    const { default: webpack } = await import("webpack");
    const stats = await new Promise<import("webpack").Stats>((resolve, reject) =>
      webpack(
        {
          mode: "production",
          context: dir,
          entry: "./src/index.ts",
          output: { path: join(dir, "out"), filename: "main.js" },
          resolve: { extensions: [".ts", ".js"] },
          resolveLoader: { modules: [join(dirname(require.resolve("ts-loader/package.json")), "..")] },
          module: {
            rules: [{ test: /\.ts$/, loader: "ts-loader", options: { configFile: join(dir, "tsconfig.json") } }],
          },
        },
        (error, result) => (error || !result ? reject(error ?? new Error("webpack gave no stats")) : resolve(result)),
      ),
    );
    expect(stats.hasErrors(), stats.toString({ all: false, errors: true })).toBe(false);
    expect(readFileSync(join(dir, "out", "main.js"), "utf8")).toContain("refreshing every 5 seconds");
  }, 90_000);

  it("Node: an ES module import and a CommonJS require both talk to an API", async () => {
    const script = (load: string) => `
${load}
const http = require("node:http");
const server = http.createServer((req, res) => {
  res.setHeader("content-type", "application/json");
  if (req.headers.authorization !== "Bearer t1") { res.statusCode = 401; res.end('{"error":{"code":"unauthorized","message":"no"}}'); return; }
  res.end(JSON.stringify({ chats: [{ id: 7 }] }));
});
server.listen(0, "127.0.0.1", async () => {
  const api = new ChatApi("http://127.0.0.1:" + server.address().port, () => "t1", fetch);
  const chats = await api.listChats();
  console.log(JSON.stringify({ chats: chats.length, code: ErrorCode.rateLimited }));
  server.close();
});
`;
    const dir = await consumer("node", {
      "esm.mjs": script(
        'import { ChatApi, ErrorCode } from "@listings-chat/client";\nimport { createRequire } from "node:module";\nconst require = createRequire(import.meta.url);',
      ),
      "cjs.cjs": script('const { ChatApi, ErrorCode } = require("@listings-chat/client");'),
    });
    // The pinned Node, and this machine's own when it has one (the package says it runs on Node 20).
    const nodes = [process.execPath, ...["/usr/bin/node", "/usr/local/bin/node"].filter((path) => existsSync(path))];
    for (const node of nodes) {
      for (const file of ["esm.mjs", "cjs.cjs"]) {
        const { stdout } = await run(node, [file], { cwd: dir });
        expect(JSON.parse(stdout), `${node} ${file}`).toEqual({ chats: 1, code: "rate_limited" });
      }
    }
  }, 60_000);
});
