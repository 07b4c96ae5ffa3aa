import { ErrorCode } from "@listings-chat/shared";
import { GatewayErrorCode } from "../error-codes.ts";

/** A refused credential: always a 401, with a sentence that says what to do. */
export class AuthError extends Error {
  readonly code = ErrorCode.unauthorized;
  readonly status = 401;
  override name = "AuthError";
}

/**
 * The monolith's key set (JWT_JWKS_URL) could not be read and none was read before: nothing can be verified, and
 * the caller should try again shortly (503 with Retry-After), not sign in again.
 */
export class KeySetUnavailableError extends Error {
  readonly code = GatewayErrorCode.keySetUnavailable;
  readonly status = 503;
  readonly retryAfterSeconds = 5;
  override name = "KeySetUnavailableError";
}
