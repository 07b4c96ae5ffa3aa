/**
 * React bindings of `@listings-chat/client`: a provider that holds one `ChatStore`, and hooks that read it
 * with `useSyncExternalStore` (so a component redraws only when what it reads changed) and start the loads
 * they need.
 */
import type { Attachment, Chat, ChatClient, Message } from "@listings-chat/client";
import {
  createContext,
  createElement,
  type ReactNode,
  useCallback,
  useContext,
  useEffect,
  useMemo,
  useState,
  useSyncExternalStore,
} from "react";
import {
  type ChatListState,
  ChatStore,
  type ChatStoreOptions,
  type ConnectionState,
  type PendingMessage,
  type ThreadState,
} from "./store.ts";

const StoreContext = createContext<ChatStore | null>(null);

export interface ChatProviderProps {
  /** The client; the provider starts it if it is not started, and never stops it (its owner does). */
  client: ChatClient;
  /** Options of the store the provider creates for the client. */
  storeOptions?: ChatStoreOptions;
  children?: ReactNode;
}

/** Makes `client` (and one `ChatStore` following it) available to the hooks below it. */
export function ChatProvider({ client, storeOptions, children }: ChatProviderProps) {
  // One store per client for the provider's life; options are read when it is made.
  const [store] = useState(() => new ChatStore(client, storeOptions));
  if (store.client !== client) throw new Error("ChatProvider: give each client its own provider (key={userId})");
  useEffect(() => {
    const release = store.retain();
    client.start();
    return release;
  }, [client, store]);
  return createElement(StoreContext.Provider, { value: store }, children);
}

/** The store of the nearest `ChatProvider`. */
export function useChatStore(): ChatStore {
  const store = useContext(StoreContext);
  if (!store) throw new Error("useChatStore: wrap the component in <ChatProvider client={…}>");
  return store;
}

/** The `ChatClient` of the nearest `ChatProvider` (for what the hooks do not cover: reports, `api` …). */
export function useChatClient(): ChatClient {
  return useChatStore().client;
}

export interface Connection extends ConnectionState {
  /** Tries WebSocket now (the polling banner's button). */
  retryNow(): void;
}

/** The connection: mode, polling warning, suspension, sign-out, and the unread total. */
export function useConnection(): Connection {
  const store = useChatStore();
  const state = useSyncExternalStore(store.subscribe, store.getConnection, store.getConnection);
  return useMemo(() => ({ ...state, retryNow: () => store.client.retryNow() }), [state, store]);
}

export interface ChatList extends ChatListState {
  reload(): Promise<void>;
}

/** The user's chats (or the archived ones), newest activity first, with unread counts; loaded on first use. */
export function useChatList(options: { archived?: boolean } = {}): ChatList {
  const archived = options.archived ?? false;
  const store = useChatStore();
  const read = useCallback(() => store.getChatList(archived), [store, archived]);
  const state = useSyncExternalStore(store.subscribe, read, read);
  useEffect(() => {
    if (store.getChatList(archived).status === "idle") void store.loadChats(archived);
  }, [store, archived]);
  return useMemo(() => ({ ...state, reload: () => store.loadChats(archived) }), [state, store, archived]);
}

/** One chat as the lists (or the client) last saw it. */
export function useChat(chatId: number | undefined): Chat | undefined {
  const store = useChatStore();
  const read = useCallback(() => (chatId === undefined ? undefined : store.getChat(chatId)), [store, chatId]);
  return useSyncExternalStore(store.subscribe, read, read);
}

export interface Thread extends Omit<ThreadState, "chatId"> {
  loadOlder(): Promise<void>;
  /** Shown at once as pending; resolves with the stored message. */
  send(content: string): Promise<Message>;
  /**
   * Photos as one message, with an optional caption: shown at once as pending with its upload `progress`
   * (0–1); rejects at once, with nothing pending, for files the client's check refuses (type, size, count).
   */
  sendPhotos(files: readonly Blob[], content?: string): Promise<Message>;
  retry(pending: PendingMessage): Promise<Message>;
  discard(pending: PendingMessage): void;
  edit(messageId: number, content: string): Promise<Message>;
  remove(messageId: number): Promise<Message>;
  /** Marks read up to the newest message from the other side (call it when the thread is seen). */
  markRead(): Promise<void>;
}

