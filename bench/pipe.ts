/**
 * The pipe (issue 12, part 1): ping → pong through the chat instance, by each path (direct, gateway, nginx),
 * over BENCH_PIPE_CLIENTS sockets (50) of users of their own.
 * - Closed loop: each socket sends its next ping when its pong arrives; throughput and latency.
 * - Open loop: BENCH_OPEN_RATE pings a second (5,000) in all, sent on schedule whatever comes back; the
 *   latency of each is counted from when it was due, not from when it went out, so that a stall counts for
 *   every ping it held back (no coordinated omission).
 * Rounds are interleaved (direct, gateway, nginx, then the next round in another order), so that a noisy
 * minute of the machine falls on every path alike; the report takes each path's median round.
 */
import type { Socket } from "node:net";
import { bareRelayBench } from "./bare-relay.ts";
import { type ProfileShares, withPerfProfile } from "./perf-profile.ts";
import { clientTextFrame } from "./raw-client.ts";
import { mustOpen, PATHS, type PathName, type Stack } from "./stack.ts";
import { cpuSeconds, medianBy } from "./support.ts";

const PING = clientTextFrame('{"type":"ping"}');
const PONG = Buffer.from('"pong"');

export interface PipeSettings {
  clients: number;
  seconds: number;
  openRate: number;
  rounds: number;
  /** BENCH_PERF=1: after the rounds, one more closed-loop run of each proxy under Linux perf. */
  perf: boolean;
}

export interface LatencySummary {
  count: number;
  p50Ms: number;
  p90Ms: number;
  p99Ms: number;
  p999Ms: number;
  maxMs: number;
}

export interface PipeRound {
  path: PathName;
  mode: "closed" | "open";
  messagesPerSecond: number;
  latency: LatencySummary;
  /** CPU per message, in µs: the proxying process (none for direct), the chat instance, the load generator. */
  cpuUsPerMessage: { proxy?: number; chat: number; loadGenerator: number };
  /** The latencies' percentile curve (for the chart): [percentile, ms] pairs. */
  curve: [number, number][];
}

export function summarize(latencies: number[]): { summary: LatencySummary; curve: [number, number][] } {
  const sorted = Float64Array.from(latencies).sort();
  // Nearest rank: the smallest latency that at least p of them do not exceed.
  const at = (p: number) => Number((sorted[Math.max(0, Math.ceil(sorted.length * p) - 1)] ?? 0).toFixed(3));
  // 0, 50, 75, 87.5 … percentiles, halving what is left each step, as latency distributions are drawn.
  const curve: [number, number][] = [];
  for (let left = 1; left >= 1 / sorted.length && left > 1e-5; left /= 2) curve.push([1 - left, at(1 - left)]);
  curve.push([1, Number((sorted[sorted.length - 1] ?? 0).toFixed(3))]);
  return {
    summary: {
      count: sorted.length,
      p50Ms: at(0.5),
      p90Ms: at(0.9),
      p99Ms: at(0.99),
      p999Ms: at(0.999),
      maxMs: Number((sorted[sorted.length - 1] ?? 0).toFixed(3)),
    },
    curve,
  };
}

/** A socket whose pongs are timed: `sentAt` holds the due times of the pings in flight, oldest first. */
interface Client {
  socket: Socket;
  sentAt: number[];
}

async function openClients(
  stack: Stack,
  path: PathName,
  count: number,
  firstUser: number,
  onPong: (c: Client) => void,
) {
  const clients: Client[] = [];
  for (let i = 0; i < count; i++) {
    const client: Client = { socket: undefined as unknown as Socket, sentAt: [] };
    client.socket = await mustOpen(stack, path, firstUser + i, (payload) => {
      if (payload.includes(PONG)) onPong(client);
    });
    clients.push(client);
  }
  return clients;
}

