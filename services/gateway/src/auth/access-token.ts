import { createSecretKey, type KeyObject } from "node:crypto";
import { parseUserId } from "@listings-chat/shared";
import jwt from "jsonwebtoken";
import type { AccessTokenKey } from "../env.ts";
import { AuthError } from "./errors.ts";
import { parsePublicKey } from "./public-key.ts";
import { WS_TOKEN_USE } from "./ws-token.ts";

export interface AccessTokenOptions {
  key: AccessTokenKey;
  issuer?: string;
  audience?: string;
  /** The oldest token accepted, counted from its `iat` (JWT_MAX_AGE_SECONDS), whatever its `exp` says. */
  maxAgeSeconds: number;
}

/** Seconds of clock difference forgiven between the monolith and the gateway (exp, nbf, iat, age). */
const CLOCK_TOLERANCE_SECONDS = 5;

/** Pins the algorithm to the key: HS256 for a secret, RS256 for an RSA key, ES256 for a P-256 key. */
function keyAndAlgorithm(key: AccessTokenKey): { keyObject: KeyObject; algorithm: jwt.Algorithm } {
  if (key.kind === "secret") return { keyObject: createSecretKey(Buffer.from(key.secret)), algorithm: "HS256" };
  const parsed = parsePublicKey(key.pem);
  if (!parsed) throw new Error("JWT_PUBLIC_KEY must be an RSA key (RS256) or a P-256 EC key (ES256)");
  return parsed;
}

export type AccessTokenVerifier = (token: string) => number;

/**
 * Verifies the monolith's access tokens and returns the user id. The algorithm is fixed by the key
 * (never read from the token), `exp` and `iat` are required, a token older than `maxAgeSeconds` (from
 * `iat`) or issued in the future is refused whatever its `exp`, `iss`/`aud` are checked when configured,
 * and a ws-token is refused even if it were signed with the same key.
 */
export function createAccessTokenVerifier(options: AccessTokenOptions): AccessTokenVerifier {
  const { keyObject, algorithm } = keyAndAlgorithm(options.key);
  const verifyOptions: jwt.VerifyOptions = {
    algorithms: [algorithm],
    clockTolerance: CLOCK_TOLERANCE_SECONDS,
    // jsonwebtoken's own age check: refuses a token without a numeric `iat`, and one past the age.
    maxAge: options.maxAgeSeconds,
    ...(options.issuer ? { issuer: options.issuer } : {}),
    ...(options.audience ? { audience: options.audience } : {}),
  };
  return (token) => {
    let payload: string | jwt.JwtPayload;
    try {
      payload = jwt.verify(token, keyObject, verifyOptions);
    } catch (error) {
      throw new AuthError(refusalOf(error, options.maxAgeSeconds));
    }
    if (typeof payload === "string" || typeof payload.exp !== "number") {
      throw new AuthError("the access token has no expiry (exp): the monolith must set one");
    }
    // `iat` is a number here (maxAge checked it); one in the future would make any age look young.
    if ((payload.iat ?? 0) > Date.now() / 1000 + CLOCK_TOLERANCE_SECONDS) {
      throw new AuthError("the access token is issued in the future (iat): check the monolith's clock");
    }
    if (payload.token_use === WS_TOKEN_USE) throw new AuthError("a ws-token is not an access token");
    const userId = parseUserId(payload.sub);
    if (userId === undefined) throw new AuthError("the access token's sub is not a user id");
    return userId;
  };
}

/** The sentence of a refused token: what was wrong with it, and what to do. */
function refusalOf(error: unknown, maxAgeSeconds: number): string {
  if (error instanceof jwt.TokenExpiredError) {
    return error.message === "maxAge exceeded"
      ? `the access token is older than ${maxAgeSeconds} s (JWT_MAX_AGE_SECONDS, counted from iat): sign in again`
      : "the access token has expired: sign in again";
  }
  if (error instanceof jwt.JsonWebTokenError && /^iat required/.test(error.message)) {
    return "the access token has no issue time (iat): the monolith must set one";
  }
  // Another kind of token signed with the same key (a password reset, an e-mail check), or a wrong setting.
  if (error instanceof jwt.JsonWebTokenError && /^jwt (audience|issuer) invalid/.test(error.message)) {
    const claim = error.message.startsWith("jwt audience") ? "aud (JWT_AUDIENCE)" : "iss (JWT_ISSUER)";
    return `the token's ${claim} is not that of an access token for this service`;
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
