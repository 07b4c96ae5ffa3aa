import type { KeyObject } from "node:crypto";
import { parseUserId } from "@listings-chat/shared";
import {
  createLocalJWKSet,
  createRemoteJWKSet,
  errors,
  type JSONWebKeySet,
  type JWTPayload,
  type JWTVerifyGetKey,
  type JWTVerifyOptions,
  jwksCache,
  jwtVerify,
} from "jose";
import type { AccessTokenKey } from "../env.ts";
import { AuthError, KeySetUnavailableError } from "./errors.ts";
import { parsePublicKey } from "./public-key.ts";
import { WS_TOKEN_USE } from "./ws-token.ts";

export interface AccessTokenOptions {
  key: AccessTokenKey;
  issuer?: string;
  audience?: string;
  /** The oldest token accepted, counted from its `iat` (JWT_MAX_AGE_SECONDS), whatever its `exp` says. */
  maxAgeSeconds: number;
  /** Where a key-set problem is told (a stale set used while JWT_JWKS_URL does not answer). */
  warn?: (message: string) => void;
  /** How the key set is kept (KEY_SET_TIMINGS); tests shorten it. */
  keySetTimings?: KeySetTimings;
}

export interface KeySetTimings {
  /** A set older than this is read again before use. */
  cacheMaxAgeMs: number;
  /**
   * While the set cannot be read again, the last one read keeps verifying until it is this old: a key the
   * monolith retired (compromised) must not stay valid for as long as its endpoint is down. Then 503.
   */
  maxStaleMs: number;
  /** An unknown `kid` reads the set again, but not sooner than this after the last read. */
  cooldownMs: number;
  /** A read that takes longer fails. */
  timeoutMs: number;
}

/** Seconds of clock difference forgiven between the monolith and the gateway (exp, nbf, iat, age). */
const CLOCK_TOLERANCE_SECONDS = 5;

/** Algorithms a key of the monolith's key set (JWT_JWKS_URL) may sign with; each key's own `kty` and `alg` narrow it. */
const KEY_SET_ALGORITHMS = ["RS256", "ES256"];

/** How long the key set is kept before it is read again, and how soon an unknown `kid` may read it again. */
export const KEY_SET_TIMINGS: KeySetTimings = {
  cacheMaxAgeMs: 10 * 60_000,
  maxStaleMs: 60 * 60_000,
  cooldownMs: 30_000,
  timeoutMs: 5_000,
};

/**
 * The key as jose verifies with it: a secret imported once for WebCrypto (jose would import it per token, which
 * costs as much as the verification), a public key (jose keeps its WebCrypto form itself), or a key set.
 */
type KeyAndAlgorithms = { key: Promise<CryptoKey> | KeyObject | JWTVerifyGetKey; algorithms: string[] };

/**
 * Pins the algorithms to the key: HS256 for a secret, RS256 for an RSA key, ES256 for a P-256 key, and for a key
 * set (JWKS) RS256 or ES256 as each key's type allows. Never read from the token.
 */
function keyAndAlgorithms(options: AccessTokenOptions): KeyAndAlgorithms {
  const { key } = options;
  if (key.kind === "secret") {
    const raw = new TextEncoder().encode(key.secret);
    const imported = crypto.subtle.importKey("raw", raw, { name: "HMAC", hash: "SHA-256" }, false, ["verify"]);
    return { key: imported, algorithms: ["HS256"] };
  }
  if (key.kind === "jwks") {
    const timings = options.keySetTimings ?? KEY_SET_TIMINGS;
    return { key: keySet(key.url, timings, options.warn), algorithms: KEY_SET_ALGORITHMS };
  }
  const parsed = parsePublicKey(key.pem);
  if (!parsed) throw new Error("JWT_PUBLIC_KEY must be an RSA key (RS256) or a P-256 EC key (ES256)");
  return { key: parsed.keyObject, algorithms: [parsed.algorithm] };
}

/**
 * The monolith's key set, fetched from `url` and kept (jose's remote JWK set: the key is chosen by the token's
 * `kid`; an unknown `kid` reads the set again, at most every 30 s, so a new key works as soon as it is
 * published). When the set cannot be read again once it is stale, the last one read is used meanwhile (up to
 * `maxStaleMs` old), so that a monolith's short outage does not sign everyone out; with none read yet, or one
 * older than that, verification is unavailable (503). After a failed read, requests do not each ask again for
 * `cooldownMs`.
 */
function keySet(url: string, timings: KeySetTimings, warn: (message: string) => void = () => {}): JWTVerifyGetKey {
  // Once a minute at most: every request meets the outage.
  let warnedAt = Number.NEGATIVE_INFINITY;
  // When a read last failed: for `cooldownMs` after it, requests do not each wait for the monolith again.
  let failedAt = Number.NEGATIVE_INFINITY;
  // jose keeps the set it read, and when (`uat`), here.
  const cache: { jwks?: JSONWebKeySet; uat?: number } = {};
  const remote = createRemoteJWKSet(new URL(url), {
    cacheMaxAge: timings.cacheMaxAgeMs,
    cooldownDuration: timings.cooldownMs,
    timeoutDuration: timings.timeoutMs,
    [jwksCache]: cache as Record<string, never>,
  });
  /** The last set read, unless it is older than `maxStaleMs`. */
  const lastGood = () =>
    cache.jwks && cache.uat !== undefined && Date.now() - cache.uat <= timings.maxStaleMs ? cache.jwks : undefined;
  const unavailable = (cause: string) =>
    new KeySetUnavailableError(`the monolith's key set (JWT_JWKS_URL) cannot be read (${cause}): try again shortly`);
  return async (header, token) => {
    if (Date.now() - failedAt < timings.cooldownMs) {
      const last = lastGood();
      if (!last) throw unavailable("it failed moments ago");
      return createLocalJWKSet(last)(header, token);
    }
    try {
      return await remote(header, token);
    } catch (error) {
      if (!cannotRead(error)) throw error;
      failedAt = Date.now();
      const last = lastGood();
      if (!last) throw unavailable(readableCause(error));
      if (Date.now() - warnedAt >= 60_000) {
        warnedAt = Date.now();
        warn(`JWT_JWKS_URL cannot be read (${readableCause(error)}): verifying with the key set read before`);
      }
      return createLocalJWKSet(last)(header, token);
    }
  };
}

