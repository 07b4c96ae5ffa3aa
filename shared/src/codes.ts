/** Machine codes of the `{"error": {"code", "message"}}` body and of WebSocket `error` frames. */
export const ErrorCode = {
  badRequest: "bad_request",
  validationFailed: "validation_failed",
  badJson: "bad_json",
  unknownType: "unknown_type",
  unauthorized: "unauthorized",
  forbidden: "forbidden",
  notFound: "not_found",
  selfChat: "self_chat",
  conflict: "conflict",
  shuttingDown: "shutting_down",
  /** An instance that is alive but has too many connections opening: retry after `Retry-After`. */
  instanceBusy: "instance_busy",
  rateLimited: "rate_limited",
  payloadTooLarge: "payload_too_large",
  requestTimeout: "request_timeout",
  storageUnavailable: "storage_unavailable",
  internal: "internal_error",
} as const;
export type ErrorCode = (typeof ErrorCode)[keyof typeof ErrorCode];

/** WebSocket close codes the chat service uses (RFC 6455 §7.4 and the IANA registry). */
export const CloseCode = {
  normal: 1000,
  goingAway: 1001,
  policyViolation: 1008,
  messageTooBig: 1009,
  internalError: 1011,
  tryAgainLater: 1013,
} as const;
export type CloseCode = (typeof CloseCode)[keyof typeof CloseCode];

/** Limits of the contract (CONTRACT §4, §5) that both services and the client rely on. */
export const Limits = {
  maxFrameBytes: 64 * 1024,
  /** A REST request body over this gets 413 (CONTRACT §3). */
  maxRequestBodyBytes: 64 * 1024,
  maxContentChars: 4000,
  sendsPerMinute: 60,
  typingIntervalMs: 2000,
  heartbeatIntervalMs: 25_000,
  slowConsumerBytes: 1024 * 1024,
  messagesPageDefault: 20,
  messagesPageMax: 100,
  eventsPageDefault: 100,
  eventsPageMax: 500,
} as const;

export interface ErrorBody {
  error: { code: ErrorCode | string; message: string };
}

/** The contract's error body: `{"error": {"code", "message"}}`, the same everywhere. */
export const errorBody = (code: ErrorCode | string, message: string): ErrorBody => ({ error: { code, message } });
