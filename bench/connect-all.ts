/**
 * Many clients connecting, as browsers do after an outage: `count` clients started at `perSecond`, each
 * trying until its socket is open, waiting a refusal's Retry-After between tries (an attempt with no
 * greeting within its deadline counts as a time-out and is tried again at once). What it measures is
 * what a storm's users see: how many got in at once, the refusals on the way, connect p50/p99 (of the
 * attempt that worked), and how long until the last one was in.
 */
import type { Socket } from "node:net";
import { monitorEventLoopDelay } from "node:perf_hooks";
import { percentile } from "./support.ts";

export type Attempt =
  | {
      kind: "connected";
      socket: Socket /** The ws-token's share of the attempt, when it needed one. */;
      tokenMs?: number;
    }
  /** `why`: "timeout", or the status and error code ("503 upstream_busy"). */
  | { kind: "refused"; why: string; retryAfterMs: number };

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const round1 = (n: number) => Number(n.toFixed(1));

export async function connectAll(count: number, perSecond: number, attempt: (i: number) => Promise<Attempt>) {
  const refusals = new Map<string, number>();
  const connectMs: number[] = [];
  const tokenMs: number[] = [];
  const open: Socket[] = [];
  let acceptedAtOnce = 0;
  let gaveUp = 0;
  // The generator's own lag: when it falls behind, what it measures is late too.
  const lag = monitorEventLoopDelay({ resolution: 10 });
  lag.enable();
  const started = performance.now();
  let lastConnectedAt = started;
  await Promise.all(
    Array.from({ length: count }, async (_, i) => {
      await sleep((i * 1_000) / perSecond);
      for (let tries = 0; tries < 20; tries++) {
        const t0 = performance.now();
        const outcome = await attempt(i);
        if (outcome.kind === "connected") {
          connectMs.push(performance.now() - t0);
          if (outcome.tokenMs !== undefined) tokenMs.push(outcome.tokenMs);
          if (tries === 0) acceptedAtOnce += 1;
          lastConnectedAt = Math.max(lastConnectedAt, performance.now());
          open.push(outcome.socket);
          return;
        }
        refusals.set(outcome.why, (refusals.get(outcome.why) ?? 0) + 1);
        await sleep(outcome.retryAfterMs);
      }
      gaveUp += 1;
    }),
  );
  lag.disable();
  const sorted = connectMs.sort((a, b) => a - b);
  const sortedTokenMs = tokenMs.sort((a, b) => a - b);
  return {
    open,
    result: {
      sockets: count,
      perSecond,
      connected: open.length,
      gaveUp,
      acceptedAtFirstAttempt: acceptedAtOnce,
      refusedByStatus: Object.fromEntries(refusals),
      connectP50Ms: round1(percentile(sorted, 0.5)),
      connectP99Ms: round1(percentile(sorted, 0.99)),
      connectMaxMs: round1(sorted[sorted.length - 1] ?? 0),
      // The ws-token's share of the connect time: a gateway behind on its event loop shows here first.
      ...(sortedTokenMs.length > 0
        ? {
            wsTokenP50Ms: round1(percentile(sortedTokenMs, 0.5)),
            wsTokenP99Ms: round1(percentile(sortedTokenMs, 0.99)),
          }
        : {}),
      allConnectedAfterMs: Math.round(lastConnectedAt - started),
      loadGeneratorLoopDelayMaxMs: Math.round(lag.max / 1e6),
    },
  };
}

export type ConnectResult = Awaited<ReturnType<typeof connectAll>>["result"];
