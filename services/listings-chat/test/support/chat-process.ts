/**
 * A real chat process, as `npm run start:chat` runs it (`node services/listings-chat/src/main.ts`, configured by
 * its environment), for tests that kill it, restart it or look at its file descriptors and memory.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { freePort } from "./harness.ts";

const repoRoot = fileURLToPath(new URL("../../../../", import.meta.url));
const main = join(repoRoot, "services/listings-chat/src/main.ts");

export interface ApiAnswer {
  status: number;
  body: any;
}

export interface ChatProcess {
  child: ChildProcess;
  pid: number;
  port: number;
  baseUrl: string;
  /** What it printed so far (stdout and stderr). */
  output(): string;
  /** A REST call as `userId`, with the headers the gateway sets. */
  api(userId: number, method: string, path: string, body?: unknown): Promise<ApiAnswer>;
  /** An /internal or ops call with `Authorization: Bearer <INTERNAL_TOKEN>`. */
  internal(method: string, path: string, body?: unknown): Promise<ApiAnswer>;
  /** Open file descriptors of the process (/proc/<pid>/fd). */
  fds(): number;
  /** Resident memory of the process, bytes (/proc/<pid>/status VmRSS). */
  rssBytes(): number;
  /** SIGTERM, and the exit. */
  stop(): Promise<void>;
  /** SIGKILL, and the exit. */
  kill(): Promise<void>;
}

export interface ChatProcessOptions {
  databaseUrl: string;
  token: string;
  /** Variables on top of the defaults below (the write limits raised, logs at warn). */
  env?: Record<string, string>;
  /** A port of its own (a restart on the same port); a free one when not given. */
  port?: number;
  instanceId?: string;
}

/** Polls `check` every `everyMs` until it holds; throws after `timeoutMs`, naming `what`. */
export async function until(
  check: () => Promise<boolean> | boolean,
  timeoutMs: number,
  what: string | (() => string),
  everyMs = 20,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline)
      throw new Error(`${typeof what === "string" ? what : what()}: not within ${timeoutMs} ms`);
    await new Promise((resolve) => setTimeout(resolve, everyMs));
  }
}

async function call(url: string, method: string, headers: Record<string, string>, body?: unknown): Promise<ApiAnswer> {
  const res = await fetch(url, {
    method,
    headers: { ...headers, ...(body === undefined ? {} : { "content-type": "application/json" }) },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await res.text();
  let parsed: unknown = text;
  try {
    parsed = text ? JSON.parse(text) : undefined;
  } catch {}
  return { status: res.status, body: parsed };
}

/** Starts the process and waits until `/ready` answers 200 (60 s at most). */
export async function spawnChat(options: ChatProcessOptions): Promise<ChatProcess> {
  const port = options.port ?? (await freePort());
  const child = spawn(process.execPath, [main], {
    cwd: repoRoot,
    env: {
      PATH: process.env.PATH ?? "",
      HOME: process.env.HOME ?? "",
      NODE_ENV: "test",
      CHAT_PORT: String(port),
      CHAT_HOST: "127.0.0.1",
      DATABASE_URL: options.databaseUrl,
      INTERNAL_TOKEN: options.token,
      LOG_LEVEL: "warn",
      INSTANCE_ID: options.instanceId ?? `webhooks-${port}`,
      SEND_LIMIT_PER_MINUTE: "1000000",
      EDIT_LIMIT_PER_MINUTE: "1000000",
      CHAT_OPEN_LIMIT_PER_HOUR: "1000000",
      REPORT_LIMIT_PER_HOUR: "1000000",
      ...options.env,
    },
    stdio: ["ignore", "pipe", "pipe"],
  });
  let output = "";
  const keep = (d: Buffer) => {
    output += d;
    // The last 200 KB are enough to say what went wrong.
    if (output.length > 400_000) output = output.slice(-200_000);
  };
  child.stdout?.on("data", keep);
  child.stderr?.on("data", keep);
  const exited = new Promise<void>((resolve) => child.on("exit", () => resolve()));
  const baseUrl = `http://127.0.0.1:${port}`;
  const gone = () => child.exitCode !== null || child.signalCode !== null;
  await until(
    async () => {
      if (gone()) throw new Error(`the chat process exited before it was ready:\n${output}`);
      return fetch(`${baseUrl}/ready`).then(
        (r) => r.ok,
        () => false,
      );
    },
    60_000,
    () => `the chat process ready:\n${output}`,
    100,
  );
  const end = async (signal: NodeJS.Signals) => {
    if (!gone()) child.kill(signal);
    await exited;
  };
  return {
    child,
    pid: child.pid!,
    port,
    baseUrl,
    output: () => output,
    api: (userId, method, path, body) =>
      call(`${baseUrl}${path}`, method, { "x-internal-token": options.token, "x-user-id": String(userId) }, body),
    internal: (method, path, body) =>
      call(`${baseUrl}${path}`, method, { authorization: `Bearer ${options.token}` }, body),
    fds: () => readdirSync(`/proc/${child.pid}/fd`).length,
    rssBytes: () => {
      const line = readFileSync(`/proc/${child.pid}/status`, "utf8")
        .split("\n")
        .find((l) => l.startsWith("VmRSS:"));
      return Number(line?.match(/(\d+)/)?.[1] ?? Number.NaN) * 1024;
    },
    stop: () => end("SIGTERM"),
    kill: () => end("SIGKILL"),
  };
}

/** A sample's value in Prometheus' text format (`name{labels} value`), 0 when absent. */
export function metricValue(text: string, name: string, labels: Record<string, string> = {}): number {
  const wanted = Object.entries(labels).map(([k, v]) => `${k}="${v}"`);
  for (const line of text.split("\n")) {
    if (line.startsWith("#")) continue;
    const match = line.match(/^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{([^}]*)\})?\s+(\S+)/);
    if (!match || match[1] !== name) continue;
    const present = (match[3] ?? "").split(",").filter(Boolean);
    if (wanted.every((w) => present.includes(w))) return Number(match[4]);
  }
  return 0;
}
