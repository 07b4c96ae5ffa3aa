/**
 * The ids of the ws-tokens this instance has opened a socket with, until they expire. Without Redis there is
 * one chat instance behind every gateway (CONTRACT §1), so this is where "a ws-token opens one socket in the
 * whole deployment" holds: each gateway's own replay store sees only its own upgrades.
 */
export interface UsedWsTokens {
  /** True the first time `tokenId` is seen before `expiresAtMs`; false for a token already used. */
  claim(tokenId: string, expiresAtMs: number): boolean;
  /** Ids held now. */
  size(): number;
}

export interface UsedWsTokensOptions {
  /**
   * Kept past a token's expiry by this much: gateways on other hosts may judge the expiry by a clock that is
   * behind this one. 30 s when not given.
   */
  clockSkewMs?: number;
  /** The longest an id is kept, whatever its expiry: the gateway's longest ws-token life (1 h) and the skew. */
  maxHoldMs?: number;
  now?: () => number;
}

/** How often expired ids are dropped, at the next claim (no timer to own). */
const SWEEP_EVERY_MS = 10_000;

/**
 * In memory and bounded: an id is dropped once its token has expired (plus the clock skew), so at most the
 * upgrades of one token lifetime are held (about 100 bytes each: 60,000 upgrades in a 60 s life are ~6 MB).
 */
export function createUsedWsTokens({
  clockSkewMs = 30_000,
  maxHoldMs = 3_600_000 + 30_000,
  now = Date.now,
}: UsedWsTokensOptions = {}): UsedWsTokens {
  const heldUntil = new Map<string, number>();
  let lastSweep = now();
  return {
    claim(tokenId, expiresAtMs) {
      const t = now();
      if (t - lastSweep >= SWEEP_EVERY_MS) {
        lastSweep = t;
        for (const [id, until] of heldUntil) if (until <= t) heldUntil.delete(id);
      }
      const until = heldUntil.get(tokenId);
      if (until !== undefined && until > t) return false;
      heldUntil.set(tokenId, Math.min(expiresAtMs + clockSkewMs, t + maxHoldMs));
      return true;
    },
    size: () => heldUntil.size,
  };
}
