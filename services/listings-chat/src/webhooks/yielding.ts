/**
 * When the sender steps aside for the write path. Deliveries share the instance's CPU (and PostgreSQL's, and
 * often the receiver's machine) with the sends they report: on a machine whose cores are all taken, each one
 * slows the sends. So while the CPU is short (cpu-pressure.ts, at least `YIELD_PRESSURE`) and the instance is
 * serving users (its frames or API requests moved within the last second), the sender delivers only the unread
 * reminders (few, and promised within 10 s) and lets the rest wait on disk; they go out as soon as either ends.
 * The second condition matters: a backlog going out when the users have left keeps the CPU short by itself, and
 * must not stand aside for its own load.
 *
 * Waiting is bounded: once the sender starts to yield, it has `maxS` seconds; if the queue has not run dry by
 * then it sends at full speed, pressure or not, until a claim finds nothing more due. So a delivery waits at
 * most about `maxS` more than it would have, however long the load lasts.
 */
import type { CpuPressure } from "./cpu-pressure.ts";

/** The stalled share from which the CPU counts as short (2 idle cores: 0 %; bench:chat's load: 55–80 %). */
export const YIELD_PRESSURE = 0.4;
/** Users count as served while the instance's activity counter moved this recently. */
export const SERVING_WINDOW_MS = 1_000;

export interface YieldPolicy {
  /** Whether only reminders go now. */
  shouldYield(): boolean;
  /** A claim found fewer due rows than it asked for: the queue ran dry, and a new wait may start. */
  drained(): void;
  /** Whether the sender is yielding, for stats and tests. */
  isYielding(): boolean;
}

export function createYieldPolicy(options: {
  pressure: Pick<CpuPressure, "stalledShare">;
  /** A count that grows with the users' traffic (frames in and out, API requests): yielding is for them. */
  activity: () => number;
  /** WEBHOOK_YIELD_MAX_S: 0 never yields. */
  maxS: number;
  threshold?: number;
  now?: () => number;
}): YieldPolicy {
  const { pressure, maxS } = options;
  const threshold = options.threshold ?? YIELD_PRESSURE;
  const now = options.now ?? Date.now;
  /** When the present wait began (the first yield since the queue last ran dry). */
  let waitingSince: number | undefined;
  /** The wait ran out: full speed until the queue runs dry. */
  let catchingUp = false;
  let yielding = false;
  let lastActivity = options.activity();
  let lastActiveAt = Number.NEGATIVE_INFINITY;
  const serving = () => {
    const activity = options.activity();
    if (activity !== lastActivity) {
      lastActivity = activity;
      lastActiveAt = now();
    }
    return now() - lastActiveAt <= SERVING_WINDOW_MS;
  };

  return {
    shouldYield() {
      yielding = false;
      if (maxS <= 0 || catchingUp) return false;
      // Read at each call, so that a burst of traffic after a quiet spell counts from its start.
      const users = serving();
      const share = pressure.stalledShare();
      if (!users || share === undefined || share < threshold) return false;
      waitingSince ??= now();
      if (now() - waitingSince >= maxS * 1000) {
        catchingUp = true;
        return false;
      }
      yielding = true;
      return true;
    },
    drained() {
      waitingSince = undefined;
      catchingUp = false;
    },
    isYielding: () => yielding,
  };
}
