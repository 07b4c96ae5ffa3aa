export { ChatClient, POLLING_WARNING } from "./chat-client.ts";
export { ChatApi, ChatApiError } from "./rest.ts";
export type * from "./types.ts";
