/**
 * The compiled bundles (scripts/build.ts) as the image runs them: built into a temporary folder under dist/,
 * and started as PID 1 of a PID namespace, as in a container without an init (where a signal with no handler
 * is ignored).
 */
import { type ChildProcess, spawn } from "node:child_process";
import { mkdirSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { createServer, type Server, type Socket } from "node:net";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll, beforeAll, expect } from "vitest";
import { buildServices, type ServiceName } from "../../../../scripts/build.ts";
import { pollUntil, randomSecret } from "./e2e.ts";

export const repoRoot = fileURLToPath(new URL("../../../../", import.meta.url));
/** SIGTERM must end a service within this (CONTRACT §6: 10 s). */
export const EXIT_WITHIN_MS = 10_000;

export interface BuiltBundles {
  /** The folder they were built into. */
  outDir(): string;
  /** Each service's main file in it. */
  paths(): Record<ServiceName, string>;
}

/**
 * Builds the bundles before the file's tests (inside the repository, dist/ being ignored by git, so that they
 * find node_modules as in the image) and removes them after.
 */
export function buildBundlesForSuite(): BuiltBundles {
  let outDir: string | undefined;
  let bundles: Record<ServiceName, string> | undefined;
  beforeAll(async () => {
    mkdirSync(join(repoRoot, "dist"), { recursive: true });
    outDir = mkdtempSync(join(repoRoot, "dist", "test-"));
    bundles = await buildServices(outDir);
  }, 60_000);
  afterAll(() => {
    if (outDir) rmSync(outDir, { recursive: true, force: true });
  });
  const built = <T>(value: T | undefined): T => {
    if (value === undefined) throw new Error("the bundles are built in beforeAll");
    return value;
  };
  return { outDir: () => built(outDir), paths: () => built(bundles) };
}

/** A production gateway's variables in front of the instance on `chatPort`. */
export function gatewayEnv(port: number, chatPort: number, internalToken: string): Record<string, string> {
  return {
    NODE_ENV: "production",
    GATEWAY_HOST: "127.0.0.1",
    GATEWAY_PORT: String(port),
    CHAT_UPSTREAMS: `http://127.0.0.1:${chatPort}`,
    INTERNAL_TOKEN: internalToken,
    JWT_SECRET: randomSecret(),
    JWT_AUDIENCE: "listings-chat",
    WS_TOKEN_SECRET: randomSecret(),
    LOG_LEVEL: "info",
  };
}

export interface Pid1Process {
  /** `unshare`, which waits for the namespace's PID 1 and exits with its code. */
  outer: ChildProcess;
  /** The service's pid as seen from here (1 inside its namespace). */
  pid: number;
  output(): string;
  exited: Promise<number | null>;
}

/** The pid `unshare` forked (the namespace's PID 1), once it runs node. */
async function namespaceInit(outer: ChildProcess): Promise<number> {
  let pid = 0;
  const found = await pollUntil(
    () => {
      try {
        pid = Number(readFileSync(`/proc/${outer.pid}/task/${outer.pid}/children`, "utf8").trim().split(" ")[0]);
        // "node", or "node-MainThread" once Node 26 has named its main thread.
        return pid > 0 && /^node(-MainThread)?$/.test(readFileSync(`/proc/${pid}/comm`, "utf8").trim());
      } catch {
        return false;
      }
    },
    10_000,
    2,
  );
  if (!found) throw new Error("unshare did not start node");
  return pid;
}

/**
 * Runs a bundle as PID 1 of a new PID namespace (`unshare --pid --fork`), with only `env`; with
 * `readOnlyRoot`, in a mount namespace whose root filesystem is remounted read-only first.
 */
export async function startAsPid1(
  bundle: string,
  env: Record<string, string>,
  options: { readOnlyRoot?: boolean } = {},
): Promise<Pid1Process> {
  const readOnly = options.readOnlyRoot ? "mount --make-rprivate / && mount -o remount,bind,ro / && " : "";
  const outer = spawn(
    "unshare",
    [
      "--pid",
      "--fork",
      "--kill-child",
      "--mount",
      "sh",
      "-c",
      `${readOnly}exec "$@"`,
      "sh",
      process.execPath,
      "--enable-source-maps",
      bundle,
    ],
    { env: { PATH: process.env.PATH ?? "", ...env }, stdio: ["ignore", "pipe", "pipe"] },
  );
  let printed = "";
  outer.stdout?.on("data", (d) => {
    printed += d;
  });
  outer.stderr?.on("data", (d) => {
    printed += d;
  });
  const exited = new Promise<number | null>((resolve) => outer.once("exit", (code) => resolve(code)));
  const pid = await namespaceInit(outer);
  expect(readFileSync(`/proc/${pid}/status`, "utf8")).toMatch(/^NSpid:\s+\d+\s+1$/m);
  return { outer, pid, output: () => printed, exited };
}

/** Sends SIGTERM to the namespace's PID 1; its exit code and how long it took (SIGKILL after 15 s). */
export async function sigterm(service: Pid1Process): Promise<{ code: number | null; ms: number }> {
  const sentAt = Date.now();
  process.kill(service.pid, "SIGTERM");
  const killer = setTimeout(() => service.outer.kill("SIGKILL"), 15_000);
  const code = await service.exited;
  clearTimeout(killer);
  return { code, ms: Date.now() - sentAt };
}

export async function healthy(baseUrl: string, timeoutMs = 30_000) {
  return pollUntil(
    () =>
      fetch(`${baseUrl}/health`).then(
        (r) => r.ok,
        () => false,
      ),
    timeoutMs,
    50,
  );
}

/**
 * SIGTERM to the namespace's PID 1 every 10 ms from now until it exits (or 10 s): the signals that come
 * before it has a handler are ignored, as PID 1's are; the first one after lands. Sent by a shell loop of
 * its own, not from this process, whose event loop other test files may keep busy for longer than the
 * service takes to load.
 */
export async function sigtermUntilExit(service: Pid1Process): Promise<number | null> {
  const sender = spawn(
    "sh",
    [
      "-c",
      `end=$(($(date +%s) + ${EXIT_WITHIN_MS / 1_000})); while kill -TERM ${service.pid} 2>/dev/null && [ $(date +%s) -lt $end ]; do sleep 0.01; done`,
    ],
    { stdio: "ignore" },
  );
  const killer = setTimeout(() => service.outer.kill("SIGKILL"), EXIT_WITHIN_MS + 2_000);
  const code = await service.exited;
  clearTimeout(killer);
  sender.kill("SIGKILL");
  return code;
}

/** A server that accepts connections and never answers, as a frozen PostgreSQL or Redis does. */
export async function frozenServer(): Promise<{ port: number; connections(): number; close(): Promise<void> }> {
  const held = new Set<Socket>();
  const server: Server = createServer((socket) => {
    held.add(socket);
    socket.on("error", () => {});
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as { port: number };
  return {
    port,
    connections: () => held.size,
    close: () =>
      new Promise<void>((resolve) => {
        for (const socket of held) socket.destroy();
        server.close(() => resolve());
      }),
  };
}
