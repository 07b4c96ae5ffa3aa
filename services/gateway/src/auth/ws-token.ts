import { createSecretKey, randomUUID } from "node:crypto";
import { parseUserId } from "@listings-chat/shared";
import jwt from "jsonwebtoken";
import { AuthError } from "./errors.ts";
import type { ReplayStore } from "./replay-store.ts";

/** The audience and marker of ws-tokens: an access token never has them. */
export const WS_TOKEN_AUDIENCE = "listings-chat:ws";
export const WS_TOKEN_ISSUER = "listings-chat:gateway";
export const WS_TOKEN_USE = "ws";

export interface WsTokensOptions {
  secret: string;
  ttlSeconds: number;
  replay: ReplayStore;
}

/** A ws-token whose signature, audience and expiry were checked; not yet used up. */
export interface WsTokenGrant {
  userId: number;
  tokenId: string;
  /** Epoch ms after which the token is refused anyway. */
  expiresAt: number;
}

export interface WsTokens {
  issue(userId: number): { token: string; expiresIn: number };
  /** Checks a ws-token (signature, audience, issuer, expiry) without using it up; throws AuthError. */
  verify(token: string): WsTokenGrant;
  /** Uses a verified token up: the same token is refused the second time, at any gateway; throws AuthError. */
  use(grant: WsTokenGrant): Promise<void>;
  /**
   * Makes a used-up token usable again after a refusal that opened nothing (no instance reachable), so that
   * the client's retry is not refused as a replay. At most one socket is ever opened with a token.
   */
  giveBack(grant: WsTokenGrant): Promise<void>;
  /** `verify` then `use`: the user id. */
  redeem(token: string): Promise<number>;
}

/** Short-lived, single-use tokens for one WebSocket upgrade, signed with their own secret (HS256). */
export function createWsTokens({ secret, ttlSeconds, replay }: WsTokensOptions): WsTokens {
  const key = createSecretKey(Buffer.from(secret));
  return {
    issue(userId) {
      const token = jwt.sign({ sub: String(userId), token_use: WS_TOKEN_USE }, key, {
        algorithm: "HS256",
        audience: WS_TOKEN_AUDIENCE,
        issuer: WS_TOKEN_ISSUER,
        expiresIn: ttlSeconds,
        jwtid: randomUUID(),
      });
      return { token, expiresIn: ttlSeconds };
    },
    verify(token) {
      let payload: string | jwt.JwtPayload;
      try {
        payload = jwt.verify(token, key, {
          algorithms: ["HS256"],
          audience: WS_TOKEN_AUDIENCE,
          issuer: WS_TOKEN_ISSUER,
        });
      } catch (error) {
        const expired = error instanceof jwt.TokenExpiredError;
        throw new AuthError(
          expired ? "the ws-token has expired: fetch a new one from /api/v2/ws-token" : "the ws-token is not valid",
        );
      }
      if (typeof payload === "string" || payload.token_use !== WS_TOKEN_USE || !payload.jti || !payload.exp) {
        throw new AuthError("the ws-token is not valid");
      }
      const userId = parseUserId(payload.sub);
      if (userId === undefined) throw new AuthError("the ws-token is not valid");
      return { userId, tokenId: payload.jti, expiresAt: payload.exp * 1000 };
    },
    async use(grant) {
      const ttlMs = grant.expiresAt - Date.now() + 5_000;
      if (!(await replay.claim(grant.tokenId, ttlMs))) {
        throw new AuthError("the ws-token was already used: fetch a new one from /api/v2/ws-token");
      }
    },
    async giveBack(grant) {
      await replay.release(grant.tokenId);
    },
    async redeem(token) {
      const grant = this.verify(token);
      await this.use(grant);
      return grant.userId;
    },
  };
}
