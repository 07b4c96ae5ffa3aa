/**
 * What the benchmarks share: a fresh database per run, listings-chat processes in production mode on it
 * and on Redis, sockets on the internal hop, percentiles, and CPU read from /proc.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { readdirSync, readFileSync } from "node:fs";
import { createServer } from "node:net";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import pg from "pg";
import WebSocket from "ws";
import { processTree } from "../services/gateway/test/support/process-tree.ts";

export const root = fileURLToPath(new URL("..", import.meta.url));
export const databaseUrl = process.env.DATABASE_URL ?? "postgres://postgres@127.0.0.1:5432/test";
export const redisUrl = process.env.REDIS_URL ?? "redis://127.0.0.1:6379";
export const token = randomBytes(24).toString("hex");
/** BENCH_CPU_PROF=dir: each instance writes a V8 CPU profile there when it stops (open it in Chrome DevTools). */
export const cpuProfileDir = process.env.BENCH_CPU_PROF;

export const freePort = () =>
  new Promise<number>((resolve) => {
    const server = createServer().listen(0, "127.0.0.1", () => {
      const { port } = server.address() as { port: number };
      server.close(() => resolve(port));
    });
  });

/** Every process a bench started and that still runs: stopped with it when it is interrupted. */
const children = new Map<ChildProcess, NodeJS.Signals>();

/** Counts `child` among the processes to stop, with `signal`, if the bench is interrupted. */
export function trackChild(child: ChildProcess, signal: NodeJS.Signals = "SIGKILL"): ChildProcess {
  children.set(child, signal);
  child.once("exit", () => children.delete(child));
  return child;
}

/** A fresh database on DATABASE_URL's server, named `<prefix>_<pid>_<random>`, dropped after `work`. */
export async function withDatabase<T>(
  work: (url: string, name: string) => Promise<T>,
  prefix = "lc_bench",
): Promise<T> {
  const name = `${prefix}_${process.pid}_${randomBytes(3).toString("hex")}`;
  const admin = new pg.Client({ connectionString: databaseUrl });
  await admin.connect();
  await admin.query(`create database ${name}`);
  await admin.end();
  const url = new URL(databaseUrl);
  url.pathname = `/${name}`;
  const drop = async () => {
    const dropper = new pg.Client({ connectionString: databaseUrl });
    await dropper.connect();
    await dropper.query(`drop database if exists ${name} with (force)`);
    await dropper.end();
  };
  // A bench stopped with Ctrl-C or SIGTERM stops what it started and drops its database.
  const interrupted = (signal: NodeJS.Signals) => {
    console.error(`bench: ${signal}: stopping ${children.size} processes, dropping ${name}`);
    for (const [child, signal] of children) child.kill(signal);
    drop().finally(() => process.exit(130));
  };
  process.once("SIGINT", interrupted);
  process.once("SIGTERM", interrupted);
  try {
    return await work(url.toString(), name);
  } finally {
    process.off("SIGINT", interrupted);
    process.off("SIGTERM", interrupted);
    await drop();
  }
}

export async function startChat(
  url: string,
  prefix: string,
  id: string,
  extraEnv: Record<string, string>,
): Promise<{ port: number; child: ChildProcess }> {
  const port = await freePort();
  const child = await startService("services/listings-chat/src/main.ts", port, {
    NODE_ENV: "production",
    CHAT_PORT: String(port),
    CHAT_HOST: "127.0.0.1",
    DATABASE_URL: url,
    REDIS_URL: redisUrl,
    REDIS_KEY_PREFIX: prefix,
    INTERNAL_TOKEN: token,
    INSTANCE_ID: id,
    LOG_LEVEL: "warn",
    SEND_LIMIT_PER_MINUTE: "1000000",
    DATABASE_POOL_SIZE: "20",
    // The benchmarks open chats on listings nobody registered (CONTRACT §8); sends still look their listing up.
    LISTINGS_REQUIRED: "0",
    ...extraEnv,
  });
  return { port, child };
}

