/**
 * The bookkeeping a chat page needs, done once: the chat lists with unread counts, the threads that are open
 * (history pages, live events, sends in flight), typing with its expiry, presence, blocks and the connection,
 * all kept in step with a `ChatClient`'s events. No React here: the hooks read it with `useSyncExternalStore`,
 * and any other view layer can `subscribe` to it the same way.
 *
 * Every read returns an immutable snapshot that stays the same object until what it shows changes, so a view
 * redraws only what changed.
 */
import {
  type Chat,
  ChatApiError,
  type ChatClient,
  type ChatClientMode,
  type ChatEvent,
  type ChatSummary,
  checkPhotos,
  type Message,
} from "@listings-chat/client";

/** A message the user sent that is not stored yet, or that failed (the page offers retry or discard). */
export interface PendingMessage {
  client_msg_id: string;
  chat_id: number;
  content: string;
  status: "sending" | "failed";
  /** Why the last try failed; null while sending. */
  error: ChatApiError | null;
  /** A photo send's files, as the page gave them (for previews; a retry sends them again); absent for text. */
  photos?: readonly Blob[];
  /** How much of a photo send's bytes reached storage, 0–1 (1: the server is processing them); absent for text. */
  progress?: number;
}

export interface ThreadState {
  chatId: number;
  /** Stored messages, oldest first. */
  messages: readonly Message[];
  /** Sent by this user and not stored yet (or failed), in the order sent; drawn after `messages`. */
  pending: readonly PendingMessage[];
  /** Whether older messages remain to be loaded (`loadOlder`). */
  hasMore: boolean;
  status: "loading" | "ready" | "error";
  loadingOlder: boolean;
  error: ChatApiError | null;
  /** How far the other participant has read: this user's messages up to this id show as read. */
  peerLastReadMessageId: number | null;
}

export interface ChatListState {
  /** Newest activity first; `unread_count` kept current. */
  chats: readonly ChatSummary[];
  status: "idle" | "loading" | "ready" | "error";
  error: ChatApiError | null;
}

export interface ConnectionState {
  mode: ChatClientMode;
  /** The banner's text while the client polls ("Real-time updates are unavailable …"); null otherwise. */
  warning: string | null;
  /** The platform suspended this user: reads go on, sends are refused. */
  suspended: boolean;
  /** Set once the client stopped for good (signed out); the page should sign in again. */
  fatal: { code: string; message: string } | null;
  unreadTotal: number;
}

export interface ChatStoreOptions {
  /** Messages per history page (CONTRACT §4: at most 100). */
  pageSize?: number;
  /** A typing indicator goes this long after the last `typing` that said so, if no "stopped" came. */
  typingExpiresMs?: number;
  /** Creates the `client_msg_id` of a send; random by default. */
  newClientMsgId?: () => string;
}

type Listener = () => void;

const EMPTY_LIST: ChatListState = Object.freeze({ chats: [], status: "idle", error: null });
const NO_TYPING: readonly number[] = Object.freeze([]);

interface FailedLoad {
  /** The wait before the retry now scheduled (or the last one run). */
  waitMs: number;
  load: () => Promise<void>;
  timer: ReturnType<typeof setTimeout>;
}

const asApiError = (error: unknown): ChatApiError =>
  error instanceof ChatApiError
    ? error
    : new ChatApiError(0, "client_error", error instanceof Error ? error.message : String(error));

const byActivity = (a: ChatSummary, b: ChatSummary) =>
  b.last_activity_at < a.last_activity_at ? -1 : b.last_activity_at > a.last_activity_at ? 1 : b.id - a.id;

function randomClientMsgId(): string {
  const c = globalThis.crypto;
  if (c?.randomUUID) return c.randomUUID();
  return `${Date.now().toString(36)}-${Math.random().toString(36).slice(2)}`;
}

/** Inserts or replaces `message` in `messages` (oldest first, by id); the same array when nothing changed. */
function upsertMessage(messages: readonly Message[], message: Message): readonly Message[] {
  const at = messages.findIndex((m) => m.id >= message.id);
  if (at === -1) return [...messages, message];
  const found = messages[at];
  if (found?.id === message.id) {
    if (found === message) return messages;
    const next = messages.slice();
    next[at] = message;
    return next;
  }
  return [...messages.slice(0, at), message, ...messages.slice(at)];
}

