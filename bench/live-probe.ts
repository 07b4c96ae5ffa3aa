/**
 * Is a socket live while the instance is busy? One user's WebSocket on a chat instance, in a process of its own
 * (so that the load generator's own work does not delay it), sending `{"type":"ping"}` every
 * BENCH_PROBE_INTERVAL_MS (50) on a fixed schedule between a `start` and a `stop` line on stdin; each `pong` is timed
 * from when its ping was due, so that a stall counts for every ping it held back (the instance answers pings in
 * order, on its event loop).
 *
 * Environment: BENCH_PROBE_PORT (the instance), BENCH_PROBE_USER_ID, BENCH_PROBE_TOKEN (the internal token: the
 * internal hop's headers, as the gateway sends them). Stdout, one JSON line each: `{"ready":true}` once connected; after each `stop`, the
 * window's round trips `{count, lost, p50Ms, p90Ms, p99Ms, maxMs, probeLoopDelayMaxMs}` (the last: this
 * process's own event-loop delay, to tell a late probe from a late instance). `exit` (or the end of stdin) ends it.
 */
import { monitorEventLoopDelay } from "node:perf_hooks";
import { createInterface } from "node:readline";
import WebSocket from "ws";

const port = Number(process.env.BENCH_PROBE_PORT);
const userId = process.env.BENCH_PROBE_USER_ID ?? "1";
const intervalMs = Number(process.env.BENCH_PROBE_INTERVAL_MS ?? 50);
const ping = JSON.stringify({ type: "ping" });

const ws = new WebSocket(`ws://127.0.0.1:${port}/ws/chat`, {
  headers: { "x-internal-token": process.env.BENCH_PROBE_TOKEN ?? "", "x-user-id": userId },
  perMessageDeflate: false,
});
await new Promise<void>((resolve, reject) => {
  ws.once("message", () => resolve());
  ws.once("error", reject);
});

/** Due times of the pings in flight, oldest first; the round trips of the window. */
let inFlight: number[] = [];
let roundTrips: number[] = [];
let timer: NodeJS.Timeout | undefined;
const ownDelay = monitorEventLoopDelay({ resolution: 1 });

ws.on("message", (data) => {
  if ((JSON.parse(String(data)) as { type: string }).type !== "pong") return;
  const due = inFlight.shift();
  if (due !== undefined) roundTrips.push(performance.now() - due);
});
ws.on("close", () => {
  console.error("live-probe: the socket closed");
  process.exit(1);
});

function start() {
  inFlight = [];
  roundTrips = [];
  ownDelay.reset();
  ownDelay.enable();
  const first = performance.now();
  let sent = 0;
  const tick = () => {
    // Every ping due by now goes (a late timer sends the ones it held back, each timed from its due time).
    const now = performance.now();
    while (first + sent * intervalMs <= now) {
      inFlight.push(first + sent * intervalMs);
      ws.send(ping);
      sent += 1;
    }
    timer = setTimeout(tick, Math.max(0, first + sent * intervalMs - performance.now()));
  };
  tick();
}

async function stop() {
  clearTimeout(timer);
  // The last pings' pongs, for up to 2 s.
  const until = performance.now() + 2_000;
  while (inFlight.length > 0 && performance.now() < until) await new Promise((r) => setTimeout(r, 10));
  ownDelay.disable();
  const sorted = Float64Array.from(roundTrips).sort();
  const at = (p: number) => Number((sorted[Math.max(0, Math.ceil(sorted.length * p) - 1)] ?? 0).toFixed(2));
  return {
    count: sorted.length,
    lost: inFlight.length,
    p50Ms: at(0.5),
    p90Ms: at(0.9),
    p99Ms: at(0.99),
    maxMs: Number((sorted[sorted.length - 1] ?? 0).toFixed(2)),
    probeLoopDelayMaxMs: Number((ownDelay.max / 1e6).toFixed(2)),
  };
}

console.log(JSON.stringify({ ready: true }));
for await (const line of createInterface({ input: process.stdin })) {
  if (line === "start") start();
  else if (line === "stop") console.log(JSON.stringify(await stop()));
  else if (line === "exit") break;
}
ws.terminate();
process.exit(0);
