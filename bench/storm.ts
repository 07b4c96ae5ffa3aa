/**
 * `npm run bench:storm`: a reconnect storm, as issue 14 describes it. One gateway in front of one
 * listings-chat (production mode, PostgreSQL of DATABASE_URL in a fresh database, Redis of REDIS_URL);
 * STORM_SOCKETS sockets (5,000) opened at STORM_RATE per second (1,000), each as a browser would: its own
 * user, an access token, a ws-token from `POST /api/v2/ws-token` (on keep-alive connections), then the
 * upgrade, on raw sockets (raw-client.ts: with fetch and the ws client the generator was the bottleneck). A
 * refused attempt (503) is tried again after its `Retry-After` (1 s when absent) with a new ws-token; an attempt that has no
 * `connected` frame within 10 s counts as a time-out and is tried again too.
 *
 * Prints and writes bench/results/storm.json: accepted at once, refused (by status), time-outs, connect
 * p50/p99 (attempt to `connected`, the successful attempt), time until all are connected (from the first
 * attempt, retries included), the deepest accept queue of each service, the generator's own event loop
 * delay, where the machine's CPU went, CPU per accepted socket and RSS per idle socket of both services; and, next
 * to them, nginx's CPU per proxied WebSocket (Debian's nginx, one worker, in front of a bare ws server)
 * measured in the same run with the same number of sockets. Not a test: a measurement to read.
 * STORM_GATEWAY_ENV (a JSON object of variables) starts the gateway with other settings, to compare them.
 */
import { execFile, execFileSync, spawn } from "node:child_process";
import { createSecretKey } from "node:crypto";
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import type { Socket } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { monitorEventLoopDelay } from "node:perf_hooks";
import jwt from "jsonwebtoken";
import { WebSocketServer } from "ws";
import { type RawAnswer, RawHttpPool, rawUpgrade } from "./raw-client.ts";
import {
  cpuSeconds,
  cpuSince,
  cpuSnapshot,
  freePort,
  percentile,
  root,
  rssKiB,
  startChat,
  startGateway,
  stopChats,
  withDatabase,
} from "./support.ts";

const sockets = Number(process.env.STORM_SOCKETS ?? 5_000);
const rate = Number(process.env.STORM_RATE ?? 1_000);
const attemptTimeoutMs = 10_000;
const jwtSecret = "bench-storm-access-token-secret-0123456789abcdef";
const wsSecret = "bench-storm-ws-token-secret-fedcba9876543210";
const firstUser = 80_000_000;

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

type Outcome =
  | { kind: "connected"; socket: Socket; tokenMs: number }
  | { kind: "refused"; status: number; code?: string; retryAfterMs: number };

/** The `error.code` of a JSON error body, or "". */
function errorCode(body: string): string {
  try {
    return (JSON.parse(body) as { error?: { code?: string } }).error?.code ?? "";
  } catch {
    return "";
  }
}

/** One attempt as a browser makes it: a ws-token, then the upgrade, until `connected`. */
async function attempt(port: number, pool: RawHttpPool, access: string): Promise<Outcome> {
  const t0 = performance.now();
  let answer: RawAnswer;
  try {
    answer = await pool.request("POST", "/api/v2/ws-token", { Authorization: `Bearer ${access}` });
  } catch {
    return { kind: "refused", status: -1, code: "ws-token", retryAfterMs: 1_000 };
  }
  if (answer.status !== 200) {
    return {
      kind: "refused",
      status: answer.status,
      code: `ws-token ${errorCode(answer.body)}`.trim(),
      retryAfterMs: retryAfter(answer.headers.get("retry-after")),
    };
  }
  const { token } = JSON.parse(answer.body) as { token: string };
  const tokenMs = performance.now() - t0;
  const upgrade = await rawUpgrade(port, `/ws/chat?token=${token}`, attemptTimeoutMs);
  if (upgrade.kind === "open") return { kind: "connected", socket: upgrade.socket, tokenMs };
  if (upgrade.kind === "timeout") return { kind: "refused", status: 0, retryAfterMs: 0 };
  if (upgrade.kind === "error") return { kind: "refused", status: -1, retryAfterMs: 1_000 };
  return {
    kind: "refused",
    status: upgrade.answer.status,
    code: errorCode(upgrade.answer.body),
    retryAfterMs: retryAfter(upgrade.answer.headers.get("retry-after")),
  };
}

function retryAfter(header: string | undefined): number {
  const seconds = Number(header);
  return Number.isFinite(seconds) && seconds > 0 ? seconds * 1_000 : 1_000;
}

/**
 * The deepest accept queue seen on each listening port while `work` runs, sampled with `ss` every 250 ms:
 * connections the kernel has completed that the process has not taken yet. A CPU-bound server's queue
 * grows here, where neither its admission nor its event loop delay can see it.
 */
