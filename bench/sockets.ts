/**
 * Upgrades and sockets (issue 12, part 2).
 * - `upgradeCost`: BENCH_UPGRADES sockets (1,000) opened at BENCH_UPGRADE_RATE (200 a second, a rate every
 *   path keeps up with) by each path, in interleaved rounds, each socket a user of its own: the CPU each
 *   process spends per accepted upgrade, and connect p50/p99. Through the gateway the ws-tokens are part of
 *   the connect (as a browser does it), and their CPU is measured apart, before the upgrades, too.
 * - `heldSockets`: on processes of their own, sockets held open through one gateway, 5,000 then 9,500 (the
 *   open-files limit is 20,000 per process and a pipe holds two), opened at BENCH_HELD_RATE (500 a second):
 *   memory per idle socket of each service after a full garbage collection; then a reconnect storm: every
 *   socket dropped at once, and BENCH_STORM_SOCKETS (5,000) back over BENCH_STORM_SPREAD_MS (3 s, the browser
 *   client's jitter after a 1001): how long until all are in.
 */
import type { Socket } from "node:net";
import { type ConnectResult, connectAll } from "./connect-all.ts";
import type { MemoryUsage } from "./inspector.ts";
import { PATHS, type PathName, type Stack } from "./stack.ts";
import { cpuSince, cpuSnapshot, medianBy, percentile, token } from "./support.ts";

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Waits until the instance holds `count` sockets (it sees closes a moment after the client); throws after 20 s. */
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
  throw new Error(`the instance still holds ${connections} sockets after 20 s, not ${count}`);
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
  // The ws-token alone: the gateway's CPU per token, fetched one after another on one connection. At least 200:
  // CPU time is read in 10 ms ticks, and a small run's 40 tokens (about 4 ms) could read as none.
  const tokens = Math.min(Math.max(settings.sockets, 200), 1_000);
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
  // Each figure's own median over the rounds (not one round's figures: a round slow in one is not in all).
  const median: Record<string, UpgradeRound> = {};
  const mid = (values: number[]) => medianBy(values, (value) => value) ?? 0;
  for (const path of PATHS) {
    const of = rounds.filter((r) => r.path === path);
    const tokens = of.flatMap((r) => (r.wsTokenP99Ms === undefined ? [] : [r]));
    median[path] = {
      path,
      accepted: mid(of.map((r) => r.accepted)),
      // Refusals are counts: summed over the rounds.
      refused: of.reduce<Record<string, number>>((sum, r) => {
        for (const [why, count] of Object.entries(r.refused)) sum[why] = (sum[why] ?? 0) + count;
        return sum;
      }, {}),
      connectP50Ms: mid(of.map((r) => r.connectP50Ms)),
      connectP99Ms: mid(of.map((r) => r.connectP99Ms)),
      ...(tokens.length > 0
        ? {
            wsTokenP50Ms: mid(tokens.map((r) => r.wsTokenP50Ms ?? 0)),
            wsTokenP99Ms: mid(tokens.map((r) => r.wsTokenP99Ms ?? 0)),
          }
        : {}),
      cpuMsPerUpgrade: {
        ...(path === "direct" ? {} : { proxy: mid(of.map((r) => r.cpuMsPerUpgrade.proxy ?? 0)) }),
        chat: mid(of.map((r) => r.cpuMsPerUpgrade.chat)),
      },
    };
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
   * Each service's memory once what the connects left is collected: a full garbage collection in both
   * (through their inspectors), then the least resident memory over the next 2 s, and the JS heap
   * (used and external) as V8 counts it, in KiB.
   */
  const settled = async () => {
    await sleep(1_000);
    const memory = await stack.collectGarbage();
    const rss = { chat: Number.POSITIVE_INFINITY, gateway: Number.POSITIVE_INFINITY };
    for (let i = 0; i < 8; i++) {
      await sleep(250);
      rss.chat = Math.min(rss.chat, stack.chat.rssKiB());
      rss.gateway = Math.min(rss.gateway, stack.gateway.rssKiB());
    }
    const heap = (m: MemoryUsage) => (m.heapUsed + m.external) / 1_024;
    return { rss, heap: { chat: heap(memory.chat), gateway: heap(memory.gateway) } };
  };
  // A warm-up first (200 sockets opened and closed), so that what any process takes once (compiled code,
  // the database pool's connections) is in the baseline, not counted against the sockets.
  const warm = await connectAll(200, settings.openPerSecond, (j) => stack.attempt("gateway", firstUser - 1_000 + j));
  for (const socket of warm.open) socket.destroy();
  await waitForConnections(stack, 0);
  const before = await settled();
  const held: Socket[] = [];
  const levels: Array<{
    sockets: number;
    /** Per socket held, against the processes before the first. */
    rssKiBPerSocket: { chat: number; gateway: number };
    heapKiBPerSocket: { chat: number; gateway: number };
    /** Per socket added since the level before (the first level: since none). */
    rssKiBPerAddedSocket: { chat: number; gateway: number };
    open: ConnectResult;
  }> = [];
  let previous = { sockets: 0, rss: before.rss };
  for (const count of settings.counts) {
    const users = firstUser + held.length;
    const { open, result } = await connectAll(count - held.length, settings.openPerSecond, (j) =>
      stack.attempt("gateway", users + j),
    );
    held.push(...open);
    const now = await settled();
    const per = (grown: number, sockets: number) => Number((grown / Math.max(1, sockets)).toFixed(1));
    levels.push({
      sockets: held.length,
      rssKiBPerSocket: {
        chat: per(now.rss.chat - before.rss.chat, held.length),
        gateway: per(now.rss.gateway - before.rss.gateway, held.length),
      },
      heapKiBPerSocket: {
        chat: per(now.heap.chat - before.heap.chat, held.length),
        gateway: per(now.heap.gateway - before.heap.gateway, held.length),
      },
      rssKiBPerAddedSocket: {
        chat: per(now.rss.chat - previous.rss.chat, held.length - previous.sockets),
        gateway: per(now.rss.gateway - previous.rss.gateway, held.length - previous.sockets),
      },
      open: result,
    });
    previous = { sockets: held.length, rss: now.rss };
    console.error(`held ${held.length} sockets: ${JSON.stringify(levels.at(-1))}`);
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
  return { settings, before, levels, storm };
}
