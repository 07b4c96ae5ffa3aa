import { ErrorCode } from "@listings-chat/shared";

/** A refused credential: always a 401, with a sentence that says what to do. */
export class AuthError extends Error {
  readonly code = ErrorCode.unauthorized;
  readonly status = 401;
  override name = "AuthError";
}