export class ChatStore {
  readonly client: ChatClient;
  private readonly pageSize: number;
  private readonly typingExpiresMs: number;
  private readonly newClientMsgId: () => string;

  private readonly listeners = new Set<Listener>();
  private lists: Record<"main" | "archived", ChatListState> = { main: EMPTY_LIST, archived: EMPTY_LIST };
  private readonly threads = new Map<number, ThreadState>();
  /** How many views hold each thread open; a thread nobody holds is dropped. */
  private readonly threadHolds = new Map<number, number>();
  private readonly typingByChat = new Map<number, readonly number[]>();
  private readonly typingTimers = new Map<string, ReturnType<typeof setTimeout>>();
  private readonly presence = new Map<number, boolean>();
  private blockedIds: readonly number[] = [];
  private blocksLoaded = false;
  private blockChangesWhileLoading: Map<number, boolean> | undefined;
  private connection: ConnectionState;
  /** The newest message each thread was marked read up to by this page, so that it is not sent twice. */
  private readonly readUpTo = new Map<number, number>();
  /**
   * The latest load of each list and thread: an answer to an older one (a reload overtook it) is dropped,
   * so that a page read before a resync never lands after it.
   */
  private readonly latestLoad = new Map<string, number>();
  private loads = 0;
  /**
   * What was heard while a list or a thread was loading, applied again over its answer (which the server may
   * have read before those changes): a list's changes as replays, a thread's as the messages themselves.
   */
  private readonly heardWhileListLoads = new Map<"main" | "archived", Array<() => void>>();
  private readonly heardWhileThreadLoads = new Map<number, Message[]>();
  /**
   * Loads of a list or a thread that failed for a reason that passes (the network, the server, the rate limit),
   * by load key: read again after a growing wait, or at once when the client is live again, so that a page
   * opened during an outage does not keep an empty or partial view once the network is back.
   */
  private readonly failedLoads = new Map<string, FailedLoad>();
  /** Photo sends uploading or sending, by `client_msg_id`: `discard` aborts them. */
  private readonly photoSends = new Map<string, AbortController>();
  /** The client's event subscriptions while following it; empty when not. */
  private following: Array<() => void> = [];
  private holders = 0;

  constructor(client: ChatClient, options: ChatStoreOptions = {}) {
    this.client = client;
    this.pageSize = options.pageSize ?? 20;
    this.typingExpiresMs = options.typingExpiresMs ?? 5_000;
    this.newClientMsgId = options.newClientMsgId ?? randomClientMsgId;
    this.connection = {
      mode: client.mode,
      warning: null,
      suspended: client.suspended,
      fatal: null,
      unreadTotal: client.unread.total,
    };
  }

  /**
   * Starts following the client's events (a view that shows the store holds it); the release stops following
   * once nobody holds it. A release followed by a hold in the same tick (React's StrictMode runs effects
   * twice) keeps following without a gap.
   */
  retain(): () => void {
    this.holders += 1;
    if (this.following.length === 0) this.follow();
    let released = false;
    return () => {
      if (released) return;
      released = true;
      this.holders -= 1;
      queueMicrotask(() => {
        if (this.holders === 0) this.dispose();
      });
    };
  }

  private follow(): void {
    const client = this.client;
    // What happened while nobody followed: the client's own view of it.
    this.connection = {
      ...this.connection,
      mode: client.mode,
      suspended: client.suspended,
      unreadTotal: client.unread.total,
    };
    this.following = [
      client.on("event", (event) => this.apply(event)),
      client.on("chat", (chat) => this.applyChat(chat)),
      client.on("mode", ({ to }) => {
        // Presence comes only over a live socket (a snapshot on connect): otherwise it is not known.
        if (to !== "live") this.presence.clear();
        this.setConnection({ mode: to });
        // The server is reached again: what failed is read now rather than at its next retry.
        if (to === "live") for (const failed of this.failedLoads.values()) void failed.load();
      }),
      client.on("warning", (warning) => this.setConnection({ warning })),
      client.on("suspended", ({ suspended }) => this.setConnection({ suspended })),
      client.on("fatal", (fatal) => this.setConnection({ fatal })),
      client.on("unread", (unread) => this.applyUnread(unread)),
      client.on("typing", ({ chat_id, user_id, is_typing }) => this.setTypingOf(chat_id, user_id, is_typing)),
      client.on("presence", ({ user_id, online }) => {
        if (this.presence.get(user_id) === online) return;
        this.presence.set(user_id, online);
        this.notify();
      }),
      client.on("resync", () => void this.reloadAll()),
    ];
    this.notify();
  }