/** One measured run of one path and mode. */
async function run(
  stack: Stack,
  path: PathName,
  mode: "closed" | "open",
  settings: PipeSettings,
  clients: Client[],
  handlers: { onPong: (c: Client) => void },
): Promise<PipeRound> {
  const latencies: number[] = [];
  let running = true;
  handlers.onPong = (client) => {
    const due = client.sentAt.shift();
    if (due === undefined) return;
    const now = performance.now();
    latencies.push(now - due);
    if (mode === "closed" && running) {
      client.sentAt.push(now);
      client.socket.write(PING);
    }
  };
  const cpuBefore = {
    proxy: stack.proxyCpuSeconds(path),
    chat: stack.chat.cpuSeconds(),
    self: cpuSeconds(process.pid),
  };
  const started = performance.now();
  const ends = started + settings.seconds * 1_000;
  if (mode === "closed") {
    for (const client of clients) {
      client.sentAt.push(performance.now());
      client.socket.write(PING);
    }
    await new Promise((r) => setTimeout(r, settings.seconds * 1_000));
  } else {
    // Every ping has its due time on a fixed schedule; each tick sends all that are due, round robin.
    const interval = 1_000 / settings.openRate;
    let sent = 0;
    await new Promise<void>((resolve) => {
      const tick = () => {
        const now = performance.now();
        while (started + sent * interval <= Math.min(now, ends)) {
          const client = clients[sent % clients.length]!;
          client.sentAt.push(started + sent * interval);
          client.socket.write(PING);
          sent += 1;
        }
        if (now >= ends) resolve();
        else setTimeout(tick, 1);
      };
      tick();
    });
  }
  running = false;
  const elapsed = (performance.now() - started) / 1_000;
  const answered = latencies.length;
  // What is still in flight is waited for (at most 2 s), so that the slowest pongs count too.
  for (let i = 0; i < 200 && clients.some((c) => c.sentAt.length > 0); i++) await new Promise((r) => setTimeout(r, 10));
  const lost = clients.reduce((n, c) => n + c.sentAt.length, 0);
  if (lost > 0) throw new Error(`${lost} pings by ${path} had no pong within 2 s of the end of the run`);
  const proxyCpu = stack.proxyCpuSeconds(path);
  const perMessage = (seconds: number) => Number(((seconds * 1e6) / Math.max(1, answered)).toFixed(1));
  const { summary, curve } = summarize(latencies);
  return {
    path,
    mode,
    messagesPerSecond: Math.round(answered / elapsed),
    latency: summary,
    cpuUsPerMessage: {
      ...(proxyCpu !== undefined && cpuBefore.proxy !== undefined
        ? { proxy: perMessage(proxyCpu - cpuBefore.proxy) }
        : {}),
      chat: perMessage(stack.chat.cpuSeconds() - cpuBefore.chat),
      loadGenerator: perMessage(cpuSeconds(process.pid) - cpuBefore.self),
    },
    curve,
  };
}

/** The median round of each path and mode by the figure that matters for it (throughput closed, p99 open). */
export function medianRounds(rounds: PipeRound[]): Record<string, PipeRound> {
  const out: Record<string, PipeRound> = {};
  for (const mode of ["closed", "open"] as const) {
    for (const path of PATHS) {
      const of = rounds.filter((r) => r.path === path && r.mode === mode);
      const median = medianBy(of, (r) => (mode === "closed" ? r.messagesPerSecond : r.latency.p99Ms));
      if (median) out[`${mode}/${path}`] = median;
    }
  }
  return out;
}

export async function pipeBench(stack: Stack, settings: PipeSettings, firstUser: number) {
  const handlers = new Map<PathName, { onPong: (c: Client) => void }>();
  const clientsBy = new Map<PathName, Client[]>();
  for (const [i, path] of PATHS.entries()) {
    const handler = { onPong: (_: Client) => {} };
    handlers.set(path, handler);
    clientsBy.set(
      path,
      await openClients(stack, path, settings.clients, firstUser + i * settings.clients, (c) => handler.onPong(c)),
    );
  }
  // Warm-up: a second of each, unmeasured, so that every process has compiled its hot paths.
  for (const path of PATHS)
    await run(stack, path, "closed", { ...settings, seconds: 1 }, clientsBy.get(path)!, handlers.get(path)!);
  const rounds: PipeRound[] = [];
  const profiles: Partial<Record<PathName, ProfileShares & { cpuUsPerMessage?: number }>> = {};
  for (let round = 0; round < settings.rounds; round++) {
    // Rotated each round, so that no path always runs first or last.
    const order = PATHS.map((_, i) => PATHS[(i + round) % PATHS.length]!);
    for (const mode of ["closed", "open"] as const) {
      for (const path of order) {
        const result = await run(stack, path, mode, settings, clientsBy.get(path)!, handlers.get(path)!);
        console.error(
          `pipe ${mode} ${path}: ${result.messagesPerSecond} msg/s, p50 ${result.latency.p50Ms} ms, p99 ${result.latency.p99Ms} ms`,
        );
        rounds.push(result);
      }
    }
  }
  // Profiled apart, after the measured rounds: sampling costs the sampled process a little.
  for (const path of settings.perf ? PATHS : []) {
    const pid = stack.proxyPid(path);
    if (pid === undefined) continue;
    const profiled = await withPerfProfile(pid, () =>
      run(stack, path, "closed", settings, clientsBy.get(path)!, handlers.get(path)!),
    );
    if (profiled.shares)
      profiles[path] = { ...profiled.shares, cpuUsPerMessage: profiled.result.cpuUsPerMessage.proxy };
  }
  for (const clients of clientsBy.values()) for (const { socket } of clients) socket.destroy();
  // The floor under the gateway's figures: its relay alone against nginx alone, around a bare echo server.
  const bare = await bareRelayBench(Math.min(3, settings.rounds), settings.seconds);
  return { settings, rounds, median: medianRounds(rounds), profiles, bare };
}
