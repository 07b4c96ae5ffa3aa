/**
 * `@listings-chat/react`: a provider and hooks over `@listings-chat/client`, and the store they read
 * (`ChatStore`, usable without React).
 */
export {
  type Blocks,
  type ChatList,
  ChatProvider,
  type ChatProviderProps,
  type Connection,
  type Thread,
  type Typing,
  useAttachmentUrl,
  useBlocks,
  useChat,
  useChatClient,
  useChatList,
  useChatStore,
  useConnection,
  usePresence,
  useThread,
  useTyping,
} from "./hooks.ts";
export {
  type ChatListState,
  ChatStore,
  type ChatStoreOptions,
  type ConnectionState,
  type PendingMessage,
  type ThreadState,
} from "./store.ts";