  /** Stops following the client (the client itself keeps running: stop it yourself). `retain` follows again. */
  dispose(): void {
    for (const off of this.following.splice(0)) off();
    for (const failed of this.failedLoads.values()) clearTimeout(failed.timer);
    this.failedLoads.clear();
    for (const timer of this.typingTimers.values()) clearTimeout(timer);
    this.typingTimers.clear();
    this.typingByChat.clear();
  }

  subscribe = (listener: Listener): (() => void) => {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  };

  private notify(): void {
    for (const listener of [...this.listeners]) listener();
  }

  // ---------------------------------------------------------------------------------------------------
  // Reads (snapshots)

  getConnection = (): ConnectionState => this.connection;
  getChatList = (archived = false): ChatListState => this.lists[archived ? "archived" : "main"];
  getThread = (chatId: number): ThreadState | undefined => this.threads.get(chatId);
  getTyping = (chatId: number): readonly number[] => this.typingByChat.get(chatId) ?? NO_TYPING;
  /** Whether the user is online, as far as this client heard; undefined before it heard anything. */
  getPresence = (userId: number): boolean | undefined => this.presence.get(userId);
  getBlocked = (): readonly number[] => this.blockedIds;
  /** The chat from a list, or as the client last saw it. */
  getChat(chatId: number): Chat | undefined {
    return this.listEntry(chatId) ?? this.client.getChat(chatId);
  }

  /** The chat's entry in the main list, or the archived one. */
  private listEntry(chatId: number): ChatSummary | undefined {
    return this.lists.main.chats.find((c) => c.id === chatId) ?? this.lists.archived.chats.find((c) => c.id === chatId);
  }

  /**
   * Replaces the chat's entry in each list that holds it with what `change` makes of it; `change` answers
   * undefined to leave an entry as it is. With `resort`, a list that changed is put newest activity first again.
   */
  private updateEntries(chatId: number, change: (entry: ChatSummary) => ChatSummary | undefined, resort = false): void {
    for (const key of ["main", "archived"] as const) {
      const list = this.lists[key];
      const at = list.chats.findIndex((c) => c.id === chatId);
      const entry = list.chats[at];
      const updated = entry && change(entry);
      if (!updated) continue;
      const chats = list.chats.slice();
      chats[at] = updated;
      if (resort) chats.sort(byActivity);
      this.lists = { ...this.lists, [key]: { ...list, chats } };
    }
  }

  // ---------------------------------------------------------------------------------------------------
  // Chat lists

  /** Loads (or reloads) the main list, or the archived one; the list follows events from then on. */
  async loadChats(archived = false): Promise<void> {
    const key = archived ? "archived" : "main";
    const load = this.startLoad(`list:${key}`);
    const heard: Array<() => void> = [];
    this.heardWhileListLoads.set(key, heard);
    this.lists = { ...this.lists, [key]: { ...this.lists[key], status: "loading", error: null } };
    this.notify();
    try {
      const chats = await this.client.listChats({ archived });
      if (!load.isLatest()) return;
      this.failedLoads.delete(`list:${key}`); // its timer was cleared as this load started
      this.heardWhileListLoads.delete(key);
      this.lists = { ...this.lists, [key]: { chats: chats.slice().sort(byActivity), status: "ready", error: null } };
      for (const chat of chats) this.applyPeerRead(chat.id, chat.peer_last_read_message_id ?? 0, false);
      // A chat created, a message or a read receipt heard meanwhile may be newer than the answer.
      for (const replay of heard) replay();
    } catch (error) {
      if (!load.isLatest()) return;
      this.heardWhileListLoads.delete(key);
      const failure = asApiError(error);
      this.lists = { ...this.lists, [key]: { ...this.lists[key], status: "error", error: failure } };
      this.retryLater(`list:${key}`, failure, () => this.loadChats(archived));
    }
    this.notify();
  }