/** The `aud` of the benchmarks' access tokens: a production gateway needs JWT_AUDIENCE or JWT_ISSUER. */
export const jwtAudience = "listings-chat-bench";

/** The gateway (production mode, on REDIS_URL) in front of the chat instance on `chatPort`; `env` adds or overrides. */
export async function startGateway(
  chatPort: number,
  env: Record<string, string>,
): Promise<{ port: number; child: ChildProcess }> {
  const port = await freePort();
  const child = await startService("services/gateway/src/main.ts", port, {
    NODE_ENV: "production",
    GATEWAY_PORT: String(port),
    GATEWAY_HOST: "127.0.0.1",
    CHAT_UPSTREAMS: `http://127.0.0.1:${chatPort}`,
    INTERNAL_TOKEN: token,
    REDIS_URL: redisUrl,
    JWT_AUDIENCE: jwtAudience,
    LOG_LEVEL: "warn",
    ...env,
  });
  await allWorkersListening(port, Number(env.GATEWAY_WORKERS ?? 1));
  return { port, child };
}

/**
 * With GATEWAY_WORKERS, /health answers once the first worker listens and the others start after it: waits
 * until the gateway's /metrics sums all `workers` (listings_chat_gateway_workers_reporting).
 */
async function allWorkersListening(port: number, workers: number): Promise<void> {
  if (workers <= 1) return;
  for (let i = 0; i < 300; i++) {
    const text = await fetch(`http://127.0.0.1:${port}/metrics`, { headers: { "x-internal-token": token } }).then(
      (r) => r.text(),
      () => "",
    );
    if (new RegExp(`^listings_chat_gateway_workers_reporting ${workers}$`, "m").test(text)) return;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`the gateway's ${workers} workers did not all listen within 30 s`);
}

/** Resident memory of a process, in KiB. */
export const rssKiB = (pid: number) =>
  Number(/VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, "utf8"))?.[1] ?? 0);

/**
 * Starts one of the services (`main`, from the repository's root) in a process of its own, with `env` and
 * nothing else from this one but PATH (profiled under BENCH_CPU_PROF); resolves once it answers /health on
 * `port`.
 */
/**
 * How `node` runs a .ts file here: by itself on the pinned Node (it strips the types), through tsx on an older
 * Node run on purpose (bench:runtimes runs the benchmarks on the machine's Node 20 as well).
 */
export const typeScriptLoader: string[] = process.features.typescript ? [] : ["--import", "tsx"];

export async function startService(main: string, port: number, env: Record<string, string>): Promise<ChildProcess> {
  const profile = cpuProfileDir ? ["--cpu-prof", `--cpu-prof-dir=${cpuProfileDir}`] : [];
  const child = trackChild(
    spawn(process.execPath, [...profile, ...typeScriptLoader, join(root, main)], {
      cwd: root,
      env: { PATH: process.env.PATH ?? "", ...env },
      stdio: ["ignore", "inherit", "inherit"],
    }),
  );
  for (let i = 0; i < 300; i++) {
    if (
      await fetch(`http://127.0.0.1:${port}/health`).then(
        (r) => r.ok,
        () => false,
      )
    )
      return child;
    await new Promise((r) => setTimeout(r, 100));
  }
  child.kill("SIGKILL");
  throw new Error(`${main} did not start`);
}

export function open(port: number, userId: number): Promise<WebSocket> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(`ws://127.0.0.1:${port}/ws/chat`, {
      headers: { "x-internal-token": token, "x-user-id": String(userId) },
      perMessageDeflate: false,
    });
    ws.once("message", () => resolve(ws));
    ws.once("error", reject);
  });
}

/**
 * The median of `items` by `key` (the lower middle one of an even count, so that it is always an item that
 * was measured), or undefined when there are none.
 */
export function medianBy<T>(items: readonly T[], key: (item: T) => number): T | undefined {
  return [...items].sort((a, b) => key(a) - key(b))[Math.floor((items.length - 1) / 2)];
}