/**
 * A failure to read the key set (network, timeout, an answer other than 200, not a key set), as opposed to a
 * set that was read and has no key for this token.
 */
const cannotRead = (error: unknown) =>
  !(
    error instanceof errors.JWKSNoMatchingKey ||
    error instanceof errors.JWKSMultipleMatchingKeys ||
    error instanceof errors.JOSENotSupported ||
    error instanceof errors.JOSEAlgNotAllowed
  );

const readableCause = (error: unknown) =>
  error instanceof Error
    ? `${error.message}${error.cause instanceof Error ? `: ${error.cause.message}` : ""}`
    : String(error);

/** The user id of a verified token (a stub in tests may answer at once). */
export type AccessTokenVerifier = (token: string) => Promise<number> | number;

/**
 * Verifies the monolith's access tokens and returns the user id. The algorithm is fixed by the key (never read
 * from the token), `exp` and `iat` are required, a token older than `maxAgeSeconds` (from `iat`) or issued in
 * the future is refused whatever its `exp`, `iss`/`aud` are checked when configured, and a ws-token is refused
 * even if it were signed with the same key. Refusals are `AuthError`s (401); a key set that cannot be read is a
 * `KeySetUnavailableError` (503).
 */
export function createAccessTokenVerifier(options: AccessTokenOptions): AccessTokenVerifier {
  const { key, algorithms } = keyAndAlgorithms(options);
  const verifyOptions: JWTVerifyOptions = {
    algorithms,
    clockTolerance: CLOCK_TOLERANCE_SECONDS,
    maxTokenAge: options.maxAgeSeconds,
    requiredClaims: ["exp", "iat"],
    ...(options.issuer ? { issuer: options.issuer } : {}),
    ...(options.audience ? { audience: options.audience } : {}),
  };
  return async (token) => {
    let payload: JWTPayload;
    try {
      ({ payload } =
        typeof key === "function"
          ? await jwtVerify(token, key, verifyOptions)
          : await jwtVerify(token, await key, verifyOptions));
    } catch (error) {
      if (error instanceof KeySetUnavailableError) throw error;
      throw new AuthError(refusalOf(error, options.maxAgeSeconds));
    }
    if (payload.token_use === WS_TOKEN_USE) throw new AuthError("a ws-token is not an access token");
    const userId = parseUserId(payload.sub);
    if (userId === undefined) throw new AuthError("the access token's sub is not a user id");
    return userId;
  };
}

/** The sentence of a refused token: what was wrong with it, and what to do. */
function refusalOf(error: unknown, maxAgeSeconds: number): string {
  if (error instanceof errors.JWTExpired) {
    return error.claim === "iat"
      ? `the access token is older than ${maxAgeSeconds} s (JWT_MAX_AGE_SECONDS, counted from iat): sign in again`
      : "the access token has expired: sign in again";
  }
  if (error instanceof errors.JWTClaimValidationFailed) {
    if (error.claim === "exp" && error.reason === "missing") {
      return "the access token has no expiry (exp): the monolith must set one";
    }
    if (error.claim === "iat" && error.reason === "missing") {
      return "the access token has no issue time (iat): the monolith must set one";
    }
    if (error.claim === "iat") return "the access token is issued in the future (iat): check the monolith's clock";
    // Another kind of token signed with the same key (a password reset, an e-mail check), or a wrong setting.
    if (error.claim === "aud" || error.claim === "iss") {
      const claim = error.claim === "aud" ? "aud (JWT_AUDIENCE)" : "iss (JWT_ISSUER)";
      return `the token's ${claim} is not that of an access token for this service`;
    }
  }
  if (error instanceof errors.JWKSNoMatchingKey) {
    return "the access token's key (its kid) is not in the monolith's key set (JWT_JWKS_URL)";
  }
  return "the access token is not valid";
}

/** Where a request's access token came from: the cookie is the one a browser attaches on its own. */
export interface PresentedAccessToken {
  token: string;
  fromCookie: boolean;
}

/** The access token of a request: `Authorization: Bearer …`, else the `access_token` cookie. */
export function presentedAccessToken(
  authorization: string | undefined,
  cookieHeader: string | undefined,
): PresentedAccessToken | undefined {
  if (authorization) {
    const match = /^Bearer\s+(\S+)$/i.exec(authorization);
    if (match?.[1]) return { token: match[1], fromCookie: false };
  }
  const cookie = accessTokenCookie(cookieHeader);
  return cookie ? { token: cookie, fromCookie: true } : undefined;
}

function accessTokenCookie(cookieHeader: string | undefined): string | undefined {
  if (!cookieHeader) return undefined;
  for (const part of cookieHeader.split(";")) {
    const eq = part.indexOf("=");
    if (eq !== -1 && part.slice(0, eq).trim() === "access_token") {
      const value = part.slice(eq + 1).trim();
      try {
        return decodeURIComponent(value) || undefined;
      } catch {
        return value || undefined;
      }
    }
  }
  return undefined;
}
