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
import { execFile } from "node:child_process";
import { mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { WebSocketServer } from "ws";
import { connectAll } from "./connect-all.ts";
import { startNginx } from "./nginx.ts";
import { rawUpgrade } from "./raw-client.ts";
import { startStack } from "./stack.ts";
import { cpuSince, cpuSnapshot, root, serviceCpuSeconds, serviceRssKiB, withDatabase } from "./support.ts";

const sockets = Number(process.env.STORM_SOCKETS ?? 5_000);
const rate = Number(process.env.STORM_RATE ?? 1_000);
const firstUser = 80_000_000;

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

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

/** nginx (one worker) in front of a bare ws server: its CPU per proxied WebSocket for `count` sockets at `perSecond`. */
async function nginxBaseline(count: number, perSecond: number) {
  const echo = new WebSocketServer({ host: "127.0.0.1", port: 0, perMessageDeflate: false });
  echo.on("connection", (ws) => ws.send('{"type":"connected"}'));
  await new Promise((r) => echo.once("listening", r));
  const nginx = await startNginx((echo.address() as { port: number }).port);
  try {
    const before = nginx.cpuSeconds();
    const { open } = await connectAll(count, perSecond, async () => {
      const upgrade = await rawUpgrade(nginx.port, "/ws/chat", 10_000);
      return upgrade.kind === "open"
        ? { kind: "connected", socket: upgrade.socket }
        : { kind: "refused", why: upgrade.kind, retryAfterMs: 1_000 };
    });
    const cpuMs = (nginx.cpuSeconds() - before) * 1_000;
    for (const socket of open) socket.destroy();
    return { sockets: open.length, cpuMsPerSocket: Number((cpuMs / open.length).toFixed(3)) };
  } finally {
    await nginx.stop();
    echo.close();
  }
}

const result = await withDatabase(async (url) => {
  // Settings to try, e.g. STORM_GATEWAY_ENV='{"UPSTREAM_UPGRADES_IN_FLIGHT":"64"}'.
  const stack = await startStack(url, process.env.STORM_GATEWAY_ENV ? JSON.parse(process.env.STORM_GATEWAY_ENV) : {});
  try {
    const pids = { chat: stack.chat.pid, gateway: stack.gateway.pid };
    // Each client's access token is signed before the storm, as a browser holds its own.
    for (let i = 0; i < sockets; i++) stack.accessToken(firstUser + i);
    await sleep(1_000);
    // Each service with the processes it started: a gateway with GATEWAY_WORKERS is a supervisor and its workers.
    const rssBefore = { chat: serviceRssKiB(pids.chat), gateway: serviceRssKiB(pids.gateway) };
    const cpuBefore = { chat: serviceCpuSeconds(pids.chat), gateway: serviceCpuSeconds(pids.gateway) };
    const machineBefore = cpuSnapshot([pids.chat, pids.gateway]);
    const {
      result: { open, result: stormResult },
      deepest: acceptQueueMax,
    } = await deepestAcceptQueues({ gateway: stack.gateway.port, chat: stack.chat.port }, () =>
      connectAll(sockets, rate, (i) => stack.attempt("gateway", firstUser + i)),
    );
    const machine = cpuSince(machineBefore);
    const cpuMs = {
      chat: (serviceCpuSeconds(pids.chat) - cpuBefore.chat) * 1_000,
      gateway: (serviceCpuSeconds(pids.gateway) - cpuBefore.gateway) * 1_000,
    };
    // Idle a moment, so that what the connects left behind is collected before memory is read.
    await sleep(3_000);
    const rss = { chat: serviceRssKiB(pids.chat), gateway: serviceRssKiB(pids.gateway) };
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
    await stack.stop();
  }
});

// BENCH_RESULTS_DIR: elsewhere than bench/results (bench:runtimes keeps each runtime's apart).
const resultsDir = process.env.BENCH_RESULTS_DIR ?? join(root, "bench/results");
mkdirSync(resultsDir, { recursive: true });
writeFileSync(join(resultsDir, "storm.json"), `${JSON.stringify(result, null, 2)}\n`);
console.log(JSON.stringify(result, null, 2));
process.exit(0);
