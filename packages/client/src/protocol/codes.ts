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
  /** Either of two users blocks the other: no sends, no new chats between them (CONTRACT §10). */
  blocked: "blocked",
  /** A content rule with the action `reject` matched (CONTRACT §10); the message names the rule. */
  contentRejected: "content_rejected",
  /**
   * With LISTINGS_REQUIRED=1, a chat on a listing the platform never registered, or with another seller than
   * the listing's (CONTRACT §8).
   */
  listingNotFound: "listing_not_found",
  /** The listing is registered as `removed`: no new chats on it, no new messages in its chats (CONTRACT §8). */
  listingClosed: "listing_closed",
  /** The platform's PUT of a listing names another seller than its chats have (CONTRACT §8). */
  sellerMismatch: "seller_mismatch",
  /** The platform suspended the user (CONTRACT §8): no sends, edits or chat opens until it ends. */
  userSuspended: "user_suspended",
  /**
   * A photo of a send (CONTRACT §11) is not the sender's upload, not complete, too big, not the image type it
   * claims, undecodable or too many pixels; the message says which and what.
   */
  attachmentInvalid: "attachment_invalid",
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
  /** The platform suspended the user (CONTRACT §8). */
  suspended: 4003,
} as const;
export type CloseCode = (typeof CloseCode)[keyof typeof CloseCode];

/** Limits of the contract (CONTRACT §4, §5, §10, §11) that both services and the client rely on. */
export const Limits = {
  maxFrameBytes: 64 * 1024,
  /** A REST request body over this gets 413 (CONTRACT §3). */
  maxRequestBodyBytes: 64 * 1024,
  maxContentChars: 4000,
  sendsPerMinute: 60,
  /** Edits and deletes together, per user (CONTRACT §10). */
  editsPerMinute: 30,
  chatOpensPerHour: 20,
  reportsPerHour: 10,
  /** The longest note of a report, in characters (code points). */
  reportNoteChars: 1000,
  uploadsPerHour: 30,
  /** The largest photo an upload may declare (CONTRACT §11: UPLOAD_MAX_BYTES, 10 MiB). */
  uploadMaxBytes: 10 * 1024 * 1024,
  /** Photos in one message (CONTRACT §11). */
  attachmentsPerMessage: 10,
  /**
   * Blocks and unblocks together, per user: not a variable of the contract (which is silent), but each
   * toggle is a stored change and an event, and one the platform hears (§9), so it is bounded too.
   */
  blocksPerHour: 30,
  /** Frames of one socket waiting to be handled; past it the socket is not read (CONTRACT §10). */
  inboundQueueFrames: 32,
  /** A replay page the socket does not take within this closes it with 1013 (CONTRACT §10). */
  replayPageTimeoutMs: 30_000,
  /** `resume` at most once per this per socket; the upgrade's `after=` counts as the first (CONTRACT §10). */
  resumeIntervalMs: 10_000,
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
