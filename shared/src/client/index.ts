export { type AccessTokenProvider, AccessTokenRefusedError } from "./access-token.ts";
export { ChatClient, POLLING_WARNING } from "./chat-client.ts";
export { ChatApi, ChatApiError, type ReportRequest } from "./rest.ts";
export type * from "./types.ts";