  /** A change to replay over the answer of every list now loading. */
  private replayAfterListLoads(replay: () => void): void {
    for (const heard of this.heardWhileListLoads.values()) heard.push(replay);
  }

  private startLoad(key: string): { isLatest(): boolean } {
    clearTimeout(this.failedLoads.get(key)?.timer); // this load is the retry: its last wait is kept
    const id = ++this.loads;
    this.latestLoad.set(key, id);
    return { isLatest: () => this.latestLoad.get(key) === id };
  }

  /**
   * Reads `key` again later when `error` passes with time: after 1 s, 2 s, 4 s … up to 30 s. No jitter: one
   * read per page at most every second is less than what a polling page asks anyway (every 5 s), and after an
   * outage the reads go when each client is live again, which the client's own reconnect spreads.
   */
  private retryLater(key: string, error: ChatApiError, load: () => Promise<void>): void {
    // An answer (404, 403) or a fault of the page (not the network): a retry would get the same.
    if (!error.retryable || error.code === "client_error" || !this.following.length) {
      this.forgetFailedLoad(key);
      return;
    }
    // Twice the last wait (the first 1 s), at most 30 s; longer when the server asks (Retry-After).
    const waitMs = Math.max(error.retryAfterMs ?? 0, Math.min(30_000, (this.failedLoads.get(key)?.waitMs ?? 500) * 2));
    this.failedLoads.set(key, { waitMs, load, timer: setTimeout(() => void load(), waitMs) });
  }

  private forgetFailedLoad(key: string): void {
    clearTimeout(this.failedLoads.get(key)?.timer);
    this.failedLoads.delete(key);
  }

  /** Opens (or finds) the chat about a listing with its seller; it joins the main list. */
  async openChat(listingId: number, sellerId: number): Promise<Chat> {
    const chat = await this.client.openChat(listingId, sellerId);
    this.applyChat(chat);
    return chat;
  }

  archiveChat(chatId: number): Promise<Chat | undefined> {
    return this.client.archiveChat(chatId);
  }

  unarchiveChat(chatId: number): Promise<Chat | undefined> {
    return this.client.unarchiveChat(chatId);
  }

  // ---------------------------------------------------------------------------------------------------
  // Threads

  /**
   * Holds the thread of `chatId` open: its newest page is loaded, and events keep it current until every
   * holder released it. Returns the release.
   */
  holdThread(chatId: number): () => void {
    this.threadHolds.set(chatId, (this.threadHolds.get(chatId) ?? 0) + 1);
    if (!this.threads.has(chatId)) void this.loadThread(chatId);
    let released = false;
    return () => {
      if (released) return;
      released = true;
      const holds = (this.threadHolds.get(chatId) ?? 1) - 1;
      if (holds > 0) {
        this.threadHolds.set(chatId, holds);
        return;
      }
      this.threadHolds.delete(chatId);
      this.forgetFailedLoad(`thread:${chatId}`);
      // Sends in flight keep their thread: their outcome must still reach the page that comes back to it.
      if (this.threads.get(chatId)?.pending.some((p) => p.status === "sending")) return;
      this.threads.delete(chatId);
      this.notify();
    };
  }

  /** Loads the newest page of a thread, replacing what was there (kept: sends in flight or failed). */
  async loadThread(chatId: number): Promise<void> {
    const load = this.startLoad(`thread:${chatId}`);
    const heard: Message[] = [];
    this.heardWhileThreadLoads.set(chatId, heard);
    const before = this.threads.get(chatId);
    this.setThread(chatId, {
      chatId,
      messages: before?.messages ?? [],
      pending: before?.pending ?? [],
      hasMore: before?.hasMore ?? false,
      status: "loading",
      loadingOlder: false,
      error: null,
      peerLastReadMessageId: before?.peerLastReadMessageId ?? this.peerReadFromLists(chatId),
    });
    try {
      const page = await this.client.api.messages(chatId, { limit: this.pageSize });
      const thread = this.threads.get(chatId);
      if (!thread || !load.isLatest()) return;
      this.failedLoads.delete(`thread:${chatId}`); // its timer was cleared as this load started
      this.heardWhileThreadLoads.delete(chatId);
      // The page replaces what was shown (after a resync the old copies may be stale); what arrived while it
      // was on its way is newer than it, and is kept.
      let messages: readonly Message[] = page.messages.slice().reverse();
      for (const message of heard) messages = upsertMessage(messages, message);
      this.setThread(chatId, { ...thread, messages, hasMore: page.has_more, status: "ready", error: null });
    } catch (error) {
      const thread = this.threads.get(chatId);
      if (!load.isLatest()) return;
      this.heardWhileThreadLoads.delete(chatId);
      if (!thread) return;
      const failure = asApiError(error);
      this.setThread(chatId, { ...thread, status: "error", error: failure });
      if (this.threadHolds.has(chatId)) this.retryLater(`thread:${chatId}`, failure, () => this.loadThread(chatId));
    }
  }

