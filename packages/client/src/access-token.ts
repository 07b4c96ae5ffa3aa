/**
 * The monolith's access token as the client keeps it: asked of the page's provider for every request, asked
 * again with `{ refresh: true }` when the gateway refused it (401) or shortly before its `exp`, once for all
 * the requests that need it at that moment. Monoliths issue short tokens (15 minutes is common); the client
 * must outlive them, as Stream's `tokenProvider`, centrifuge's `getToken` and Ably's `authCallback` do.
 */

/**
 * The page's source of access tokens. `refresh: false`: the token it has (it may keep one and answer at once);
 * `refresh: true`: the one it gave was refused or is about to expire, a new one is needed (from the monolith's
 * refresh endpoint, say). Throw `AccessTokenRefusedError` when there is none to be had (the user signed out):
 * the client stops with `fatal`. Any other error counts as the network failing: the client tries again later.
 */
export type AccessTokenProvider = (context: { refresh: boolean }) => string | Promise<string>;

/** Thrown by a provider that cannot give a token any more (signed out): the client stops (`fatal`). */
export class AccessTokenRefusedError extends Error {
  constructor(message = "no access token: the user must sign in again") {
    super(message);
    this.name = "AccessTokenRefusedError";
  }
}

/** The longest a token is refreshed ahead of its `exp` … */
const REFRESH_AHEAD_MAX_MS = 30_000;
/** … and at most this share of its life (a 5-second token is not refreshed before every request). */
const REFRESH_AHEAD_SHARE = 0.25;

/** When a JWT expires (`exp`) and how long it lives (`exp - iat`), in ms; undefined for any other token. */
export function expiryOf(token: string): { expiresAt: number; lifetimeMs: number | undefined } | undefined {
  const payload = token.split(".")[1];
  if (!payload) return undefined;
  try {
    const base64 = payload.replace(/-/g, "+").replace(/_/g, "/");
    const claims = JSON.parse(atob(base64.padEnd(Math.ceil(base64.length / 4) * 4, "="))) as {
      exp?: unknown;
      iat?: unknown;
    };
    if (typeof claims.exp !== "number") return undefined;
    const lifetimeMs = typeof claims.iat === "number" ? (claims.exp - claims.iat) * 1000 : undefined;
    return { expiresAt: claims.exp * 1000, lifetimeMs };
  } catch {
    return undefined;
  }
}

export class AccessTokens {
  private readonly provider: AccessTokenProvider;
  private readonly now: () => number;
  /** The refresh under way: every request that needs one waits for the same. */
  private refreshing: { replacing: string; fresh: Promise<string> } | undefined;
  /** The last refresh: while the provider still answers the token it replaced, the new one is used. */
  private replaced: { old: string; fresh: string } | undefined;

  constructor(provider: AccessTokenProvider, now: () => number = Date.now) {
    this.provider = provider;
    this.now = now;
  }

  /** The token to send now: the provider's, or a new one if it expires soon. */
  async current(): Promise<string> {
    const given = await this.provider({ refresh: false });
    const token = this.replaced?.old === given ? this.replaced.fresh : given;
    return this.expiresSoon(token) ? this.refresh(token) : token;
  }

  /** A token in place of `token` (refused by the gateway, or expiring): asked of the provider once for all. */
  refresh(token: string): Promise<string> {
    if (this.replaced?.old === token) return Promise.resolve(this.replaced.fresh);
    if (this.refreshing?.replacing === token) return this.refreshing.fresh;
    // Asked on a later turn, so that `refreshing` is in place before the provider can answer (or throw).
    const fresh = Promise.resolve()
      .then(() => this.provider({ refresh: true }))
      .then((next) => {
        // The same one again (the provider has no newer yet): asked again next time, not remembered as new.
        if (next !== token) this.replaced = { old: token, fresh: next };
        return next;
      });
    const entry = { replacing: token, fresh };
    this.refreshing = entry;
    const done = () => {
      if (this.refreshing === entry) this.refreshing = undefined;
    };
    fresh.then(done, done);
    return fresh;
  }

  private expiresSoon(token: string): boolean {
    const expiry = expiryOf(token);
    if (!expiry) return false;
    const ahead = Math.min(REFRESH_AHEAD_MAX_MS, (expiry.lifetimeMs ?? REFRESH_AHEAD_MAX_MS * 4) * REFRESH_AHEAD_SHARE);
    return expiry.expiresAt - this.now() <= ahead;
  }
}
