/**
 * Development-only defaults, so that `npm start` works with no configuration. Both services refuse
 * them when NODE_ENV=production.
 */
export const DevDefaults = {
  internalToken: "dev-internal-token-not-for-production",
  jwtSecret: "dev-jwt-secret-not-for-production",
  wsTokenSecret: "dev-ws-token-secret-not-for-production",
  /** WEBHOOK_SECRET in development: Standard Webhooks' form, `whsec_` and the key in base64. */
  webhookSecret: `whsec_${btoa("dev-webhook-secret-not-for-production")}`,
} as const;

/** Shortest secret accepted in production. */
export const MIN_SECRET_LENGTH = 32;
