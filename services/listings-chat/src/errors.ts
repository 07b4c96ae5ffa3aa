import { ErrorCode } from "@listings-chat/shared";

/** An error the caller can act on: a machine code, an HTTP status, and a sentence that says what to do. */
export class ChatError extends Error {
  readonly code: ErrorCode;
  readonly status: 400 | 401 | 403 | 404 | 409 | 422 | 429 | 503;
  constructor(code: ErrorCode, status: ChatError["status"], message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "ChatError";
    this.code = code;
    this.status = status;
  }
}

export const notFound = (what: string) => new ChatError(ErrorCode.notFound, 404, `${what} not found`);

/** Either of two users blocks the other (CONTRACT §10): no sends, edits or new chats between them. */
export const blockedError = () =>
  new ChatError(ErrorCode.blocked, 403, "you cannot write to this user: one of you has blocked the other");

/** With LISTINGS_REQUIRED=1, an unregistered listing; whatever the setting, a registered one's wrong seller. */
export const listingNotFoundError = () =>
  new ChatError(
    ErrorCode.listingNotFound,
    404,
    "listing not found: the platform has not registered this listing, or it is sold by another seller",
  );

/** The platform registered the listing as `removed` (CONTRACT §8): its chats are read-only. */
export const listingClosedError = () =>
  new ChatError(ErrorCode.listingClosed, 409, "this listing was removed: its chats can be read but not written to");

/** The platform suspended the user (CONTRACT §8): no sends, edits or chat opens while it lasts. */
export const userSuspendedError = () =>
  new ChatError(
    ErrorCode.userSuspended,
    403,
    "your account is suspended by the platform: you can read your chats but not write until it ends",
  );

/** Past a per-user limit; `what` names it ("edits and deletes (30 a minute)"), so the answer says which. */
export class RateLimitedError extends ChatError {
  readonly retryAfterMs: number;
  constructor(retryAfterMs: number, what = "messages") {
    super(ErrorCode.rateLimited, 429, `too many ${what}: try again in ${Math.ceil(retryAfterMs / 1000)} s`);
    this.retryAfterMs = retryAfterMs;
  }
}

/** The database could not store or read: nothing was acknowledged, the caller may retry. */
export class StorageUnavailableError extends ChatError {
  constructor(cause: unknown) {
    super(ErrorCode.storageUnavailable, 503, "the message store is unavailable: retry shortly", { cause });
  }
}

/** The photo storage (CONTRACT §11) could not store or read: nothing was acknowledged, the caller may retry. */
export class PhotoStorageUnavailableError extends ChatError {
  constructor(cause: unknown) {
    super(ErrorCode.storageUnavailable, 503, "the photo storage is unavailable: retry shortly", { cause });
  }
}

/** Runs `work` and turns any failure that is not already a ChatError into `unavailable(cause)`. */
async function failingAs<T>(work: () => Promise<T>, unavailable: (cause: unknown) => ChatError): Promise<T> {
  try {
    return await work();
  } catch (error) {
    if (error instanceof ChatError) throw error;
    throw unavailable(error);
  }
}

/** Runs work on the photo storage and turns any failure that is not already a ChatError into a 503 that says so. */
export const inPhotoStorage = <T>(work: () => Promise<T>) =>
  failingAs(work, (cause) => new PhotoStorageUnavailableError(cause));

/** Runs database work and turns any failure that is not already a ChatError into StorageUnavailableError. */
export const storing = <T>(work: () => Promise<T>) => failingAs(work, (cause) => new StorageUnavailableError(cause));
