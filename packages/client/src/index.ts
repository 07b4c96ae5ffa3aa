/**
 * `@listings-chat/client`: the browser (and Node) client of listings-chat, and the protocol's shapes and codes.
 * No run-time dependency; `@listings-chat/client/protocol` holds the shapes and codes alone.
 */
export { type AccessTokenProvider, AccessTokenRefusedError } from "./access-token.ts";
export { ChatClient, POLLING_WARNING } from "./chat-client.ts";
export { checkPhotos, type UploadProgress } from "./photos.ts";
export * from "./protocol/index.ts";
export { ChatApi, ChatApiError, type ReportRequest } from "./rest.ts";
export type { TabEnvironment, TabMessage } from "./tab-link.ts";
export type {
  ChatClientEvents,
  ChatClientMode,
  ChatClientOptions,
  ConnectivitySignals,
  SendOptions,
  SendPhotosOptions,
  Timers,
  WebSocketFactory,
  WebSocketLike,
} from "./types.ts";
export type { XMLHttpRequestFactory, XMLHttpRequestLike } from "./upload.ts";
