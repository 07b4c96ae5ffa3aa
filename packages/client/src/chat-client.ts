import { AttachmentUrls } from "./attachment-urls.ts";
import { backoff, randomId } from "./backoff.ts";
import { Emitter } from "./emitter.ts";
import { checkPhotos, PhotoUploads, withFileNames } from "./photos.ts";
import type { Attachment, Chat, ChatEvent, ChatSummary, Message, ServerFrame } from "./protocol/index.ts";
import { CloseCode, ErrorCode, Limits } from "./protocol/index.ts";
import { ChatApi, ChatApiError, type ReportRequest, sendAbortedError } from "./rest.ts";
import { browserTabEnvironment, type TabEnvironment, TabLink, type TabMessage } from "./tab-link.ts";
import type {
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
import { putWithFetch, putWithXhr, type XMLHttpRequestFactory } from "./upload.ts";

/** What the leading tab says to the others (besides its mode). */
const RELAYED_TO_TABS = new Set<keyof ChatClientEvents>([
  "event",
  "typing",
  "presence",
  "unread",
  "warning",
  "suspended",
  "resync",
]);

export const POLLING_WARNING = "Real-time updates are unavailable: refreshing every 5 seconds";

const OPEN = 1;
/** A socket that stayed live this long was not a "drop": the count of drops in a row starts again. */
const STABLE_AFTER_MS = 10_000;
/** Closes a socket the client gave up on (no greeting in time, no answer to a ping): an application code. */
const CLOSE_DEAD = 4000;
/**
 * The REST status of a WebSocket `error` code, so that a send retries what REST would retry: `internal_error`
 * ("could not handle this frame: retry") and `shutting_down` are retried, not rejected as a 400.
 */
const SEND_ERROR_STATUS: Record<string, number> = {
  // One of the two blocks the other (CONTRACT §10): the page tells it apart from a bad request.
  blocked: 403,
  // The platform suspended this user, or removed the chat's listing (CONTRACT §8): refused, never retried.
  user_suspended: 403,
  listing_closed: 409,
  forbidden: 403,
  not_found: 404,
  rate_limited: 429,
  storage_unavailable: 503,
  shutting_down: 503,
  internal_error: 500,
};

const defaultTimers: Timers = {
  setTimeout: (fn, ms) => globalThis.setTimeout(fn, ms),
  clearTimeout: (handle) => globalThis.clearTimeout(handle as ReturnType<typeof setTimeout>),
  now: () => Date.now(),
};

function defaultWebSocket(): WebSocketFactory {
  return (url) => {
    const Ctor = (globalThis as { WebSocket?: new (url: string) => WebSocketLike }).WebSocket;
    if (!Ctor) throw new Error("no WebSocket in this environment: pass options.webSocket");
    return new Ctor(url);
  };
}

interface EventTargetLike {
  addEventListener(type: string, listener: () => void): void;
  removeEventListener(type: string, listener: () => void): void;
}

/** The browser's XMLHttpRequest, when there is one. */
function browserXhr(): XMLHttpRequestFactory | undefined {
  const Ctor = (globalThis as { XMLHttpRequest?: new () => ReturnType<XMLHttpRequestFactory> }).XMLHttpRequest;
  return Ctor && (() => new Ctor());
}

/** The page's `online`/`offline` (window) and visibility (document); nothing outside a browser. */
function browserConnectivity(): ConnectivitySignals {
  const g = globalThis as { window?: EventTargetLike; document?: EventTargetLike & { visibilityState?: string } };
  const listen = (target: EventTargetLike | undefined, type: string, listener: () => void, when = () => true) => {
    if (!target) return () => {};
    const handler = () => {
      if (when()) listener();
    };
    target.addEventListener(type, handler);
    return () => target.removeEventListener(type, handler);
  };
  return {
    onOnline: (listener) => listen(g.window, "online", listener),
    onOffline: (listener) => listen(g.window, "offline", listener),
    onVisible: (listener) =>
      listen(g.document, "visibilitychange", listener, () => g.document?.visibilityState === "visible"),
  };
}

/** The gateway as `baseUrl` names it; an empty base means the page's own origin ("" outside a page). */
function gatewayBase(baseUrl: string): string {
  return baseUrl || (globalThis as { location?: { origin: string } }).location?.origin || "";
}

/**
 * The WebSocket URL of a ws-token's `ws_url` (a path, e.g. `/ws/chat`, or `/chat/ws/chat` under the gateway's
 * BASE_PATH): on the gateway's origin (its own path, a BASE_PATH, is in `ws_url` already), `http` → `ws`.
 */
function socketUrl(baseUrl: string, wsUrl: string): string {
  const base = gatewayBase(baseUrl);
  const url = base ? new URL(wsUrl, base).href : wsUrl;
  return url.replace(/^http/, "ws");
}

interface PendingAck {
  resolve(message: Message): void;
  reject(error: ChatApiError): void;
}

/** A send waiting in the outbox: they leave in the order they were made, one at a time. */
interface Outgoing {
  chatId: number;
  content: string;
  clientMsgId: string;
  /** Upload ids of a photo message: it goes over REST, as the server takes a moment to process photos. */
  attachments?: readonly string[];
  /** `timers.now()` after which it is given up. */
  deadline: number;
  /** Set once it was answered, aborted or expired: it is not tried again. */
  settled: boolean;
  resolve(message: Message): void;
  reject(error: ChatApiError): void;
}

/**
 * The browser client of listings-chat (CONTRACT §7). One state machine, changed only by `transition`:
 *
 *   connecting ──connected frame──▶ live ──close 1001──▶ connecting (after a jitter of up to 3 s)
 *        │                          │──other close, or a ping unanswered──▶ connecting (full-jitter backoff)
 *        │                          └─… after N drops in a row ──▶ polling
 *        │──a first connect fails, or reconnecting fails N times or for 10 s──▶ polling
 *        └──no `connected` frame within the connect deadline: that attempt failed
 *   polling ──WebSocket retried after 2 s, 4 s … up to every 30 s, and at once on online / tab visible──▶ live
 *   any ──401 / stop()──▶ offline
 *
 * Every event goes through `deliver`, which keeps the cursor: what it has passed is dropped, so an
 * event that both the socket and a poll bring reaches the page once, in order.
 *
 * @example
 * const client = new ChatClient({
 *   baseUrl: "https://chat.example.com",
 *   getAccessToken: async ({ refresh }) => (refresh ? await fetchNewToken() : currentToken),
 * });
 * client.on("event", (event) => show(event));
 * client.on("mode", ({ to }) => showConnection(to));
 * client.start();
 * await client.send(chatId, "Is it still available?");
 */
export class ChatClient extends Emitter<ChatClientEvents> {
  readonly api: ChatApi;
  private state: ChatClientMode = "offline";
  private cursor: number | undefined;
  private unreadCounts: ChatClientEvents["unread"] = { total: 0, chats: {} };
  private socket: WebSocketLike | undefined;
  /** Bumped by every socket attempt, by an attempt given up, and by stop(): callbacks of an older one do nothing. */
  private attempt = 0;
  /** Drops in a row of sockets that did not stay up STABLE_AFTER_MS. */
  private drops = 0;
  /** Failed connect attempts since the last drop, and when that drop happened. */
  private failedReconnects = 0;
  private reconnectingSince = 0;
  /** Whether the client was live since start(): a first connect that fails means a restricted network. */
  private everLive = false;
  /** Refused first connects tried again on WebSocket (one, before polling). */
  private refusedRetries = 0;
  /** The step of the WebSocket retry ladder while polling. */
  private retryStep = 0;
  private stopped = true;
  private warned = false;
  /** `timers.now()` of the last frame received on the live socket, and of the ping sent since, if any. */
  private lastFrameAt = 0;
  private pingSentAt: number | undefined;
  private lastUnreadAt = Number.NEGATIVE_INFINITY;
  private readonly timers: Timers;
  private readonly webSocket: WebSocketFactory;
  private readonly random: () => number;
  private readonly connectivity: ConnectivitySignals;
  private unsubscribe: Array<() => void> = [];
  private readonly settings: Required<
    Omit<
      ChatClientOptions,
      | "baseUrl"
      | "getAccessToken"
      | "lastEventId"
      | "webSocket"
      | "fetch"
      | "timers"
      | "random"
      | "connectivity"
      | "userId"
      | "shareAcrossTabs"
      | "tabEnvironment"
      | "xmlHttpRequest"
    >
  >;
  private reconnectTimer: unknown;
  private pollTimer: unknown;
  private retryTimer: unknown;
  private stableTimer: unknown;
  private unreadTimer: unknown;
  private connectTimer: unknown;
  private heartbeatTimer: unknown;
  private degradeTimer: unknown;
  private polling = false;
  /** Bumped by every new polling loop: a poll still in flight from an earlier polling period then stops. */
  private pollRun = 0;
  private readonly pendingAcks = new Map<string, PendingAck>();
  private readonly outbox: Outgoing[] = [];
  private draining = false;
  /** Waits of the outbox before its next try: stop(), an abort or new connectivity wake them. */
  private readonly sendWaits = new Map<unknown, () => void>();
  /** Per chat: the typing state last sent, and when. */
  private readonly typingSent = new Map<number, { typing: boolean; at: number }>();
  /** Who is signed in: the option, then the `connected` frame. */
  private signedInUserId: number | undefined;
  /**
   * The chats the client has seen (lists, opens, `chat_created`, `chat_updated`), kept in step with the
   * events, so that a `new_message` can bring an archived one back (CONTRACT §8).
   */
  private readonly knownChats = new Map<number, Chat>();
  private suspendedState = false;

  private readonly baseUrl: string;

  // ── one connection for the user's tabs (`shareAcrossTabs`, tab-link.ts) ─────────────────────
  /** The tabs' name for this user and gateway, when sharing; undefined: this tab connects on its own. */
  private readonly tabName: string | undefined;
  private readonly tabEnvironment: TabEnvironment | undefined;
  private tabs: TabLink | undefined;
  /** Another tab leads: this one hears events from it and sends over REST. */
  private following = false;
  /** Relayed events held back while this tab reads what it missed (REST), delivered after. */
  private catchingUp: ChatEvent[] | undefined;
  /** Bumped by start() and stop(): a catch-up of an earlier run stops instead of touching this one's state. */
  private tabRun = 0;
  /** What the leading tab last heard of each person's presence, for a tab that opens later. */
  private readonly presenceHeard = new Map<number, boolean>();
  private suspendedMessage: string | null = null;

  private readonly photos: PhotoUploads;
  private readonly attachmentUrls: AttachmentUrls;

  constructor(options: ChatClientOptions) {
    super();
    this.cursor = options.lastEventId;
    this.timers = options.timers ?? defaultTimers;
    this.webSocket = options.webSocket ?? defaultWebSocket();
    this.random = options.random ?? Math.random;
    this.connectivity = options.connectivity ?? browserConnectivity();
    const fetchImpl = options.fetch ?? globalThis.fetch.bind(globalThis);
    this.api = new ChatApi(options.baseUrl, options.getAccessToken, fetchImpl);
    this.baseUrl = options.baseUrl;
    // A page (or a test) that gave its own fetch has every request go through it, photos too.
    const xhr = options.xmlHttpRequest === undefined && !options.fetch ? browserXhr() : options.xmlHttpRequest;
    this.photos = new PhotoUploads(this.api, xhr ? putWithXhr(xhr) : putWithFetch(fetchImpl));
    this.attachmentUrls = new AttachmentUrls(this.api, () => this.timers.now());
    if (options.shareAcrossTabs) {
      if (options.userId === undefined) {
        throw new Error("shareAcrossTabs needs userId: the tabs of one user share one connection");
      }
      this.tabName = `listings-chat:${gatewayBase(options.baseUrl)}:${options.userId}`;
      this.tabEnvironment = options.tabEnvironment ?? browserTabEnvironment();
    }
    this.signedInUserId = options.userId;
    this.settings = {
      pollIntervalMs: options.pollIntervalMs ?? 5_000,
      wsRetryFirstMs: options.wsRetryFirstMs ?? 2_000,
      wsRetryIntervalMs: options.wsRetryIntervalMs ?? 30_000,
      dropsBeforePolling: options.dropsBeforePolling ?? 3,
      reconnectingMaxMs: options.reconnectingMaxMs ?? 10_000,
      backoffMinMs: options.backoffMinMs ?? 500,
      backoffMaxMs: options.backoffMaxMs ?? 8_000,
      goingAwayJitterMs: options.goingAwayJitterMs ?? 3_000,
      refusedRetryMs: options.refusedRetryMs ?? 2_000,
      connectTimeoutMs: options.connectTimeoutMs ?? 8_000,
      heartbeatIdleMs: options.heartbeatIdleMs ?? 20_000,
      heartbeatTimeoutMs: options.heartbeatTimeoutMs ?? 10_000,
      ackTimeoutMs: options.ackTimeoutMs ?? 10_000,
      sendMaxAgeMs: options.sendMaxAgeMs ?? 60_000,
      unreadMinIntervalMs: options.unreadMinIntervalMs ?? 1_000,
    };
  }

  get mode(): ChatClientMode {
    return this.state;
  }

  /** The id of the last event handed to the page; store it to resume after a reload. */
  get lastEventId(): number {
    return this.cursor ?? 0;
  }

  get unread(): ChatClientEvents["unread"] {
    return this.unreadCounts;
  }

  /** Who is signed in: the `userId` option until the first `connected` frame says it; undefined before either. */
  get userId(): number | undefined {
    return this.signedInUserId;
  }

  /** Whether the platform suspended this user, as far as the client knows (see the `suspended` event). */
  get suspended(): boolean {
    return this.suspendedState;
  }

  /** The chat as the client last saw it (a list, an open, an event), or undefined. */
  getChat(chatId: number): Chat | undefined {
    return this.knownChats.get(chatId);
  }

  /**
   * The user's chats, newest activity first (CONTRACT §4, §8): those not archived, or with
   * `{archived: true}` the archived ones. The client keeps them, to follow them through events.
   */
  async listChats(options: { archived?: boolean } = {}): Promise<ChatSummary[]> {
    const chats = await this.api.listChats(options);
    for (const chat of chats) this.knownChats.set(chat.id, chat);
    return chats;
  }

  /** Opens (or finds) the chat about `listingId` with its seller, as the buyer (403 `user_suspended`, 409 `listing_closed`). */
  async openChat(listingId: number, sellerId: number): Promise<Chat> {
    const chat = await this.api.openChat(listingId, sellerId);
    this.knownChats.set(chat.id, chat);
    return chat;
  }

  /**
   * Archives the chat for this user only (204): it leaves their chat list until someone else writes in it.
   * Resolves with the chat as it is now (also emitted as `chat`; the server's `chat_updated` follows on
   * every device of this user).
   */
  archiveChat(chatId: number): Promise<Chat | undefined> {
    return this.setArchived(chatId, true);
  }

  /** Brings an archived chat back to the list (204); as `archiveChat`. */
  unarchiveChat(chatId: number): Promise<Chat | undefined> {
    return this.setArchived(chatId, false);
  }

  private async setArchived(chatId: number, archived: boolean): Promise<Chat | undefined> {
    await (archived ? this.api.archiveChat(chatId) : this.api.unarchiveChat(chatId));
    const known = this.knownChats.get(chatId);
    if (!known) return undefined;
    if (known.archived === archived) return known;
    const chat = { ...known, archived };
    this.knownChats.set(chatId, chat);
    this.emit("chat", chat);
    return chat;
  }

  start(): void {
    if (!this.stopped) return;
    this.stopped = false;
    this.drops = 0;
    this.everLive = false;
    this.refusedRetries = 0;
    this.retryStep = 0;
    this.unsubscribe = [
      this.connectivity.onOnline(() => this.retryNow()),
      // The link may be gone with the socket still "open": ask the server, and know within the ping timeout.
      this.connectivity.onOffline(() => this.probe()),
      // Timers of a background tab are throttled: check what they would have checked.
      this.connectivity.onVisible(() => this.retryNow()),
    ];
    if (this.tabName && this.tabEnvironment) {
      // Another tab may lead: follow it until this one holds the lock (at once, when it is the only tab).
      this.following = true;
      this.tabs = new TabLink(
        this.tabName,
        { onLead: () => this.lead(), onMessage: (message) => this.onTabMessage(message) },
        this.tabEnvironment,
      );
      this.tabRun += 1;
      this.mirror("connecting");
      this.tabs.start();
      void this.catchUp(this.tabRun);
      return;
    }
    this.transition("connecting");
  }

  stop(): void {
    if (this.stopped) return;
    this.stopped = true;
    for (const unsubscribe of this.unsubscribe.splice(0)) unsubscribe();
    // The lock goes to the next tab, which connects from where the events it heard end.
    this.tabs?.stop();
    this.tabs = undefined;
    this.following = false;
    this.catchingUp = undefined;
    this.tabRun += 1;
    this.presenceHeard.clear();
    this.transition("offline");
  }

  /**
   * Tries WebSocket now ("retry now" on the page's banner, or the network is back): while polling or
   * waiting to reconnect, a new attempt starts at once; while live, the socket is checked with a ping if
   * it has been quiet. Sends waiting to be tried again are tried now.
   */
  retryNow(): void {
    if (this.stopped) return;
    this.wakeSends();
    if (this.following) {
      this.tabs?.post({ kind: "retry" });
      return;
    }
    if (this.state === "live") {
      this.probe(this.settings.heartbeatIdleMs);
      return;
    }
    if (this.state === "polling") {
      // Suspended: the server would close the socket again with 4003; the 30 s retry finds the end of it.
      if (this.suspendedState) return;
      this.retryStep = 0;
      this.startRetry();
      return;
    }
    if (this.state === "connecting" && this.reconnectTimer !== undefined) {
      this.cancel("reconnectTimer");
      void this.openSocket();
    }
  }

  /**
   * Sends a message and resolves with it once stored. Sends leave in the order they were made, one at a
   * time; each is retried (over the socket while live, else over REST) with the same `client_msg_id`
   * until the server stores it, so it is never stored twice. Rejects on a refusal that a retry cannot fix
   * (validation, not a participant, signed out), when it was not stored within `sendMaxAgeMs`
   * (`send_expired`), or when its signal aborts (`send_aborted`): the page can then offer to retry it
   * (the same `clientMsgId`) or discard it.
   */
  send(chatId: number, content: string, options: string | SendOptions = {}): Promise<Message> {
    return this.enqueue(chatId, content, typeof options === "string" ? { clientMsgId: options } : options);
  }

  /**
   * Sends photos (JPEG, PNG or WebP, at most 10 of at most 10 MiB each) as one message, with `content` as its
   * caption, and resolves with it once stored (`kind: "image"`, its `attachments` processed by the server).
   * The files are checked first (400 `validation_failed`, before any request), sent straight to storage, three
   * at a time (`onProgress` sums their bytes), then the message goes through the outbox as `send` does, over
   * REST. Rejects as `send`, and with the server's refusal of a photo (422 `attachment_invalid`, its message
   * says which and why) or the storage's (`upload_failed`). A retry with the same `clientMsgId` is stored once,
   * and sends again only the photos that did not reach storage.
   *
   * @example
   * const message = await client.sendPhotos(chatId, [...input.files], {
   *   content: "the scratch on the left side",
   *   onProgress: ({ loaded, total }) => (bar.value = loaded / total),
   * });
   */
  async sendPhotos(chatId: number, files: readonly Blob[], options: SendPhotosOptions = {}): Promise<Message> {
    const { content = "", clientMsgId = randomId(), onProgress, signal } = options;
    if (this.stopped) throw new ChatApiError(0, "client_stopped", "the client is stopped: start it before sending");
    const refusal = checkPhotos(files, content);
    if (refusal) throw refusal;
    if (signal?.aborted) throw sendAbortedError();
    const attachments = await this.photos.upload(files, clientMsgId, onProgress, signal);
    try {
      const message = await this.enqueue(chatId, content, { clientMsgId, signal, attachments });
      this.photos.forget(files);
      return message;
    } catch (error) {
      // Refused photos (gone after 24 h, say) are sent again on a retry.
      if (error instanceof ChatApiError && error.code === ErrorCode.attachmentInvalid) {
        this.photos.forget(files);
        throw withFileNames(error, files, attachments);
      }
      throw error;
    }
  }

  /**
   * A URL of the photo (or with `thumb` its thumbnail, at most 320 px) for an `<img src>`: short-lived and
   * signed, so it needs no credentials. Kept per photo and size until 80 % of its life, so asking again (each
   * time a thread is drawn) costs nothing; 404 `not_found` for someone who is not in the chat.
   */
  attachmentUrl(attachment: Pick<Attachment, "id">, options: { thumb?: boolean } = {}): Promise<string> {
    return this.attachmentUrls.get(attachment, options.thumb ?? false);
  }

  private enqueue(
    chatId: number,
    content: string,
    options: SendOptions & { attachments?: readonly string[] },
  ): Promise<Message> {
    const { clientMsgId = randomId(), maxAgeMs = this.settings.sendMaxAgeMs, signal, attachments } = options;
    return new Promise<Message>((resolve, reject) => {
      if (this.stopped) {
        reject(new ChatApiError(0, "client_stopped", "the client is stopped: start it before sending"));
        return;
      }
      const item: Outgoing = {
        chatId,
        content,
        clientMsgId,
        attachments,
        deadline: this.timers.now() + maxAgeMs,
        settled: false,
        resolve,
        reject,
      };
      if (signal?.aborted) return this.settle(item, sendAbortedError());
      signal?.addEventListener("abort", () => {
        this.settle(item, sendAbortedError());
        this.wakeSends();
      });
      this.outbox.push(item);
      void this.drainOutbox();
    });
  }

  /**
   * Tells the other participant that this user is typing, or stopped (live only). A repeated "typing" is
   * sent at most once per 2 s per chat; a change of state always goes out, and "stopped" only after a
   * "typing" that went out.
   */
  typing(chatId: number, isTyping: boolean): void {
    if (this.following) {
      this.tabs?.post({ kind: "typing", chatId, isTyping });
      return;
    }
    const socket = this.socket;
    if (this.state !== "live" || !socket || socket.readyState !== OPEN) return;
    const now = this.timers.now();
    const last = this.typingSent.get(chatId);
    if (isTyping && last?.typing && now - last.at < Limits.typingIntervalMs) return;
    if (!isTyping && !last?.typing) return;
    this.typingSent.set(chatId, { typing: isTyping, at: now });
    socket.send(JSON.stringify({ type: "typing", chat_id: chatId, is_typing: isTyping }));
  }

  /** Marks everything up to `messageId` read (REST: it answers, and works in every mode). */
  async markRead(chatId: number, messageId: number): Promise<void> {
    const result = await this.api.markRead(chatId, messageId);
    const chats = { ...this.unreadCounts.chats };
    const before = chats[String(chatId)] ?? 0;
    if (result.unread_count > 0) chats[String(chatId)] = result.unread_count;
    else delete chats[String(chatId)];
    this.setUnread({ total: this.unreadCounts.total - before + result.unread_count, chats });
  }

  /**
   * Blocks `userId` (CONTRACT §10): neither can send to the other or open a chat with the other, and
   * their presence and typing stop both ways. This user's devices hear `user_blocked` as an event.
   */
  block(userId: number): Promise<void> {
    return this.api.block(userId);
  }

  unblock(userId: number): Promise<void> {
    return this.api.unblock(userId);
  }

  /** Whom this user blocks, the most recently blocked first. */
  blocks(): Promise<{ user_id: number; created_at: string }[]> {
    return this.api.blocks();
  }

  /** Reports a message, a chat or a user to the platform; the same report again answers the same id. */
  report(report: ReportRequest): Promise<{ id: number }> {
    return this.api.report(report);
  }

  /** The one place where the mode changes, and with it the timers and sockets that belong to each mode. */
  private transition(to: ChatClientMode, reconnectDelayMs = 0): void {
    const from = this.state;
    this.cancel("reconnectTimer");
    if (to !== "polling") this.cancel("pollTimer");
    if (to !== "polling") this.polling = false;
    if (to !== "connecting") this.cancel("degradeTimer");
    if (to === "live" || to === "offline") this.cancel("retryTimer");
    if (to !== "live") this.cancel("heartbeatTimer");
    if (to === "offline") {
      this.attempt += 1;
      this.cancel("connectTimer");
      this.cancel("stableTimer");
      this.cancel("unreadTimer");
      this.closeSocket(1000, "client stopped");
      this.rejectPendingAcks(new ChatApiError(0, "client_stopped", "the client stopped"));
      for (const item of this.outbox.splice(0)) {
        this.settle(
          item,
          new ChatApiError(0, "client_stopped", "the client was stopped before the message was stored"),
        );
      }
      this.wakeSends();
    }
    this.state = to;
    if (from !== to) this.emit("mode", { from, to });

    if (to === "connecting" && reconnectDelayMs === 0) void this.openSocket();
    if (to === "connecting" && reconnectDelayMs > 0) {
      this.reconnectTimer = this.timers.setTimeout(() => {
        this.reconnectTimer = undefined;
        if (this.state === "connecting") void this.openSocket();
      }, reconnectDelayMs);
    }
    if (to === "polling") {
      this.setWarning(true);
      if (!this.polling) {
        this.polling = true;
        void this.poll(++this.pollRun);
      }
      if (from !== "polling") {
        this.retryStep = 0;
        this.scheduleRetry();
      }
    }
    if (to === "live") {
      this.everLive = true;
      this.failedReconnects = 0;
      this.retryStep = 0;
      this.setWarning(false);
      this.refreshUnreadSoon();
      this.scheduleHeartbeat();
      // Sends that waited for a better transport go now.
      this.wakeSends();
    }
  }

  private async openSocket(): Promise<void> {
    const attempt = ++this.attempt;
    // A socket of an earlier attempt that never greeted is given up for this one.
    if (this.state !== "live") this.closeSocket(1000, "a newer attempt");
    this.cancel("connectTimer");
    let greeted = false;
    // The deadline covers the ws-token request too: a network that swallows requests fails the attempt.
    this.connectTimer = this.timers.setTimeout(() => {
      this.connectTimer = undefined;
      if (attempt !== this.attempt || greeted) return;
      this.attempt += 1;
      this.closeSocket(CLOSE_DEAD, "no connected frame in time");
      this.connectFailed("hung");
    }, this.settings.connectTimeoutMs);
    let url: string;
    try {
      const ticket = await this.api.wsToken();
      const after = this.cursor === undefined ? "" : `&after=${this.cursor}`;
      url = `${socketUrl(this.baseUrl, ticket.ws_url)}?token=${encodeURIComponent(ticket.token)}${after}`;
    } catch (error) {
      if (attempt !== this.attempt || this.stopped) return;
      this.cancel("connectTimer");
      if (error instanceof ChatApiError && error.status === 401) return this.fail(error);
      // 429 or 503 with Retry-After: the server is there and asks to wait; without one, it may be the network.
      const retryAfterMs = error instanceof ChatApiError ? error.retryAfterMs : undefined;
      return this.connectFailed(retryAfterMs === undefined ? "unreachable" : "refused", retryAfterMs);
    }
    if (attempt !== this.attempt || this.stopped) return;
    let socket: WebSocketLike;
    try {
      socket = this.webSocket(url);
    } catch {
      this.cancel("connectTimer");
      return this.connectFailed("unreachable");
    }
    this.socket = socket;
    socket.onmessage = (message) => {
      if (attempt !== this.attempt) return;
      this.lastFrameAt = this.timers.now();
      this.pingSentAt = undefined;
      const frame = this.parse(message.data);
      if (!frame) return;
      if (frame.type === "connected") {
        greeted = true;
        this.signedInUserId = frame.user_id;
        this.cancel("connectTimer");
        this.cursor ??= frame.last_event_id;
        this.resyncIfBehind(frame.last_event_id);
        this.cancel("stableTimer");
        this.stableTimer = this.timers.setTimeout(() => {
          this.stableTimer = undefined;
          this.drops = 0;
        }, STABLE_AFTER_MS);
        // The server's own check: a socket only reaches `connected` for a user who is not suspended; it is
        // closed with 4003 at once otherwise, and `suspendedClose` says so again.
        this.transition("live");
        this.setSuspended(false, null);
        return;
      }
      this.handleFrame(frame);
    };
    socket.onerror = () => {};
    socket.onclose = (event) => {
      if (attempt !== this.attempt) return;
      this.socket = undefined;
      if (this.stopped) return;
      if (event.code === CloseCode.suspended) return this.suspendedClose(event.reason);
      if (!greeted) {
        this.cancel("connectTimer");
        return this.connectFailed("refused");
      }
      this.dropped(event.code);
    };
  }

  /** A live socket ended (closed by the server, broken, or found dead): reconnect, or poll if it keeps happening. */
  private dropped(code: number): void {
    this.socket = undefined;
    this.cancel("stableTimer");
    this.rejectPendingAcks(new ChatApiError(0, "socket_closed", "the socket closed before the ack: sending again"));
    if (this.stopped) return;
    this.failedReconnects = 0;
    this.reconnectingSince = this.timers.now();
    if (code === 1001) {
      // The server is going away on purpose: reconnect soon, resuming from the cursor, but not all at once.
      this.startReconnecting(Math.max(1, Math.floor(this.random() * this.settings.goingAwayJitterMs)));
      return;
    }
    this.drops += 1;
    if (this.drops >= this.settings.dropsBeforePolling) {
      this.transition("polling");
      return;
    }
    this.startReconnecting(Math.max(1, this.backoffFor(this.drops)));
  }

  /**
   * The server closed the socket with 4003 (CONTRACT §8): the platform suspended this user, on an open
   * socket or right after the upgrade. Reads go on by polling; WebSocket is tried again only every
   * `wsRetryIntervalMs` (no backoff ladder, no reconnect storm), and the first `connected` ends it.
   */
  private suspendedClose(reason: string): void {
    this.cancel("connectTimer");
    this.cancel("stableTimer");
    this.rejectPendingAcks(new ChatApiError(0, "socket_closed", "the socket closed before the ack: sending again"));
    this.setSuspended(true, reason || null);
    // While polling, the next try is already scheduled (and is spaced by the cap from now on).
    if (this.state !== "polling") this.transition("polling");
  }

  private setSuspended(on: boolean, message: string | null): void {
    if (on === this.suspendedState) return;
    this.suspendedState = on;
    this.emit("suspended", { suspended: on, message });
  }

  /** "connecting" after a drop, bounded in time: past `reconnectingMaxMs` the page is told, and polls. */
  private startReconnecting(delayMs: number): void {
    this.transition("connecting", delayMs);
    this.cancel("degradeTimer");
    this.degradeTimer = this.timers.setTimeout(() => {
      this.degradeTimer = undefined;
      if (this.state === "connecting") this.transition("polling");
    }, this.settings.reconnectingMaxMs);
  }

  /**
   * A connect attempt failed: `refused` (the socket closed before its greeting, or the ws-token was
   * refused with a Retry-After), `unreachable` (no answer, or no WebSocket here), or `hung` (no greeting
   * within the deadline). The next attempt never comes before a Retry-After the server gave.
   */
  private connectFailed(how: "refused" | "unreachable" | "hung", retryAfterMs?: number): void {
    if (this.stopped) return;
    // While polling the next try was scheduled when this one started.
    if (this.state !== "connecting") return;
    const notBefore = retryAfterMs === undefined ? 0 : Math.floor(retryAfterMs * (1 + this.random() / 2));
    // Never live since start: a network that does not let WebSocket through, or a server too busy to take
    // this socket now. A refusal gets one more try on WebSocket, spread as the server spreads its own
    // Retry-After; then (or at once, for anything else) the client polls.
    if (!this.everLive) {
      // A long Retry-After is waited out polling, so that the page is not left without data meanwhile.
      if (how === "refused" && this.refusedRetries < 1 && notBefore <= this.settings.reconnectingMaxMs) {
        this.refusedRetries += 1;
        const spread = Math.floor(this.settings.refusedRetryMs * (0.5 + this.random()));
        this.transition("connecting", Math.max(1, notBefore, spread));
        return;
      }
      this.transition("polling");
      return;
    }
    this.failedReconnects += 1;
    const tooLong = this.timers.now() - this.reconnectingSince >= this.settings.reconnectingMaxMs;
    if (this.failedReconnects >= this.settings.dropsBeforePolling || tooLong) {
      this.transition("polling");
      return;
    }
    this.transition("connecting", Math.max(1, notBefore, this.backoffFor(this.drops + this.failedReconnects)));
  }

  private backoffFor(step: number): number {
    return backoff(step, this.settings.backoffMinMs, this.settings.backoffMaxMs, this.random);
  }

  private fail(error: ChatApiError): void {
    this.emit("fatal", { code: error.code, message: error.message });
    this.stop();
  }

  /**
   * The next WebSocket try while polling: about 2 s, 4 s, 8 s … apart, then 30 s, each drawn in ±50 % of
   * its step (so that clients that lost the same server do not come back together), never over 30 s.
   */
  private scheduleRetry(): void {
    this.cancel("retryTimer");
    const cap = this.settings.wsRetryIntervalMs;
    // Suspended: straight to the cap, so that a suspended user's tabs knock every 15-30 s, not every 2 s.
    const step = this.suspendedState ? cap : this.settings.wsRetryFirstMs * 2 ** Math.min(this.retryStep, 30);
    this.retryStep += 1;
    const delay = Math.max(1, Math.floor(Math.min(cap, Math.min(cap, step) * (0.5 + this.random()))));
    this.retryTimer = this.timers.setTimeout(() => {
      this.retryTimer = undefined;
      if (this.state === "polling" && !this.stopped) this.startRetry();
    }, delay);
  }

  /** One WebSocket try while polling; the next is scheduled first, so that no attempt can end the retries. */
  private startRetry(): void {
    this.scheduleRetry();
    void this.openSocket();
  }

  // ── liveness of the live socket ─────────────────────────────────────────────────────────────

  /**
   * Checks the live socket against the clock (not against timer counts: a background tab's timers fire
   * late): a ping after `heartbeatIdleMs` of silence, and a dead socket when nothing came within
   * `heartbeatTimeoutMs` of the ping. Then sets the timer for the next check.
   */
  private checkHeartbeat(): void {
    this.cancel("heartbeatTimer");
    const socket = this.socket;
    if (this.state !== "live" || !socket) return;
    const now = this.timers.now();
    if (this.pingSentAt !== undefined && now - this.pingSentAt >= this.settings.heartbeatTimeoutMs) {
      this.socketDead("no answer to a ping");
      return;
    }
    if (this.pingSentAt === undefined && now - this.lastFrameAt >= this.settings.heartbeatIdleMs) this.ping(socket);
    this.scheduleHeartbeat();
  }

  private scheduleHeartbeat(): void {
    this.cancel("heartbeatTimer");
    if (this.state !== "live") return;
    const due =
      this.pingSentAt !== undefined
        ? this.pingSentAt + this.settings.heartbeatTimeoutMs
        : this.lastFrameAt + this.settings.heartbeatIdleMs;
    this.heartbeatTimer = this.timers.setTimeout(
      () => {
        this.heartbeatTimer = undefined;
        this.checkHeartbeat();
      },
      Math.max(1, due - this.timers.now()),
    );
  }

  /** Asks the server for a sign of life if the socket has been quiet for `quietMs` (at once by default). */
  private probe(quietMs = 0): void {
    const socket = this.socket;
    if (this.state !== "live" || !socket) return;
    if (this.pingSentAt !== undefined) {
      this.checkHeartbeat();
      return;
    }
    if (this.timers.now() - this.lastFrameAt < quietMs) return;
    this.ping(socket);
    this.scheduleHeartbeat();
  }

  private ping(socket: WebSocketLike): void {
    this.pingSentAt = this.timers.now();
    try {
      socket.send(JSON.stringify({ type: "ping" }));
    } catch {
      // A socket that cannot take a frame is found dead by the timeout.
    }
  }

  /** The live socket passes no bytes (a NAT that forgot it, a sleeping laptop): close it, and reconnect. */
  private socketDead(reason: string): void {
    if (this.state !== "live") return;
    this.attempt += 1;
    this.closeSocket(CLOSE_DEAD, reason);
    this.dropped(CLOSE_DEAD);
  }

  // ── tabs ────────────────────────────────────────────────────────────────────────────────────

  /** Everything the page hears; the leading tab says it to the others too. */
  protected override emit<K extends keyof ChatClientEvents>(name: K, value: ChatClientEvents[K]): void {
    super.emit(name, value);
    if (!this.tabs?.leading) return;
    if (name === "presence") {
      const { user_id, online } = value as ChatClientEvents["presence"];
      this.presenceHeard.set(user_id, online);
    }
    if (name === "suspended") this.suspendedMessage = (value as ChatClientEvents["suspended"]).message;
    if (name === "mode") this.postMode();
    else if (RELAYED_TO_TABS.has(name)) this.tabs.post({ kind: "emit", name, value });
  }

  private postMode(): void {
    this.tabs?.post({ kind: "mode", mode: this.state, lastEventId: this.cursor });
  }

  /**
   * This tab holds the lock: it connects from the last event it delivered, and the server replays what came
   * after. Relays held back for a catch-up are dropped, not delivered: they would move the cursor past what the
   * catch-up had not read yet, and the replay brings them again, in order.
   */
  private lead(): void {
    if (this.stopped) return;
    this.following = false;
    this.catchingUp = undefined;
    this.presenceHeard.clear();
    this.transition("connecting");
    this.postMode();
  }

  /** A mode the leading tab is in, shown as this tab's own (no socket, no polling here). */
  private mirror(mode: ChatClientMode): void {
    const from = this.state;
    if (from === mode) return;
    this.state = mode;
    this.emit("mode", { from, to: mode });
  }

  private onTabMessage(message: TabMessage): void {
    const leading = this.tabs?.leading === true;
    if (message.kind === "hello") {
      // A new tab: where this one stands, so that it shows the same at once.
      if (!leading || !this.tabs) return;
      this.postMode();
      this.tabs.post({ kind: "emit", name: "warning", value: this.warned ? POLLING_WARNING : null });
      this.tabs.post({ kind: "emit", name: "unread", value: this.unreadCounts });
      const suspended = { suspended: this.suspendedState, message: this.suspendedMessage };
      this.tabs.post({ kind: "emit", name: "suspended", value: suspended });
      // Presence came as a snapshot when the socket opened: the new tab gets it now.
      for (const [userId, online] of this.presenceHeard) {
        this.tabs.post({ kind: "emit", name: "presence", value: { user_id: userId, online } });
      }
      return;
    }
    if (message.kind === "typing") {
      if (leading) this.typing(message.chatId, message.isTyping);
      return;
    }
    if (message.kind === "retry") {
      if (leading) this.retryNow();
      return;
    }
    if (!this.following || this.stopped) return;
    if (message.kind === "mode") {
      // Heard no event yet: the leader's stream position is this tab's, should it lead before one comes.
      if (this.cursor === undefined && message.lastEventId !== undefined) this.cursor = message.lastEventId;
      this.mirror(message.mode as ChatClientMode);
      return;
    }
    const value = message.value as never;
    switch (message.name) {
      case "event":
        if (this.catchingUp) this.catchingUp.push(value);
        else this.deliver(value);
        return;
      case "warning":
        this.setWarning(value !== null);
        return;
      case "unread":
        this.setUnread(value);
        return;
      case "suspended": {
        const { suspended, message: text } = value as ChatClientEvents["suspended"];
        this.setSuspended(suspended, text);
        return;
      }
      case "resync":
        this.resyncIfBehind((value as ChatClientEvents["resync"]).last_event_id);
        return;
      case "typing":
      case "presence":
        this.emit(message.name, value);
        return;
    }
  }

  /**
   * A following tab that knows where it left off (`lastEventId`) reads what it missed over REST, holding the
   * relayed events back meanwhile, so that none is lost between the two; it tries until it gets through.
   */
  private async catchUp(run: number): Promise<void> {
    if (this.cursor === undefined) return;
    this.catchingUp = [];
    const current = () => run === this.tabRun && this.following && !this.stopped;
    for (let attempt = 0; current(); attempt++) {
      try {
        if ((await this.readEventsAfterCursor(current)) === undefined) return;
        const held = this.catchingUp ?? [];
        this.catchingUp = undefined;
        for (const event of held) this.deliver(event);
        return;
      } catch (error) {
        if (!current()) return;
        if (error instanceof ChatApiError && error.status === 401) return this.fail(error);
        const retryAfter = error instanceof ChatApiError ? (error.retryAfterMs ?? 0) : 0;
        const wait = Math.max(this.backoffFor(attempt), retryAfter);
        await new Promise<void>((resolve) => this.timers.setTimeout(resolve, wait));
      }
    }
  }

  // ── polling ─────────────────────────────────────────────────────────────────────────────────

  /**
   * Reads the events after the cursor over REST, page after page, delivering each: a page cut short (by count,
   * or by bytes: long messages) is followed at once by the next (a server that predates `has_more` cuts by count
   * only). The stream's end, once reached; undefined when `current()` turned false on the way (the answer is
   * dropped). Polling and a following tab's catch-up both read this way.
   */
  private async readEventsAfterCursor(current: () => boolean): Promise<number | undefined> {
    for (;;) {
      const page = await this.api.events(this.cursor);
      if (!current()) return undefined;
      for (const event of page.events) this.deliver(event);
      if (!(page.has_more ?? page.events.length >= 500)) {
        this.resyncIfBehind(page.last_event_id);
        return page.last_event_id;
      }
    }
  }

  private async poll(run: number): Promise<void> {
    const started = this.timers.now();
    let retryAfterMs = 0;
    try {
      // The mode and the run both: a poll that hung through live → polling again must not make a second loop.
      const end = await this.readEventsAfterCursor(() => this.state === "polling" && run === this.pollRun);
      if (end === undefined) return;
      // The server's cursor is safe to adopt: it never passes an event it did not return.
      this.cursor = Math.max(this.cursor ?? 0, end);
    } catch (error) {
      if (error instanceof ChatApiError && error.status === 401) return this.fail(error);
      // A failed poll is tried again at the next tick, or after the server's Retry-After when that is
      // later (a busy server is not polled harder); the cursor has not moved past anything.
      if (error instanceof ChatApiError && error.retryAfterMs !== undefined) retryAfterMs = error.retryAfterMs;
    }
    if (this.state !== "polling" || run !== this.pollRun) return;
    const wait = Math.max(0, this.settings.pollIntervalMs - (this.timers.now() - started), retryAfterMs);
    this.pollTimer = this.timers.setTimeout(() => {
      this.pollTimer = undefined;
      if (this.state === "polling") void this.poll(run);
    }, wait);
  }

  // ── frames ──────────────────────────────────────────────────────────────────────────────────

  private handleFrame(frame: ServerFrame): void {
    if ("event_id" in frame) {
      this.deliver(frame);
      return;
    }
    switch (frame.type) {
      case "typing":
        this.emit("typing", { chat_id: frame.chat_id, user_id: frame.user_id, is_typing: frame.is_typing });
        return;
      case "presence":
        this.emit("presence", { user_id: frame.user_id, online: frame.online });
        return;
      case "ack": {
        const pending = this.pendingAcks.get(frame.ref);
        this.pendingAcks.delete(frame.ref);
        pending?.resolve(frame.message);
        return;
      }
      case "error": {
        if (!frame.ref) return;
        const pending = this.pendingAcks.get(frame.ref);
        this.pendingAcks.delete(frame.ref);
        const retryAfter = (frame as { retry_after_ms?: number }).retry_after_ms;
        const status = SEND_ERROR_STATUS[frame.code] ?? 400;
        pending?.reject(new ChatApiError(status, frame.code, frame.message, retryAfter));
        return;
      }
      default:
        return;
    }
  }

  /** A stream that ends before the cursor was renumbered or restored: start over from its end, and say so. */
  private resyncIfBehind(end: number): void {
    if (this.cursor === undefined || end >= this.cursor) return;
    this.cursor = end;
    this.emit("resync", { last_event_id: end });
  }

  /** The single entrance of events: drops what the cursor has passed, so each reaches the page once, in order. */
  private deliver(event: ChatEvent): void {
    if (this.cursor !== undefined && event.event_id <= this.cursor) return;
    this.cursor = event.event_id;
    const changed = this.followChat(event);
    this.emit("event", event);
    if (changed) this.emit("chat", changed);
    this.refreshUnreadSoon();
  }

  /**
   * Keeps the known chats in step with an event; the chat when the page should redraw it: a `chat_updated`
   * (listing, peer, archived), or an archived chat that a message from someone else brought back (the server
   * un-archives it with no `chat_updated`: CONTRACT §8).
   */
  private followChat(event: ChatEvent): Chat | undefined {
    if (event.type === "chat_created" || event.type === "chat_updated") {
      // A list entry keeps its last message and counts; the event's fields win.
      const chat = { ...this.knownChats.get(event.chat.id), ...event.chat };
      this.knownChats.set(chat.id, chat);
      return event.type === "chat_updated" ? chat : undefined;
    }
    if (event.type !== "new_message") return undefined;
    const known = this.knownChats.get(event.chat_id);
    if (!known?.archived) return undefined;
    // The platform's, or the other participant's (known from the chat itself, even before `connected` names
    // this user): not one this user sent from another device, which leaves it archived.
    const fromElsewhere = event.message.sender_id === null || event.message.sender_id === known.peer?.id;
    if (!fromElsewhere) return undefined;
    const chat = { ...known, archived: false };
    this.knownChats.set(chat.id, chat);
    return chat;
  }

  // ── the outbox ──────────────────────────────────────────────────────────────────────────────

  /** Sends the outbox's messages one at a time, in order. */
  private async drainOutbox(): Promise<void> {
    if (this.draining) return;
    this.draining = true;
    try {
      for (let item = this.outbox[0]; item; item = this.outbox[0]) {
        try {
          const message = await this.deliverSend(item);
          // Stored: whatever suspension there was is over.
          this.setSuspended(false, null);
          this.settle(item, undefined, message);
        } catch (error) {
          if (error instanceof ChatApiError && error.code === ErrorCode.userSuspended) {
            this.setSuspended(true, error.message);
          }
          this.settle(
            item,
            error instanceof ChatApiError ? error : new ChatApiError(0, "network_error", String(error)),
          );
        }
        if (this.outbox[0] === item) this.outbox.shift();
      }
    } finally {
      this.draining = false;
    }
  }

  /** Tries one send until it is stored, refused for good, aborted or expired. */
  private async deliverSend(item: Outgoing): Promise<Message> {
    // After an ack timeout the socket may be half-open: trying it again could time out forever.
    let overRest = false;
    for (let attempt = 0; ; attempt++) {
      if (item.settled) throw sendAbortedError();
      if (this.stopped)
        throw new ChatApiError(0, "client_stopped", "the client was stopped before the message was stored");
      if (this.timers.now() >= item.deadline) throw this.expired();
      try {
        // A quiet socket is asked for a sign of life, so a dead one is found while this send waits.
        this.probe(this.settings.heartbeatIdleMs);
        const socket = this.socket;
        if (!overRest && !item.attachments && this.state === "live" && socket && socket.readyState === OPEN) {
          return await this.sendOverSocket(socket, item);
        }
        return await this.api.sendMessage(item.chatId, item.content, item.clientMsgId, item.attachments);
      } catch (error) {
        const failure = error instanceof ChatApiError ? error : new ChatApiError(0, "network_error", String(error));
        if (failure.code === "ack_timeout") {
          overRest = true;
          // No ack in time: the socket passes nothing. Reconnect, and send this one over REST now.
          this.socketDead("no ack in time");
          continue;
        }
        if (this.stopped || item.settled) throw failure;
        if (!failure.retryable) {
          if (failure.status === 401) this.fail(failure);
          throw failure;
        }
        const wait = failure.retryAfterMs ?? this.backoffFor(attempt);
        await this.sleepForSend(Math.min(wait, Math.max(0, item.deadline - this.timers.now())));
      }
    }
  }

  private expired(): ChatApiError {
    const seconds = Math.round(this.settings.sendMaxAgeMs / 1000);
    return new ChatApiError(0, "send_expired", `not stored within ${seconds} s: retry it or discard it`);
  }

  /** A wait between tries, which stop(), an abort, going live and `retryNow()` cut short. */
  private sleepForSend(ms: number): Promise<void> {
    return new Promise<void>((resolve) => {
      const handle = this.timers.setTimeout(() => {
        this.sendWaits.delete(handle);
        resolve();
      }, ms);
      this.sendWaits.set(handle, resolve);
    });
  }

  private wakeSends(): void {
    for (const [handle, wake] of this.sendWaits) {
      this.timers.clearTimeout(handle);
      wake();
    }
    this.sendWaits.clear();
  }

  /** Answers a send once: with the message, or with the error. */
  private settle(item: Outgoing, error?: ChatApiError, message?: Message): void {
    if (item.settled) return;
    item.settled = true;
    if (message) item.resolve(message);
    else item.reject(error ?? sendAbortedError());
    const at = this.outbox.indexOf(item);
    // The head is removed by the drain loop when it comes back; a waiting one leaves the queue now.
    if (at > 0) this.outbox.splice(at, 1);
  }

  private sendOverSocket(socket: WebSocketLike, item: Outgoing): Promise<Message> {
    const ref = item.clientMsgId;
    return new Promise((resolve, reject) => {
      const timer = this.timers.setTimeout(() => {
        this.pendingAcks.delete(ref);
        reject(new ChatApiError(0, "ack_timeout", "no ack in time: sending again"));
      }, this.settings.ackTimeoutMs);
      this.pendingAcks.set(ref, {
        resolve: (message) => {
          this.timers.clearTimeout(timer);
          resolve(message);
        },
        reject: (error) => {
          this.timers.clearTimeout(timer);
          reject(error);
        },
      });
      socket.send(
        JSON.stringify({ type: "send_message", chat_id: item.chatId, content: item.content, client_msg_id: ref }),
      );
    });
  }

  /** A socket that closed took its unanswered sends with it: they are sent again, with the same ids. */
  private rejectPendingAcks(error: ChatApiError): void {
    for (const pending of this.pendingAcks.values()) pending.reject(error);
    this.pendingAcks.clear();
  }

  // ── unread counts, warning, helpers ─────────────────────────────────────────────────────────

  /** Reads the unread counts soon, at most once per `unreadMinIntervalMs` however many events arrive. */
  private refreshUnreadSoon(): void {
    // A following tab hears the leader's counts.
    if (this.unreadTimer !== undefined || this.stopped || this.following) return;
    const wait = Math.max(0, this.lastUnreadAt + this.settings.unreadMinIntervalMs - this.timers.now());
    this.unreadTimer = this.timers.setTimeout(() => {
      this.unreadTimer = undefined;
      this.lastUnreadAt = this.timers.now();
      this.api.unread().then(
        (counts) => {
          if (!this.stopped) this.setUnread(counts);
        },
        () => {},
      );
    }, wait);
  }

  private setUnread(counts: ChatClientEvents["unread"]): void {
    this.unreadCounts = counts;
    this.emit("unread", counts);
  }

  private setWarning(on: boolean): void {
    if (on === this.warned) return;
    this.warned = on;
    this.emit("warning", on ? POLLING_WARNING : null);
  }

  private parse(data: unknown): ServerFrame | undefined {
    if (typeof data !== "string") return undefined;
    try {
      return JSON.parse(data) as ServerFrame;
    } catch {
      return undefined;
    }
  }

  private closeSocket(code: number, reason: string): void {
    const socket = this.socket;
    this.socket = undefined;
    if (!socket) return;
    socket.onclose = null;
    socket.onmessage = null;
    try {
      socket.close(code, reason);
    } catch {
      // Closing a socket that never opened may throw in some environments; it is gone either way.
    }
  }

  private cancel(
    timer:
      | "reconnectTimer"
      | "pollTimer"
      | "retryTimer"
      | "stableTimer"
      | "unreadTimer"
      | "connectTimer"
      | "heartbeatTimer"
      | "degradeTimer",
  ): void {
    if (this[timer] !== undefined) this.timers.clearTimeout(this[timer]);
    this[timer] = undefined;
  }
}