  /** Loads the page before the oldest message shown; nothing when one is loading or none remain. */
  async loadOlder(chatId: number): Promise<void> {
    const thread = this.threads.get(chatId);
    if (!thread || thread.loadingOlder || !thread.hasMore || thread.status !== "ready") return;
    const oldest = thread.messages[0]?.id;
    this.setThread(chatId, { ...thread, loadingOlder: true });
    try {
      const page = await this.client.api.messages(chatId, { before: oldest, limit: this.pageSize });
      const now = this.threads.get(chatId);
      if (!now) return;
      let messages = now.messages;
      for (const message of page.messages) messages = upsertMessage(messages, message);
      this.setThread(chatId, { ...now, messages, hasMore: page.has_more, loadingOlder: false, error: null });
    } catch (error) {
      const now = this.threads.get(chatId);
      if (now) this.setThread(chatId, { ...now, loadingOlder: false, error: asApiError(error) });
    }
  }

  /**
   * Sends `content`: shown at once as pending, replaced by the stored message when the server has it. A send
   * that fails stays as `failed` with its error, for `retry` or `discard`. Resolves with the stored message;
   * rejects as `ChatClient.send` does.
   */
  send(chatId: number, content: string): Promise<Message> {
    const pending: PendingMessage = {
      client_msg_id: this.newClientMsgId(),
      chat_id: chatId,
      content,
      status: "sending",
      error: null,
    };
    this.updatePending(chatId, (list) => [...list, pending]);
    return this.deliver(pending);
  }

  /** Sends a failed message again, with the same `client_msg_id` (so it is never stored twice). */
  retry(chatId: number, clientMsgId: string): Promise<Message> {
    const pending = this.threads.get(chatId)?.pending.find((p) => p.client_msg_id === clientMsgId);
    if (!pending) return Promise.reject(new ChatApiError(0, "not_pending", "no failed send with this client_msg_id"));
    const again: PendingMessage = {
      ...pending,
      status: "sending",
      error: null,
      ...(pending.photos ? { progress: 0 } : {}),
    };
    this.updatePending(chatId, (list) => list.map((p) => (p.client_msg_id === clientMsgId ? again : p)));
    return this.deliver(again);
  }

  /**
   * Sends photos as one message, with `content` as its caption: shown at once as pending with its `photos` and
   * their upload `progress` (0–1), replaced by the stored message (`kind: "image"`) when the server has it. A
   * refusal (a photo the server cannot take: 422 `attachment_invalid`, or storage's) leaves it `failed` with the
   * server's error, for `retry` (the same `client_msg_id`: stored once, and photos that reached storage are not
   * sent again) or `discard`. Files the client's own check refuses (type, size, count) reject at once, with no
   * pending message. Resolves with the stored message.
   */
  sendPhotos(chatId: number, files: readonly Blob[], content = ""): Promise<Message> {
    const refusal = checkPhotos(files, content);
    if (refusal) return Promise.reject(refusal);
    const pending: PendingMessage = {
      client_msg_id: this.newClientMsgId(),
      chat_id: chatId,
      content,
      status: "sending",
      error: null,
      photos: files.slice(),
      progress: 0,
    };
    this.updatePending(chatId, (list) => [...list, pending]);
    return this.deliver(pending);
  }