const NO_THREAD: Omit<ThreadState, "chatId"> = Object.freeze({
  messages: [],
  pending: [],
  hasMore: false,
  status: "loading",
  loadingOlder: false,
  error: null,
  peerLastReadMessageId: null,
});

/** The thread of `chatId`: held open (loaded, kept current) while the component is mounted. */
export function useThread(chatId: number): Thread {
  const store = useChatStore();
  const read = useCallback(() => store.getThread(chatId), [store, chatId]);
  const state = useSyncExternalStore(store.subscribe, read, read) ?? NO_THREAD;
  useEffect(() => store.holdThread(chatId), [store, chatId]);
  return useMemo(
    () => ({
      ...state,
      loadOlder: () => store.loadOlder(chatId),
      send: (content: string) => store.send(chatId, content),
      sendPhotos: (files: readonly Blob[], content?: string) => store.sendPhotos(chatId, files, content),
      retry: (pending: PendingMessage) => store.retry(chatId, pending.client_msg_id),
      discard: (pending: PendingMessage) => store.discard(chatId, pending.client_msg_id),
      edit: (messageId: number, content: string) => store.edit(messageId, content),
      remove: (messageId: number) => store.remove(messageId),
      markRead: () => store.markRead(chatId),
    }),
    [state, store, chatId],
  );
}

export interface Typing {
  /** Who is typing in the chat now (an indicator expires by itself if no "stopped" comes). */
  userIds: readonly number[];
  /** Say this user is typing, or stopped (throttled by the client). */
  setTyping(isTyping: boolean): void;
}

export function useTyping(chatId: number): Typing {
  const store = useChatStore();
  const read = useCallback(() => store.getTyping(chatId), [store, chatId]);
  const userIds = useSyncExternalStore(store.subscribe, read, read);
  return useMemo(
    () => ({ userIds, setTyping: (isTyping: boolean) => store.setTyping(chatId, isTyping) }),
    [userIds, store, chatId],
  );
}

/**
 * A URL of a photo for `<img src>` (with `thumb`, of its thumbnail), through `ChatClient.attachmentUrl`:
 * undefined until the gateway answered (or when it refused), then a short-lived signed URL, asked again when the
 * component mounts after it expired.
 */
export function useAttachmentUrl(
  attachment: Pick<Attachment, "id"> | undefined,
  options: { thumb?: boolean } = {},
): string | undefined {
  const client = useChatClient();
  const thumb = options.thumb ?? false;
  const id = attachment?.id;
  const key = id === undefined ? undefined : `${id}:${thumb}`;
  const [resolved, setResolved] = useState<{ key: string; url: string }>();
  useEffect(() => {
    if (id === undefined || key === undefined) return;
    let current = true;
    client.attachmentUrl({ id }, { thumb }).then(
      (url) => {
        if (current) setResolved({ key, url });
      },
      // Not a participant (any more), or the network: no picture; the next mount asks again.
      () => {},
    );
    return () => {
      current = false;
    };
  }, [client, id, key, thumb]);
  return resolved !== undefined && resolved.key === key ? resolved.url : undefined;
}

/** Whether `userId` is online, as far as this client heard; undefined before it heard. */
export function usePresence(userId: number | undefined): boolean | undefined {
  const store = useChatStore();
  const read = useCallback(() => (userId === undefined ? undefined : store.getPresence(userId)), [store, userId]);
  return useSyncExternalStore(store.subscribe, read, read);
}

export interface Blocks {
  /** Whom this user blocks (read once, then kept current by events from every device). */
  blocked: readonly number[];
  block(userId: number): Promise<void>;
  unblock(userId: number): Promise<void>;
}

export function useBlocks(): Blocks {
  const store = useChatStore();
  const blocked = useSyncExternalStore(store.subscribe, store.getBlocked, store.getBlocked);
  useEffect(() => {
    store.loadBlocks().catch(() => {});
  }, [store]);
  return useMemo(
    () => ({ blocked, block: (id: number) => store.block(id), unblock: (id: number) => store.unblock(id) }),
    [blocked, store],
  );
}
