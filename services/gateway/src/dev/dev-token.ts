import { createSecretKey } from "node:crypto";
import { devTokenRequestSchema } from "@listings-chat/shared";
import jwt from "jsonwebtoken";

/** The body of POST /api/dev/token, shared with the OpenAPI document. */
export const devTokenBody = devTokenRequestSchema;

export interface DevTokenOptions {
  secret: string;
  issuer?: string;
  audience?: string;
  ttlSeconds?: number;
}

/** Signs access tokens as the monolith would, for the demo and for newcomers (DEV_AUTH=1 only). */
export function createDevTokenSigner({ secret, issuer, audience, ttlSeconds = 12 * 3600 }: DevTokenOptions) {
  const key = createSecretKey(Buffer.from(secret));
  return (userId: number): string =>
    jwt.sign({ sub: String(userId) }, key, {
      algorithm: "HS256",
      expiresIn: ttlSeconds,
      ...(issuer ? { issuer } : {}),
      ...(audience ? { audience } : {}),
    });
}