/** The nearest-rank percentile of ascending `sorted`: the smallest value that at least `p` of them do not exceed. */
export const percentile = (sorted: number[], p: number) => sorted[Math.max(0, Math.ceil(sorted.length * p) - 1)] ?? 0;

/** User + system CPU of a process so far, in seconds (0 once it is gone). */
export function cpuSeconds(pid: number): number {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8").split(") ")[1]!.split(" ");
    return (Number(stat[11]) + Number(stat[12])) / 100;
  } catch {
    return 0;
  }
}

/** The pids of the processes whose command name is `name` (postgres backends, redis-server). */
export function pidsNamed(name: string): number[] {
  return readdirSync("/proc")
    .filter((entry) => /^\d+$/.test(entry))
    .filter((pid) => {
      try {
        return readFileSync(`/proc/${pid}/comm`, "utf8").trim() === name;
      } catch {
        return false;
      }
    })
    .map(Number);
}

/**
 * CPU seconds of a service: its process and every process it started, so that a gateway with
 * GATEWAY_WORKERS counts its supervisor and workers together (a worker that exited is no longer counted).
 */
export const serviceCpuSeconds = (pid: number) => processTree(pid).reduce((sum, one) => sum + cpuSeconds(one), 0);

/** Resident memory of a service in KiB: its process and every process it started (see serviceCpuSeconds). */
export const serviceRssKiB = (pid: number) =>
  processTree(pid).reduce((sum, one) => {
    try {
      return sum + rssKiB(one);
    } catch {
      return sum; // gone since the tree was read
    }
  }, 0);

/** Busy and total jiffies of the whole machine. */
export function machineJiffies(): { busy: number; total: number } {
  const fields = readFileSync("/proc/stat", "utf8").split("\n")[0]!.split(/\s+/).slice(1).map(Number);
  const idle = (fields[3] ?? 0) + (fields[4] ?? 0);
  const total = fields.reduce((a, b) => a + b, 0);
  return { busy: total - idle, total };
}

/**
 * CPU of each part so far, per process: the chat instances, PostgreSQL (every backend), Redis and this
 * process. A backend that ends during a measurement is not counted (the bench keeps its connections open).
 */
export function cpuSnapshot(chatPids: number[]) {
  const of = (pids: number[]) => new Map(pids.map((pid) => [pid, cpuSeconds(pid)]));
  return {
    chatPids,
    chat: of(chatPids),
    postgres: of(pidsNamed("postgres")),
    redis: of(pidsNamed("redis-server")),
    self: cpuSeconds(process.pid),
    machine: machineJiffies(),
  };
}

export function cpuSince(before: ReturnType<typeof cpuSnapshot>) {
  const now = cpuSnapshot(before.chatPids);
  // A process that started since (a pool growing) counts from zero.
  const spent = (was: Map<number, number>, is: Map<number, number>) =>
    [...is].reduce((total, [pid, seconds]) => total + seconds - (was.get(pid) ?? 0), 0);
  return {
    chat: spent(before.chat, now.chat),
    postgres: spent(before.postgres, now.postgres),
    redis: spent(before.redis, now.redis),
    self: now.self - before.self,
    machineBusy: (now.machine.busy - before.machine.busy) / Math.max(1, now.machine.total - before.machine.total),
  };
}

/** Stops instances: SIGTERM when profiling (so that the profile is written), SIGKILL otherwise; SIGKILL after 10 s. */
export async function stopChats(children: ChildProcess[]): Promise<void> {
  await Promise.all(
    children.map(
      (child) =>
        new Promise<void>((resolve) => {
          if (child.exitCode !== null || child.signalCode !== null) return resolve();
          const kill = setTimeout(() => child.kill("SIGKILL"), 10_000);
          child.once("exit", () => {
            clearTimeout(kill);
            resolve();
          });
          child.kill(cpuProfileDir ? "SIGTERM" : "SIGKILL");
        }),
    ),
  );
}
