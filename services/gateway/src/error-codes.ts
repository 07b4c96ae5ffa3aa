/** The gateway's own error codes, besides the shared ones (@listings-chat/shared ErrorCode). */
export const GatewayErrorCode = {
  upstreamUnavailable: "upstream_unavailable",
  /** Every instance tried is alive but busy opening other connections: retry after `Retry-After`. */
  upstreamBusy: "upstream_busy",
  upstreamMisconfigured: "upstream_misconfigured",
  upstreamFailed: "upstream_failed",
  upstreamTimeout: "upstream_timeout",
  redisUnavailable: "redis_unavailable",
  /** The monolith's key set (JWT_JWKS_URL) cannot be read and none was read before: retry after `Retry-After`. */
  keySetUnavailable: "key_set_unavailable",
  clientClosed: "client_closed",
} as const;

/** The message of `upstream_misconfigured`, the same for upgrades and REST. */
export const MISCONFIGURED_MESSAGE = "the chat service refused the gateway: an operator must fix its configuration";
