import { createHmac } from "node:crypto";

/**
 * Standard Webhooks' signature (`webhook-signature: v1,<base64>`): HMAC-SHA256 of `{id}.{timestamp}.{body}`
 * with the key after `whsec_`, base64-decoded. What the `standardwebhooks` package's `sign` computes
 * (webhook-signature.test.ts checks them equal on random input), through node:crypto: the package hashes in
 * JavaScript (fast-sha256), 18 µs for a 600-byte delivery here against 3.7 µs, on the same cores as the chat.
 */
export function createSigner(secret: string): (webhookId: string, timestampS: number, body: string) => string {
  const key = Buffer.from(secret.replace(/^whsec_/, ""), "base64");
  return (webhookId, timestampS, body) =>
    `v1,${createHmac("sha256", key).update(`${webhookId}.${timestampS}.${body}`).digest("base64")}`;
}