  /** Forgets a failed send; a photo send still uploading is stopped. */
  discard(chatId: number, clientMsgId: string): void {
    this.photoSends.get(clientMsgId)?.abort();
    this.updatePending(chatId, (list) => list.filter((p) => p.client_msg_id !== clientMsgId));
  }

  /** A photo send's upload progress, in hundredths: a redraw per percent at most. */
  private setProgress(chatId: number, clientMsgId: string, loaded: number, total: number): void {
    const progress = total > 0 ? Math.floor((loaded / total) * 100) / 100 : 1;
    const pending = this.threads.get(chatId)?.pending.find((p) => p.client_msg_id === clientMsgId);
    if (!pending || pending.progress === progress) return;
    this.updatePending(chatId, (list) => list.map((p) => (p === pending ? { ...p, progress } : p)));
  }

  /** Sends text, or photos (uploaded first, abortable by `discard`). */
  private sendPending(pending: PendingMessage): Promise<Message> {
    const { chat_id: chatId, client_msg_id: clientMsgId, content, photos } = pending;
    if (!photos) return this.client.send(chatId, content, { clientMsgId });
    const abort = new AbortController();
    this.photoSends.set(clientMsgId, abort);
    return this.client
      .sendPhotos(chatId, photos, {
        content,
        clientMsgId,
        signal: abort.signal,
        onProgress: ({ loaded, total }) => this.setProgress(chatId, clientMsgId, loaded, total),
      })
      .finally(() => {
        if (this.photoSends.get(clientMsgId) === abort) this.photoSends.delete(clientMsgId);
      });
  }

  private async deliver(pending: PendingMessage): Promise<Message> {
    const { chat_id: chatId, client_msg_id: clientMsgId } = pending;
    try {
      const message = await this.sendPending(pending);
      this.updatePending(chatId, (list) => list.filter((p) => p.client_msg_id !== clientMsgId));
      this.applyMessage(message);
      return message;
    } catch (error) {
      const failed = asApiError(error);
      this.updatePending(chatId, (list) =>
        list.map((p) => (p.client_msg_id === clientMsgId ? { ...p, status: "failed", error: failed } : p)),
      );
      throw failed;
    }
  }

  /** Edits one of this user's messages; the stored result replaces it in its thread. */
  async edit(messageId: number, content: string): Promise<Message> {
    const message = await this.client.api.editMessage(messageId, content);
    this.applyMessage(message);
    return message;
  }

  /** Deletes one of this user's messages (kept as deleted, CONTRACT §4). */
  async remove(messageId: number): Promise<Message> {
    const message = await this.client.api.deleteMessage(messageId);
    this.applyMessage(message);
    return message;
  }

  /**
   * Marks the thread read up to its newest message from someone else; nothing when that is already read.
   * The unread counts follow (the client reads them again).
   */
  async markRead(chatId: number): Promise<void> {
    const me = this.client.userId;
    const newest = this.threads.get(chatId)?.messages.findLast((m) => m.sender_id !== me);
    if (!newest || (this.readUpTo.get(chatId) ?? 0) >= newest.id) return;
    this.readUpTo.set(chatId, newest.id);
    try {
      await this.client.markRead(chatId, newest.id);
    } catch (error) {
      if (this.readUpTo.get(chatId) === newest.id) this.readUpTo.delete(chatId);
      throw error;
    }
  }

  // ---------------------------------------------------------------------------------------------------
  // Typing, blocks

  /** This user is typing in `chatId`, or stopped (the client throttles what goes out). */
  setTyping(chatId: number, isTyping: boolean): void {
    this.client.typing(chatId, isTyping);
  }

  /** Whom this user blocks, read once; `user_blocked` / `user_unblocked` events keep it current after. */
  async loadBlocks(): Promise<void> {
    if (this.blocksLoaded) return;
    this.blocksLoaded = true;
    // Blocks and unblocks heard while the read is on its way are newer than its answer: applied over it.
    const heard = new Map<number, boolean>();
    this.blockChangesWhileLoading = heard;
    try {
      const blocks = await this.client.blocks();
      if (this.blockChangesWhileLoading !== heard) return; // a newer read (after a resync) has the last word
      const blocked = new Set(blocks.map((b) => b.user_id));
      for (const [userId, isBlocked] of heard) {
        if (isBlocked) blocked.add(userId);
        else blocked.delete(userId);
      }
      this.blockedIds = [...blocked];
      this.notify();
    } catch (error) {
      this.blocksLoaded = false;
      throw error;
    } finally {
      if (this.blockChangesWhileLoading === heard) this.blockChangesWhileLoading = undefined;
    }
  }