async function deepestAcceptQueues<T>(ports: Record<string, number>, work: () => Promise<T>) {
  const deepest: Record<string, number> = Object.fromEntries(Object.keys(ports).map((name) => [name, 0]));
  const sample = () =>
    new Promise<void>((resolve) => {
      execFile("ss", ["-ltnH"], (error, stdout) => {
        if (!error) {
          for (const line of stdout.split("\n")) {
            const [, queued, , local] = line.trim().split(/\s+/);
            for (const [name, port] of Object.entries(ports)) {
              if (local?.endsWith(`:${port}`)) deepest[name] = Math.max(deepest[name]!, Number(queued));
            }
          }
        }
        resolve();
      });
    });
  let sampling = true;
  const sampler = (async () => {
    while (sampling) await Promise.all([sample(), sleep(250)]);
  })();
  try {
    return { result: await work(), deepest };
  } finally {
    sampling = false;
    await sampler;
  }
}

/** `count` clients at `perSecond`, each retrying until connected; what happened, and the open sockets. */
async function storm(port: number, count: number, perSecond: number) {
  const refusals = new Map<string, number>();
  const connectMs: number[] = [];
  const tokenMs: number[] = [];
  const open: Socket[] = [];
  let acceptedAtOnce = 0;
  // Keep-alive connections for the ws-token requests, as browsers keep theirs.
  const pool = new RawHttpPool(port);
  // The generator's own lag: when it falls behind, what it measures is late too.
  const lag = monitorEventLoopDelay({ resolution: 10 });
  lag.enable();
  // A browser holds its access token before the storm: signed here beforehand, with the key made once (a
  // string secret makes jsonwebtoken try it as a private key first, which cost this process ~2 ms a token).
  const key = createSecretKey(Buffer.from(jwtSecret));
  const accessTokens = Array.from({ length: count }, (_, i) =>
    jwt.sign({ sub: String(firstUser + i) }, key, { algorithm: "HS256", expiresIn: 600 }),
  );
  const started = performance.now();
  let lastConnectedAt = started;
  const clients = Array.from({ length: count }, async (_, i) => {
    await sleep((i * 1_000) / perSecond);
    for (let tries = 0; tries < 20; tries++) {
      const t0 = performance.now();
      const outcome = await attempt(port, pool, accessTokens[i]!);
      if (outcome.kind === "connected") {
        connectMs.push(performance.now() - t0);
        tokenMs.push(outcome.tokenMs);
        if (tries === 0) acceptedAtOnce += 1;
        lastConnectedAt = Math.max(lastConnectedAt, performance.now());
        open.push(outcome.socket);
        return;
      }
      const why = outcome.status === 0 ? "timeout" : `${outcome.status}${outcome.code ? ` ${outcome.code}` : ""}`;
      refusals.set(why, (refusals.get(why) ?? 0) + 1);
      await sleep(outcome.retryAfterMs);
    }
  });
  await Promise.all(clients);
  lag.disable();
  pool.close();
  const sorted = [...connectMs].sort((a, b) => a - b);
  const sortedTokenMs = [...tokenMs].sort((a, b) => a - b);
  return {
    open,
    result: {
      sockets: count,
      connected: open.length,
      acceptedAtFirstAttempt: acceptedAtOnce,
      refusedByStatus: Object.fromEntries(refusals),
      connectP50Ms: Number(percentile(sorted, 0.5).toFixed(1)),
      connectP99Ms: Number(percentile(sorted, 0.99).toFixed(1)),
      // The ws-token's share of the connect time: a gateway behind on its event loop shows here first.
      wsTokenP50Ms: Number(percentile(sortedTokenMs, 0.5).toFixed(1)),
      wsTokenP99Ms: Number(percentile(sortedTokenMs, 0.99).toFixed(1)),
      allConnectedAfterMs: Math.round(lastConnectedAt - started),
      loadGeneratorLoopDelayMaxMs: Math.round(lag.max / 1e6),
    },
  };
}

