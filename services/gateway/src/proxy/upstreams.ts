import { Pool } from "undici";
import { UpgradeAdmission, type UpgradeAdmissionOptions } from "./upgrade-admission.ts";

export interface Upstream {
  /** Base URL without a trailing slash, e.g. http://10.0.0.5:8086 */
  base: string;
  /** Keep-alive connections for REST forwarding to this instance. */
  pool: Pool;
  /** Until when a failed instance is tried last instead of in turn. */
  downUntil: number;
  /** Slots for upgrade hops to this instance, and the queue for them. */
  upgrades: UpgradeAdmission;
}

export interface UpstreamsOptions {
  /** The instances at first; `replace` changes them (upstream-discovery.ts). */
  urls: string[];
  connectTimeoutMs: number;
  requestTimeoutMs: number;
  upgradeAdmission: UpgradeAdmissionOptions;
  /** How long a failed instance goes to the back of the queue. */
  penaltyMs?: number;
  now?: () => number;
}

export type Upstreams = ReturnType<typeof createUpstreams>;

/**
 * The chat instances, in the order to try them: round-robin among those that answered last time,
 * then the ones that recently failed (still tried, so a restarted instance is used again at once).
 */
export function createUpstreams({
  urls,
  connectTimeoutMs,
  requestTimeoutMs,
  upgradeAdmission,
  penaltyMs = 5_000,
  now = Date.now,
}: UpstreamsOptions) {
  const make = (base: string): Upstream => ({
    base,
    pool: new Pool(base, {
      connections: 64,
      connect: { timeout: connectTimeoutMs },
      headersTimeout: requestTimeoutMs,
      bodyTimeout: requestTimeoutMs,
      keepAliveTimeout: 4_000,
    }),
    downUntil: 0,
    upgrades: new UpgradeAdmission(upgradeAdmission),
  });
  let all: Upstream[] = urls.map(make);
  let turn = 0;
  return {
    get all(): readonly Upstream[] {
      return all;
    },
    order(): Upstream[] {
      if (all.length === 0) return [];
      const t = now();
      const start = turn++ % all.length;
      const rotated = [...all.slice(start), ...all.slice(0, start)];
      return [...rotated.filter((u) => u.downUntil <= t), ...rotated.filter((u) => u.downUntil > t)];
    },
    /**
     * Makes `bases` the instances, in that order. One that is kept keeps its state; a new one starts fresh;
     * one that is gone takes no new work: upgrades waiting for it go on to the next instance, its REST
     * connections close once their requests are answered, and pipes already open through it stay open.
     */
    replace(bases: string[]) {
      const byBase = new Map(all.map((u) => [u.base, u]));
      const next = bases.map((base) => byBase.get(base) ?? make(base));
      for (const gone of all.filter((u) => !bases.includes(u.base))) {
        gone.upgrades.withdrawAll();
        void gone.pool.close().catch(() => {});
      }
      all = next;
    },
    /** Puts a failed instance at the back of the queue; upgrades waiting for it go on to the next one. */
    markDown(upstream: Upstream) {
      upstream.downUntil = now() + penaltyMs;
      upstream.upgrades.withdrawAll();
    },
    markUp(upstream: Upstream) {
      upstream.downUntil = 0;
    },
    async close() {
      await Promise.allSettled(all.map((u) => u.pool.close()));
    },
  };
}
