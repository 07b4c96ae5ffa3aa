/**
 * The services as real processes (`node src/main.ts`, types stripped by node, or the built bundle's `main.js`; one
 * process each, so that the pid is the server's own): for tests that count a process's open files, watch
 * it survive, or signal it.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { connect as netConnect } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { freePort, pollUntil, sleep } from "./e2e.ts";

const repoRoot = fileURLToPath(new URL("../../../../", import.meta.url));
const mains = {
  chat: join(repoRoot, "services/listings-chat/src/main.ts"),
  gateway: join(repoRoot, "services/gateway/src/main.ts"),
};

export interface ServiceProcess {
  child: ChildProcess;
  pid: number;
  port: number;
  baseUrl: string;
  /** Everything it printed so far. */
  output(): string;
  /** Its exit code once it has exited (null when killed by a signal). */
  exited: Promise<number | null>;
  alive(): boolean;
  /** Open file descriptors, from /proc/<pid>/fd. */
  openFiles(): number;
  /** Resident memory in MiB, from /proc/<pid>/status. */
  rssMiB(): number;
  /** SIGTERM (or `signal`), then the exit code; SIGKILL when it has not exited within 15 s. */
  stop(signal?: NodeJS.Signals): Promise<number | null>;
}

/** How a service is started: from its TypeScript sources (the default) or from a bundle of scripts/build.ts. */
export interface StartFrom {
  /** The bundle's main.js, run with plain `node`. */
  bundle?: string;
}

export async function waitForHealth(baseUrl: string, child: ChildProcess, output: () => string, timeoutMs = 30_000) {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (child.exitCode !== null) throw new Error(`the service exited before it was healthy:\n${output()}`);
    const ok = await fetch(`${baseUrl}/health`).then(
      (r) => r.ok,
      () => false,
    );
    if (ok) return;
    await sleep(100);
  }
  throw new Error(`the service did not become healthy:\n${output()}`);
}

async function startService(
  which: keyof typeof mains,
  portVariable: string,
  env: Record<string, string>,
  cleanup?: () => void,
  from: StartFrom = {},
): Promise<ServiceProcess> {
  // A port given in `env` is kept: a process started again on it is the same upstream to a gateway.
  const port = env[portVariable] ? Number(env[portVariable]) : await freePort();
  const args = from.bundle ? ["--enable-source-maps", from.bundle] : [mains[which]];
  const child = spawn(process.execPath, args, {
    cwd: repoRoot,
    env: { PATH: process.env.PATH ?? "", HOME: process.env.HOME ?? "", ...env, [portVariable]: String(port) },
    stdio: ["ignore", "pipe", "pipe"],
  });
  let printed = "";
  child.stdout?.on("data", (d) => {
    printed += d;
  });
  child.stderr?.on("data", (d) => {
    printed += d;
  });
  const exited = new Promise<number | null>((resolve) =>
    child.once("exit", (code) => {
      cleanup?.();
      resolve(code);
    }),
  );
  const baseUrl = `http://127.0.0.1:${port}`;
  const output = () => printed;
  try {
    await waitForHealth(baseUrl, child, output);
  } catch (error) {
    child.kill("SIGKILL");
    throw error;
  }
  const pid = child.pid ?? 0;
  return {
    child,
    pid,
    port,
    baseUrl,
    output,
    exited,
    alive: () => child.exitCode === null && child.signalCode === null,
    openFiles: () => readdirSync(`/proc/${pid}/fd`).length,
    rssMiB: () => {
      const line = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, "utf8"));
      return Number(line?.[1] ?? 0) / 1024;
    },
    async stop(signal = "SIGTERM") {
      if (child.exitCode !== null || child.signalCode !== null) return child.exitCode;
      child.kill(signal);
      const timer = setTimeout(() => child.kill("SIGKILL"), 15_000);
      try {
        return await exited;
      } finally {
        clearTimeout(timer);
      }
    },
  };
}

/** listings-chat on PGlite in a temporary directory (removed when it exits), or on `DATABASE_URL` when given. */
export function startChatProcess(env: Record<string, string>, from: StartFrom = {}): Promise<ServiceProcess> {
  const dataDir = mkdtempSync(join(tmpdir(), "lc-edge-"));
  return startService(
    "chat",
    "CHAT_PORT",
    { CHAT_HOST: "127.0.0.1", DATA_DIR: dataDir, NODE_ENV: "test", LOG_LEVEL: "warn", ...env },
    () => rmSync(dataDir, { recursive: true, force: true }),
    from,
  );
}

/** The gateway with DEV_AUTH=1 (dev tokens) in front of `CHAT_UPSTREAMS`. */
export function startGatewayProcess(env: Record<string, string>, from: StartFrom = {}): Promise<ServiceProcess> {
  return startService(
    "gateway",
    "GATEWAY_PORT",
    { GATEWAY_HOST: "127.0.0.1", NODE_ENV: "test", LOG_LEVEL: "warn", DEV_AUTH: "1", ...env },
    undefined,
    from,
  );
}

/** Polls until `process.openFiles()` is at most `limit`; returns the last count. */
export async function openFilesSettle(service: ServiceProcess, limit: number, timeoutMs = 10_000): Promise<number> {
  const deadline = Date.now() + timeoutMs;
  let count = service.openFiles();
  while (count > limit && Date.now() < deadline) {
    await sleep(100);
    count = service.openFiles();
  }
  return count;
}

/** A redis-server of its own (never the shared one), for tests that kill or pause it. */
export interface RedisProcess {
  port: number;
  url: string;
  /** True when it answers PING. */
  answers(): Promise<boolean>;
  /** SIGKILL, then a new server on the same port (empty: nothing is saved). */
  restart(downMs: number): Promise<void>;
  /** SIGSTOP: connections stay open and nothing is answered, as on a frozen host. SIGCONT after `ms`. */
  pause(ms: number): Promise<void>;
  kill(): void;
}

export async function startRedisProcess(): Promise<RedisProcess> {
  const port = await freePort();
  let server: ChildProcess | undefined;
  const start = () => {
    server = spawn(
      "redis-server",
      ["--port", String(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
      {
        stdio: "ignore",
      },
    );
  };
  const answers = async () => {
    const socket = netConnect(port, "127.0.0.1");
    const answered = await new Promise<boolean>((resolve) => {
      socket.once("data", (data) => resolve(String(data).startsWith("+PONG")));
      socket.once("error", () => resolve(false));
      socket.once("connect", () => socket.write("PING\r\n"));
    });
    socket.destroy();
    return answered;
  };
  const ready = async () => {
    if (!(await pollUntil(answers, 10_000, 100))) throw new Error(`redis-server on port ${port} did not answer`);
  };
  start();
  await ready();
  return {
    port,
    url: `redis://127.0.0.1:${port}`,
    answers,
    async restart(downMs) {
      server?.kill("SIGKILL");
      await sleep(downMs);
      start();
      await ready();
    },
    async pause(ms) {
      server?.kill("SIGSTOP");
      await sleep(ms);
      server?.kill("SIGCONT");
    },
    kill: () => server?.kill("SIGKILL"),
  };
}
