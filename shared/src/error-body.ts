import type { ErrorBody, ErrorCode } from "@listings-chat/client/protocol";

/** The contract's error body: `{"error": {"code", "message"}}`, the same everywhere. */
export const errorBody = (code: ErrorCode | string, message: string): ErrorBody => ({ error: { code, message } });