  async block(userId: number): Promise<void> {
    await this.client.block(userId);
    this.setBlocked(userId, true);
  }

  async unblock(userId: number): Promise<void> {
    await this.client.unblock(userId);
    this.setBlocked(userId, false);
  }

  // ---------------------------------------------------------------------------------------------------
  // Following the client

  private setConnection(change: Partial<ConnectionState>): void {
    const next = { ...this.connection, ...change };
    if ((Object.keys(change) as Array<keyof ConnectionState>).every((k) => next[k] === this.connection[k])) return;
    this.connection = next;
    this.notify();
  }

  private setThread(chatId: number, thread: ThreadState): void {
    this.threads.set(chatId, thread);
    this.notify();
  }

  private updatePending(chatId: number, change: (list: readonly PendingMessage[]) => readonly PendingMessage[]) {
    const thread = this.threads.get(chatId);
    // A send into a thread nobody holds open is not drawn anywhere: its promise tells the caller.
    if (!thread) return;
    this.setThread(chatId, { ...thread, pending: change(thread.pending) });
  }

  private apply(event: ChatEvent): void {
    switch (event.type) {
      case "new_message":
      case "message_edited":
      case "message_deleted": {
        const { message } = event;
        // Someone whose message arrived has stopped typing it.
        if (event.type === "new_message" && message.sender_id !== null) {
          this.setTypingOf(message.chat_id, message.sender_id, false);
        }
        this.applyMessage(message, event.type === "new_message");
        return;
      }
      case "message_read":
        if (event.read_by !== this.client.userId) this.applyPeerRead(event.chat_id, event.message_id);
        return;
      case "chat_created":
      case "chat_updated":
        this.applyChat(event.chat);
        return;
      case "user_blocked":
        this.setBlocked(event.user_id, true);
        return;
      case "user_unblocked":
        this.setBlocked(event.user_id, false);
        return;
    }
  }

  /** A stored message: into its thread (replacing its pending twin) and its chat's list entry. */
  private applyMessage(message: Message, isNew = false): void {
    this.heardWhileThreadLoads.get(message.chat_id)?.push(message);
    this.replayAfterListLoads(() => this.applyMessage(message, isNew));
    const thread = this.threads.get(message.chat_id);
    if (thread) {
      const messages = upsertMessage(thread.messages, message);
      const pending = message.client_msg_id
        ? thread.pending.filter((p) => p.client_msg_id !== message.client_msg_id)
        : thread.pending;
      if (messages !== thread.messages || pending.length !== thread.pending.length) {
        this.threads.set(message.chat_id, { ...thread, messages, pending });
      }
    }
    // Its last activity may move: the list is put newest first again.
    this.updateEntries(
      message.chat_id,
      (entry) => {
        if (entry.last_message && message.id < entry.last_message.id) return undefined;
        const newer = isNew && message.created_at > entry.last_activity_at;
        return {
          ...entry,
          last_message: message,
          last_activity_at: newer ? message.created_at : entry.last_activity_at,
        };
      },
      true,
    );
    // A message in a chat no list holds yet (new, or an archived one brought back): its list is read again.
    if (
      isNew &&
      this.lists.main.status === "ready" &&
      !this.lists.main.chats.some((c) => c.id === message.chat_id) &&
      !this.lists.archived.chats.some((c) => c.id === message.chat_id && c.archived)
    ) {
      void this.loadChats(false);
    }
    this.notify();
  }

