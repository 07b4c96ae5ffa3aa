/**
 * The packed `@listings-chat/client` as a monolith team installs it: `npm pack` of the build, installed into
 * fresh consumer projects that each build with their own toolchain. Each project gets the tarball in its own
 * `node_modules`; the tools (TypeScript, Vite, webpack) are this repository's, pointed at the project.
 *
 * Also: "are the types wrong" (every resolution mode sees types that match the JavaScript), publint, and the
 * size budget of `size-limit` (package.json), which fails when the gzipped client grows past it.
 *
 * Then the same for `@listings-chat/react` with the client beside it (scripts/pack-packages.ts packs both once
 * per source state, for every test that installs them).
 */
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { createRequire } from "node:module";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { packPublishedPackages } from "../../../scripts/pack-packages.ts";
import {
  bin,
  consumerProject,
  installedVersion,
  run,
  sizeLimitOfTarball,
  typecheck,
  viteBuild,
} from "./consumer-project.ts";

const require = createRequire(import.meta.url);
const packageDir = fileURLToPath(new URL("..", import.meta.url));
const reactDir = fileURLToPath(new URL("../../react/", import.meta.url));

let workDir: string;
let tarball: string;
let reactTarball: string;

/** A fresh project with `files` and the packed client installed from its tarball (it has no dependencies). */
const consumer = (name: string, files: Record<string, string>) =>
  consumerProject(join(workDir, name), files, [tarball]);

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
  ({ client: tarball, react: reactTarball } = await packPublishedPackages(join(workDir, "packs")));
}, 180_000);

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
    const checks = await sizeLimitOfTarball(tarball, packageDir);
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
      await typecheck(await consumer(`tsc-${resolution}`, files), `moduleResolution ${resolution}`);
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
    expect(await viteBuild(dir, "index")).toContain("refreshing every 5 seconds");
    const codes = await viteBuild(dir, "codes");
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

// ---------------------------------------------------------------------------------------------------
// @listings-chat/react

/** What a React app installs: both tarballs, and React (from npm's cache: this repository installed it). */
const reactApp = (name: string, files: Record<string, string>, types = false) =>
  consumerProject(join(workDir, name), files, [
    tarball,
    reactTarball,
    `react@${installedVersion("react")}`,
    `react-dom@${installedVersion("react-dom")}`,
    ...(types
      ? [`@types/react@${installedVersion("@types/react")}`, `@types/react-dom@${installedVersion("@types/react-dom")}`]
      : []),
  ]);

/** An app's chat: typed, with a wrong call under `@ts-expect-error` so that types decayed to `any` fail. */
const APP_CODE = `
import { ChatClient } from "@listings-chat/client";
import { ChatProvider, useChatList, useConnection, useThread, type PendingMessage } from "@listings-chat/react";
import { createRoot } from "react-dom/client";

function Chats() {
  const { chats } = useChatList();
  const { mode, unreadTotal } = useConnection();
  return (
    <ul data-mode={mode} data-unread={unreadTotal}>
      {chats.map((chat) => <li key={chat.id}>{chat.last_message?.content ?? "listings-chat consumer"}</li>)}
    </ul>
  );
}

function Thread({ chatId }: { chatId: number }) {
  const { messages, pending, send } = useThread(chatId);
  const failed: readonly PendingMessage[] = pending.filter((p) => p.status === "failed");
  // @ts-expect-error send takes the text only
  void send(chatId, "hello");
  return <p>{messages.length + failed.length}</p>;
}

const client = new ChatClient({ baseUrl: "", getAccessToken: () => "token" });
const root = document.getElementById("root");
if (root) createRoot(root).render(<ChatProvider client={client}><Chats /><Thread chatId={1} /></ChatProvider>);
`;

describe("the packed React bindings", () => {
  it("name the client and React as peers, and depend on nothing else", async () => {
    const manifest = JSON.parse((await run("tar", ["xzOf", reactTarball, "package/package.json"])).stdout);
    expect(manifest.dependencies ?? {}).toEqual({});
    expect(Object.keys(manifest.peerDependencies).sort()).toEqual(["@listings-chat/client", "react"]);
    expect(manifest.sideEffects).toBe(false);
  });

  it("have types that every resolution mode agrees with (arethetypeswrong) and pass publint", async () => {
    // The peers are not in the tarball: attw resolves the package's own files, and that is what it judges.
    const { stdout } = await run(bin("attw"), [reactTarball, "--format", "json"]).catch((error) => {
      throw new Error(`attw found problems:\n${error.stdout}`);
    });
    const report = JSON.parse(stdout) as { problems: Record<string, unknown[]> };
    expect(Object.values(report.problems).flat()).toEqual([]);
    await run(bin("publint"), ["run", reactTarball, "--strict"]).catch((error) => {
      throw new Error(`publint found problems:\n${error.stdout}${error.stderr}`);
    });
  }, 60_000);

  it("stay within their gzipped size budget (size-limit)", async () => {
    const checks = await sizeLimitOfTarball(reactTarball, reactDir);
    expect(checks.length).toBeGreaterThan(0);
    for (const check of checks) expect(check, check.name).toMatchObject({ passed: true });
  }, 60_000);
});

describe("a React app builds against the packed packages", () => {
  it("Vite bundles the app with the hooks and the client", async () => {
    const dir = await reactApp("vite", {
      "package.json": '{ "name": "consumer", "private": true, "type": "module" }',
      "index.html": '<!doctype html><div id="root"></div><script type="module" src="/src/main.tsx"></script>',
      "src/main.tsx": APP_CODE,
    });
    const scripts = await viteBuild(dir, "index");
    expect(scripts).toContain("listings-chat consumer");
    expect(scripts).toContain("refreshing every 5 seconds"); // the client
    expect(scripts).toContain("wrap the component in <ChatProvider"); // the hooks
  }, 120_000);

  for (const resolution of ["node16", "bundler"] as const) {
    it(`plain tsc type-checks the app, moduleResolution ${resolution}`, async () => {
      const dir = await reactApp(
        `tsc-${resolution}`,
        {
          "package.json": '{ "name": "consumer", "private": true, "type": "module" }',
          "tsconfig.json": JSON.stringify({
            compilerOptions: {
              module: resolution === "node16" ? "node16" : "esnext",
              moduleResolution: resolution,
              target: "es2022",
              lib: ["es2022", "dom"],
              jsx: "react-jsx",
              strict: true,
              noEmit: true,
            },
            include: ["src"],
          }),
          "src/main.tsx": APP_CODE,
        },
        true,
      );
      await typecheck(dir, `moduleResolution ${resolution}`);
    }, 120_000);
  }

  it("Node: a CommonJS require of the store works beside the client", async () => {
    const dir = await reactApp("node", {
      "main.cjs": `
const { ChatClient } = require("@listings-chat/client");
const { ChatStore } = require("@listings-chat/react");
const client = new ChatClient({ baseUrl: "http://127.0.0.1:9", getAccessToken: () => "t" });
const store = new ChatStore(client);
console.log(JSON.stringify({ mode: store.getConnection().mode, chats: store.getChatList().chats.length }));
`,
    });
    const { stdout } = await run(process.execPath, ["main.cjs"], { cwd: dir });
    expect(JSON.parse(stdout)).toEqual({ mode: "offline", chats: 0 });
  }, 120_000);
});
