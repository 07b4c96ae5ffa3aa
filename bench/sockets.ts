/**
 * Upgrades and sockets (issue 12, part 2).
 * - `upgradeCost`: BENCH_UPGRADES sockets (1,000) opened at BENCH_UPGRADE_RATE (200 a second, a rate every
 *   path keeps up with) by each path, in interleaved rounds, each socket a user of its own: the CPU each
 *   process spends per accepted upgrade, and connect p50/p99. Through the gateway the ws-tokens are part of
 *   the connect (as a browser does it), and their CPU is measured apart, before the upgrades, too.
 * - `heldSockets`: sockets held open through one gateway, 5,000 then 9,500 (the open-files limit is 20,000
 *   per process and a pipe holds two), opened at BENCH_OPEN_RATE_SOCKETS (500 a second): resident memory per
 *   idle socket of each service; and between the two, a reconnect storm: all 5,000 dropped at once, all
 *   back at STORM_RATE (1,000 a second, as browsers spread their reconnects): how long until all are in.
 */
import type { Socket } from "node:net";
import { type ConnectResult, connectAll } from "./connect-all.ts";
import { PATHS, type PathName, type Stack } from "./stack.ts";
import { cpuSince, cpuSnapshot, percentile, token } from "./support.ts";

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Waits until the instance holds `count` sockets (closes are seen by it a moment after the client's), at most 20 s. */
export async function waitForConnections(stack: Stack, count: number): Promise<number> {
  let connections = -1;
  for (let i = 0; i < 200; i++) {
    const res = await fetch(`http://127.0.0.1:${stack.chat.port}/internal/chat/ws/stats`, {
      headers: { "x-internal-token": token },
    });
    connections = ((await res.json()) as { connections: number }).connections;
    if (connections === count) return connections;
    await sleep(100);
  }
  return connections;
}

export interface UpgradeSettings {
  sockets: number;
  perSecond: number;
  rounds: number;
}

export interface UpgradeRound {
  path: PathName;
  accepted: number;
  refused: Record<string, number>;
  connectP50Ms: number;
  connectP99Ms: number;
  /** Through the gateway: the ws-token's part of the connects. */
  wsTokenP50Ms?: number;
  wsTokenP99Ms?: number;
  /** CPU per accepted upgrade, in ms: the proxying process (none for direct) and the chat instance. */
  cpuMsPerUpgrade: { proxy?: number; chat: number };
}

export async function upgradeCost(stack: Stack, settings: UpgradeSettings, firstUser: number) {
  const rounds: UpgradeRound[] = [];
  let nextUser = firstUser;
  // Warm-up: 500 upgrades by each path, unmeasured, so that every process has compiled its connect path
  // (with 100, the gateway's first measured round still cost half as much again as the next ones).
  for (const path of PATHS) {
    const users = nextUser;
    nextUser += 500;
    const { open } = await connectAll(500, settings.perSecond, (i) => stack.attempt(path, users + i));
    for (const socket of open) socket.destroy();
    await waitForConnections(stack, 0);
  }
  for (let round = 0; round < settings.rounds; round++) {
    const order = PATHS.map((_, i) => PATHS[(i + round) % PATHS.length]!);
    for (const path of order) {
      const users = nextUser;
      nextUser += settings.sockets;
      const before = { proxy: stack.proxyCpuSeconds(path), chat: stack.chat.cpuSeconds() };
      const { open, result } = await connectAll(settings.sockets, settings.perSecond, (i) =>
        stack.attempt(path, users + i),
      );
      const proxy = stack.proxyCpuSeconds(path);
      const perUpgrade = (seconds: number) => Number(((seconds * 1_000) / Math.max(1, open.length)).toFixed(3));
      rounds.push({
        path,
        accepted: open.length,
        refused: result.refusedByStatus,
        connectP50Ms: result.connectP50Ms,
        connectP99Ms: result.connectP99Ms,
        wsTokenP50Ms: result.wsTokenP50Ms,
        wsTokenP99Ms: result.wsTokenP99Ms,
        cpuMsPerUpgrade: {
          ...(proxy !== undefined && before.proxy !== undefined ? { proxy: perUpgrade(proxy - before.proxy) } : {}),
          chat: perUpgrade(stack.chat.cpuSeconds() - before.chat),
        },
      });
      console.error(
        `upgrades ${path}: ${open.length} at ${settings.perSecond}/s, connect p99 ${result.connectP99Ms} ms (ws-token p99 ${result.wsTokenP99Ms ?? "–"} ms), CPU ms per upgrade ${JSON.stringify(rounds.at(-1)!.cpuMsPerUpgrade)}`,
      );
      for (const socket of open) socket.destroy();
      await waitForConnections(stack, 0);
    }
  }
  // The ws-token alone: the gateway's CPU per token, fetched one after another on one connection.
  const tokens = Math.min(settings.sockets, 1_000);
  const gatewayBefore = stack.gateway.cpuSeconds();
  const tokenMs: number[] = [];
  for (let i = 0; i < tokens; i++) {
    const t0 = performance.now();
    const status = await stack.wsToken(nextUser + i);
    if (status !== 200) throw new Error(`the gateway answered a ws-token request with ${status}`);
    tokenMs.push(performance.now() - t0);
  }
  tokenMs.sort((a, b) => a - b);
  const wsToken = {
    requests: tokens,
    gatewayCpuMsPerToken: Number((((stack.gateway.cpuSeconds() - gatewayBefore) * 1_000) / tokens).toFixed(3)),
    p50Ms: Number(percentile(tokenMs, 0.5).toFixed(2)),
  };
  const median: Record<string, UpgradeRound> = {};
  for (const path of PATHS) {
    const of = rounds.filter((r) => r.path === path);
    const cost = (r: UpgradeRound) => (r.cpuMsPerUpgrade.proxy ?? 0) + r.cpuMsPerUpgrade.chat;
    const sorted = [...of].sort((a, b) => cost(a) - cost(b));
    median[path] = sorted[Math.floor((sorted.length - 1) / 2)]!;
  }
  return { settings, rounds, median, wsToken };
}

export interface HeldSocketsSettings {
  /** Ascending: 5,000 then 9,500. */
  counts: number[];
  openPerSecond: number;
  /** How many sockets the storm drops and brings back (5,000). */
  stormSockets: number;
  /** Over how long the storm's clients come back (3 s: the browser client's jitter after a 1001). */
  stormSpreadMs: number;
}

/**
 * Sockets held through the gateway at each of `counts`, with the resident memory each service holds per
 * socket, against the warmed-up processes before the first; then the storm: every
 * socket dropped at once, and `stormSockets` clients back, spread over `stormSpreadMs`.
 */
export async function heldSockets(stack: Stack, settings: HeldSocketsSettings, firstUser: number) {
  /**
   * Each service's least resident memory over 5 s of idling, sampled every 250 ms: garbage the connects
   * left is collected at some point in between, and the least is what the sockets and the process hold.
   */
  const idleRss = async () => {
    const least = { chat: Number.POSITIVE_INFINITY, gateway: Number.POSITIVE_INFINITY };
    for (let i = 0; i < 20; i++) {
      await sleep(250);
      least.chat = Math.min(least.chat, stack.chat.rssKiB());
      least.gateway = Math.min(least.gateway, stack.gateway.rssKiB());
    }
    return least;
  };
  // A warm-up first (200 sockets opened and closed), so that what any process takes once (compiled code,
  // the database pool's connections) is in the baseline, not counted against the sockets.
  const warm = await connectAll(200, settings.openPerSecond, (j) => stack.attempt("gateway", firstUser - 1_000 + j));
  for (const socket of warm.open) socket.destroy();
  await waitForConnections(stack, 0);
  const rssBefore = await idleRss();
  const held: Socket[] = [];
  const levels: Array<{ sockets: number; rssKiBPerSocket: { chat: number; gateway: number }; open: ConnectResult }> =
    [];
  for (const count of settings.counts) {
    const users = firstUser + held.length;
    const { open, result } = await connectAll(count - held.length, settings.openPerSecond, (j) =>
      stack.attempt("gateway", users + j),
    );
    held.push(...open);
    const rss = await idleRss();
    const perSocket = (now: number, was: number) => Number(((now - was) / Math.max(1, held.length)).toFixed(1));
    levels.push({
      sockets: held.length,
      rssKiBPerSocket: {
        chat: perSocket(rss.chat, rssBefore.chat),
        gateway: perSocket(rss.gateway, rssBefore.gateway),
      },
      open: result,
    });
    console.error(`held ${held.length} sockets: RSS KiB per socket ${JSON.stringify(levels.at(-1)!.rssKiBPerSocket)}`);
  }
  // The storm: every socket dropped at once, and the clients back.
  for (const socket of held.splice(0)) socket.destroy();
  await waitForConnections(stack, 0);
  const cpu = { chat: stack.chat.cpuSeconds(), gateway: stack.gateway.cpuSeconds() };
  const machineBefore = cpuSnapshot([stack.chat.pid, stack.gateway.pid]);
  const perSecond = Math.round((settings.stormSockets * 1_000) / settings.stormSpreadMs);
  const back = await connectAll(settings.stormSockets, perSecond, (j) => stack.attempt("gateway", firstUser + j));
  const machine = cpuSince(machineBefore);
  const perAccepted = (seconds: number) => Number(((seconds * 1_000) / Math.max(1, back.open.length)).toFixed(2));
  const storm = {
    ...back.result,
    spreadMs: settings.stormSpreadMs,
    cpuMsPerAcceptedSocket: {
      chat: perAccepted(stack.chat.cpuSeconds() - cpu.chat),
      gateway: perAccepted(stack.gateway.cpuSeconds() - cpu.gateway),
      // The rest of the machine, which shares the cores: the load generator, PostgreSQL and Redis.
      loadGenerator: perAccepted(machine.self),
      postgres: perAccepted(machine.postgres),
      redis: perAccepted(machine.redis),
    },
    machineBusyShare: Number(machine.machineBusy.toFixed(2)),
  };
  console.error(`storm: ${back.open.length} back after ${back.result.allConnectedAfterMs} ms`);
  for (const socket of back.open) socket.destroy();
  await waitForConnections(stack, 0);
  return { settings, rssKiBBefore: rssBefore, levels, storm };
}