  /** A chat changed (created, listing, peer, archived): its entry moves to the list it now belongs to. */
  private applyChat(chat: Chat): void {
    this.replayAfterListLoads(() => this.applyChat(chat));
    const existing = this.listEntry(chat.id);
    // The chat's own fields win; a list entry's last message and counts stay (the client's copy of a chat
    // may be a summary from an older list: its last message is not news).
    const {
      last_message: _last,
      unread_count: _unread,
      peer_last_read_message_id: _read,
      ...fields
    } = chat as Partial<ChatSummary> & Chat;
    const entry: ChatSummary = {
      last_message: null,
      unread_count: this.client.unread.chats[String(chat.id)] ?? 0,
      peer_last_read_message_id: null,
      ...existing,
      ...fields,
    };
    const without = (chats: readonly ChatSummary[]) => chats.filter((c) => c.id !== chat.id);
    const place = (key: "main" | "archived", belongs: boolean) => {
      const list = this.lists[key];
      // A list never loaded stays empty: its first load will have the chat.
      if (list.status === "idle") return list;
      const chats = without(list.chats);
      return { ...list, chats: belongs ? [...chats, entry].sort(byActivity) : chats };
    };
    this.lists = { main: place("main", !chat.archived), archived: place("archived", chat.archived) };
    this.notify();
  }

  private applyUnread(unread: { total: number; chats: Record<string, number> }): void {
    for (const key of ["main", "archived"] as const) {
      const list = this.lists[key];
      let changed = false;
      const chats = list.chats.map((c) => {
        const count = unread.chats[String(c.id)] ?? 0;
        if (count === c.unread_count) return c;
        changed = true;
        return { ...c, unread_count: count };
      });
      if (changed) this.lists = { ...this.lists, [key]: { ...list, chats } };
    }
    this.connection = { ...this.connection, unreadTotal: unread.total };
    this.notify();
  }

  /** The other participant read up to `messageId` (an event, or a list that says so). */
  private applyPeerRead(chatId: number, messageId: number, notify = true): void {
    this.replayAfterListLoads(() => this.applyPeerRead(chatId, messageId, false));
    const thread = this.threads.get(chatId);
    if (thread && (thread.peerLastReadMessageId ?? 0) < messageId) {
      this.threads.set(chatId, { ...thread, peerLastReadMessageId: messageId });
    }
    this.updateEntries(chatId, (entry) =>
      (entry.peer_last_read_message_id ?? 0) < messageId
        ? { ...entry, peer_last_read_message_id: messageId }
        : undefined,
    );
    if (notify) this.notify();
  }

  private peerReadFromLists(chatId: number): number | null {
    return this.listEntry(chatId)?.peer_last_read_message_id ?? null;
  }

  private setTypingOf(chatId: number, userId: number, isTyping: boolean): void {
    const key = `${chatId}:${userId}`;
    const timer = this.typingTimers.get(key);
    if (timer !== undefined) clearTimeout(timer);
    this.typingTimers.delete(key);
    const now = this.typingByChat.get(chatId) ?? NO_TYPING;
    const next = now.filter((id) => id !== userId);
    if (isTyping) {
      next.push(userId);
      // The "stopped" may never come (the other side closed its tab): the indicator expires by itself.
      this.typingTimers.set(
        key,
        setTimeout(() => this.setTypingOf(chatId, userId, false), this.typingExpiresMs),
      );
    }
    if (next.length === now.length && next.every((id, i) => id === now[i])) return;
    if (next.length === 0) this.typingByChat.delete(chatId);
    else this.typingByChat.set(chatId, next);
    this.notify();
  }

  private setBlocked(userId: number, blocked: boolean): void {
    this.blockChangesWhileLoading?.set(userId, blocked);
    const has = this.blockedIds.includes(userId);
    if (has === blocked) return;
    this.blockedIds = blocked ? [...this.blockedIds, userId] : this.blockedIds.filter((id) => id !== userId);
    this.notify();
  }

  /** After a resync the events in between are gone: every list and thread that was loaded is read again. */
  private async reloadAll(): Promise<void> {
    // Ids may have been renumbered: what this page marked read says nothing about the new stream.
    this.readUpTo.clear();
    const loads: Array<Promise<void>> = [];
    for (const archived of [false, true]) {
      if (this.getChatList(archived).status !== "idle") loads.push(this.loadChats(archived));
    }
    for (const chatId of this.threads.keys()) loads.push(this.loadThread(chatId));
    if (this.blocksLoaded) {
      this.blocksLoaded = false;
      loads.push(this.loadBlocks().catch(() => {}));
    }
    await Promise.all(loads);
  }
}