/** nginx (one worker) in front of a bare ws server: its CPU per proxied WebSocket for `count` sockets at `perSecond`. */
async function nginxBaseline(count: number, perSecond: number) {
  const nginx = "/usr/sbin/nginx";
  try {
    execFileSync(nginx, ["-v"], { stdio: "ignore" });
  } catch {
    return { skipped: "Debian's nginx is not installed (apt-get install nginx)" };
  }
  const echo = new WebSocketServer({ host: "127.0.0.1", port: 0, perMessageDeflate: false });
  echo.on("connection", (ws) => ws.send('{"type":"connected"}'));
  await new Promise((r) => echo.once("listening", r));
  const echoPort = (echo.address() as { port: number }).port;
  const port = await freePort();
  const dir = mkdtempSync(join(tmpdir(), "lc-storm-nginx-"));
  writeFileSync(
    join(dir, "nginx.conf"),
    `worker_processes 1;
worker_rlimit_nofile 20000;
pid ${dir}/nginx.pid;
error_log ${dir}/error.log warn;
events { worker_connections 19000; }
http {
  access_log off;
  client_body_temp_path ${dir}; proxy_temp_path ${dir}; fastcgi_temp_path ${dir}; uwsgi_temp_path ${dir}; scgi_temp_path ${dir};
  server {
    listen 127.0.0.1:${port};
    location / {
      proxy_pass http://127.0.0.1:${echoPort};
      proxy_http_version 1.1;
      proxy_set_header Upgrade $http_upgrade;
      proxy_set_header Connection "upgrade";
      proxy_read_timeout 1h;
    }
  }
}
`,
  );
  const master = spawn(nginx, ["-p", dir, "-c", join(dir, "nginx.conf"), "-g", "daemon off;"], { stdio: "inherit" });
  try {
    await sleep(500);
    const workers = execFileSync("pgrep", ["-P", String(master.pid)])
      .toString()
      .trim()
      .split("\n")
      .map(Number);
    const cpu = () => workers.reduce((sum, pid) => sum + cpuSeconds(pid), 0);
    const before = cpu();
    const open: Socket[] = [];
    await Promise.all(
      Array.from({ length: count }, async (_, i) => {
        await sleep((i * 1_000) / perSecond);
        const upgrade = await rawUpgrade(port, "/ws/chat", attemptTimeoutMs);
        if (upgrade.kind === "open") open.push(upgrade.socket);
      }),
    );
    const cpuMs = (cpu() - before) * 1_000;
    for (const socket of open) socket.destroy();
    return { sockets: open.length, cpuMsPerSocket: Number((cpuMs / open.length).toFixed(3)) };
  } finally {
    master.kill("SIGQUIT");
    echo.close();
    await sleep(300);
    rmSync(dir, { recursive: true, force: true });
  }
}

const result = await withDatabase(async (url) => {
  const chat = await startChat(url, `lc-bench-storm:${process.pid}:`, "bench-storm", { LOG_LEVEL: "warn" });
  const gateway = await startGateway(chat.port, {
    JWT_SECRET: jwtSecret,
    WS_TOKEN_SECRET: wsSecret,
    REDIS_KEY_PREFIX: `lc-bench-storm:${process.pid}:`,
    // Settings to try, e.g. STORM_GATEWAY_ENV='{"UPSTREAM_UPGRADES_IN_FLIGHT":"64"}'.
    ...(process.env.STORM_GATEWAY_ENV ? JSON.parse(process.env.STORM_GATEWAY_ENV) : {}),
  });
  try {
    const pids = { chat: chat.child.pid ?? 0, gateway: gateway.child.pid ?? 0 };
    await sleep(1_000);
    const rssBefore = { chat: rssKiB(pids.chat), gateway: rssKiB(pids.gateway) };
    const cpuBefore = { chat: cpuSeconds(pids.chat), gateway: cpuSeconds(pids.gateway) };
    const machineBefore = cpuSnapshot([pids.chat, pids.gateway]);
    const {
      result: { open, result: stormResult },
      deepest: acceptQueueMax,
    } = await deepestAcceptQueues({ gateway: gateway.port, chat: chat.port }, () => storm(gateway.port, sockets, rate));
    const machine = cpuSince(machineBefore);
    const cpuMs = {
      chat: (cpuSeconds(pids.chat) - cpuBefore.chat) * 1_000,
      gateway: (cpuSeconds(pids.gateway) - cpuBefore.gateway) * 1_000,
    };
    // Idle a moment, so that what the connects left behind is collected before memory is read.
    await sleep(3_000);
    const rss = { chat: rssKiB(pids.chat), gateway: rssKiB(pids.gateway) };
    for (const socket of open) socket.destroy();
    await sleep(1_000);
    const nginx = await nginxBaseline(sockets, rate);
    return {
      at: new Date().toISOString(),
      ...stormResult,
      acceptQueueMax,
      cpuMsPerAcceptedSocket: {
        chat: Number((cpuMs.chat / Math.max(1, open.length)).toFixed(2)),
        gateway: Number((cpuMs.gateway / Math.max(1, open.length)).toFixed(2)),
      },
      // Where the machine's cores went during the storm (the load generator shares them), per connected socket.
      machineCpuMsPerSocket: {
        busyShare: Number(machine.machineBusy.toFixed(2)),
        loadGenerator: Number(((machine.self * 1_000) / Math.max(1, open.length)).toFixed(2)),
        postgres: Number(((machine.postgres * 1_000) / Math.max(1, open.length)).toFixed(2)),
        redis: Number(((machine.redis * 1_000) / Math.max(1, open.length)).toFixed(2)),
      },
      rssKiBPerSocket: {
        chat: Number(((rss.chat - rssBefore.chat) / Math.max(1, open.length)).toFixed(1)),
        gateway: Number(((rss.gateway - rssBefore.gateway) / Math.max(1, open.length)).toFixed(1)),
      },
      nginx,
    };
  } finally {
    gateway.child.kill("SIGTERM");
    await stopChats([chat.child]);
  }
});

mkdirSync(join(root, "bench/results"), { recursive: true });
writeFileSync(join(root, "bench/results/storm.json"), `${JSON.stringify(result, null, 2)}\n`);
console.log(JSON.stringify(result, null, 2));
process.exit(0);
