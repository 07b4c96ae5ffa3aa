import { Limits } from "../codes.ts";
import type { ChatEvent, Message, ServerFrame } from "../protocol.ts";
import { backoff, randomId } from "./backoff.ts";
import { Emitter } from "./emitter.ts";
import { ChatApi, ChatApiError } from "./rest.ts";
import type {
  ChatClientEvents,
  ChatClientMode,
  ChatClientOptions,
  Timers,
  WebSocketFactory,
  WebSocketLike,
} from "./types.ts";

export const POLLING_WARNING = "Real-time updates are unavailable: refreshing every 5 seconds";

const OPEN = 1;
/** A socket that stayed live this long was not a "drop": the count of drops in a row starts again. */
const STABLE_AFTER_MS = 10_000;
const UNREAD_REFRESH_DELAY_MS = 250;
/**
 * The REST status of a WebSocket `error` code, so that a send retries what REST would retry.
 * Fix: internal_error ("could not handle this frame: retry") and shutting_down were mapped to 400 and rejected.
 */
const SEND_ERROR_STATUS: Record<string, number> = {
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

/** `http(s)://host` → `ws(s)://host`; an empty base means the page's own origin. */
function socketOrigin(baseUrl: string): string {
  const origin = baseUrl || (globalThis as { location?: { origin: string } }).location?.origin || "";
  return origin.replace(/^http/, "ws");
}

interface PendingSend {
  resolve(message: Message): void;
  reject(error: ChatApiError): void;
}

/**
 * The browser client of listings-chat (CONTRACT §7). One state machine, changed only by `transition`:
 *
 *   connecting ──connected frame──▶ live ──close 1001──▶ connecting (at once)
 *        │                          │──other close──▶ connecting (full-jitter backoff) … after N drops ──▶ polling
 *        └──cannot open──▶ polling ──every 30 s: try WebSocket──▶ live (resumes from the cursor)
 *   any ──401 / stop()──▶ offline
 *
 * Every event goes through `deliver`, which keeps the cursor: what it has passed is dropped, so an
 * event that both the socket and a poll bring reaches the page once, in order.
 */
export class ChatClient extends Emitter<ChatClientEvents> {
  readonly api: ChatApi;
  private state: ChatClientMode = "offline";
  private cursor: number | undefined;
  private unreadCounts: ChatClientEvents["unread"] = { total: 0, chats: {} };
  private socket: WebSocketLike | undefined;
  /** Bumped by every socket attempt and by stop(): callbacks of an older attempt do nothing. */
  private attempt = 0;
  private drops = 0;
  private stopped = true;
  private warned = false;
  private readonly timers: Timers;
  private readonly webSocket: WebSocketFactory;
  private readonly random: () => number;
  private readonly settings: Required<
    Pick<
      ChatClientOptions,
      "pollIntervalMs" | "wsRetryIntervalMs" | "dropsBeforePolling" | "backoffMinMs" | "backoffMaxMs" | "ackTimeoutMs"
    >
  >;
  private reconnectTimer: unknown;
  private pollTimer: unknown;
  private retryTimer: unknown;
  private stableTimer: unknown;
  private unreadTimer: unknown;
  private polling = false;
  /** Bumped by every new polling loop: a poll still in flight from an earlier polling period then stops. */
  private pollRun = 0;
  private readonly pendingSends = new Map<string, PendingSend>();
  /** Sends waiting before their next try: stop() clears the timer and wakes them, and they reject. */
  private readonly sendWaits = new Map<unknown, () => void>();
  private readonly lastTypingAt = new Map<number, number>();

  private readonly baseUrl: string;

  constructor(options: ChatClientOptions) {
    super();
    this.cursor = options.lastEventId;
    this.timers = options.timers ?? defaultTimers;
    this.webSocket = options.webSocket ?? defaultWebSocket();
    this.random = options.random ?? Math.random;
    this.api = new ChatApi(options.baseUrl, options.getAccessToken, options.fetch ?? globalThis.fetch.bind(globalThis));
    this.baseUrl = options.baseUrl;
    this.settings = {
      pollIntervalMs: options.pollIntervalMs ?? 5_000,
      wsRetryIntervalMs: options.wsRetryIntervalMs ?? 30_000,
      dropsBeforePolling: options.dropsBeforePolling ?? 3,
      backoffMinMs: options.backoffMinMs ?? 500,
      backoffMaxMs: options.backoffMaxMs ?? 15_000,
      ackTimeoutMs: options.ackTimeoutMs ?? 10_000,
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

  start(): void {
    if (!this.stopped) return;
    this.stopped = false;
    this.drops = 0;
    this.transition("connecting");
  }

  stop(): void {
    if (this.stopped) return;
    this.stopped = true;
    this.transition("offline");
  }

  /**
   * Sends a message and resolves with it once stored. It is retried (over the socket while live, else
   * over REST) with the same `client_msg_id` until the server stores it, so it is never stored twice.
   * Rejects on a refusal that a retry cannot fix (validation, not a participant, signed out).
   */
  async send(chatId: number, content: string, clientMsgId: string = randomId()): Promise<Message> {
    // Fix: after an ack timeout the socket may be half-open; trying it again could time out forever.
    let overRest = false;
    for (let attempt = 0; ; attempt++) {
      if (this.stopped)
        throw new ChatApiError(0, "client_stopped", "the client was stopped before the message was stored");
      try {
        const socket = this.socket;
        if (!overRest && this.state === "live" && socket && socket.readyState === OPEN) {
          return await this.sendOverSocket(socket, chatId, content, clientMsgId);
        }
        return await this.api.sendMessage(chatId, content, clientMsgId);
      } catch (error) {
        const failure = error instanceof ChatApiError ? error : new ChatApiError(0, "network_error", String(error));
        if (failure.code === "ack_timeout") overRest = true;
        if (this.stopped) throw failure;
        if (!failure.retryable) {
          if (failure.status === 401) this.fail(failure);
          throw failure;
        }
        const wait =
          failure.retryAfterMs ?? backoff(attempt, this.settings.backoffMinMs, this.settings.backoffMaxMs, this.random);
        // Fix: this timer was not tracked, so stop() left it running (and the send pending) for up to retry_after.
        await new Promise<void>((resolve) => {
          const handle = this.timers.setTimeout(() => {
            this.sendWaits.delete(handle);
            resolve();
          }, wait);
          this.sendWaits.set(handle, resolve);
        });
      }
    }
  }

  /** Tells the other participant that this user is typing; at most one frame per 2 s per chat, live only. */
  typing(chatId: number, isTyping: boolean): void {
    const socket = this.socket;
    if (this.state !== "live" || !socket || socket.readyState !== OPEN) return;
    const now = this.timers.now();
    if (now - (this.lastTypingAt.get(chatId) ?? Number.NEGATIVE_INFINITY) < Limits.typingIntervalMs) return;
    this.lastTypingAt.set(chatId, now);
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

  /** The one place where the mode changes, and with it the timers and sockets that belong to each mode. */
  private transition(to: ChatClientMode, reconnectDelayMs = 0): void {
    const from = this.state;
    this.cancel("reconnectTimer");
    if (to !== "polling") this.cancel("pollTimer");
    if (to !== "polling") this.polling = false;
    if (to === "live" || to === "offline") this.cancel("retryTimer");
    if (to === "offline") {
      this.attempt += 1;
      this.cancel("stableTimer");
      this.cancel("unreadTimer");
      this.closeSocket(1000, "client stopped");
      for (const pending of this.pendingSends.values()) {
        pending.reject(new ChatApiError(0, "client_stopped", "the client stopped"));
      }
      this.pendingSends.clear();
      for (const [handle, wake] of this.sendWaits) {
        this.timers.clearTimeout(handle);
        wake();
      }
      this.sendWaits.clear();
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
      this.scheduleRetry();
    }
    if (to === "live") {
      this.setWarning(false);
      this.refreshUnreadSoon(0);
    }
  }

  private async openSocket(): Promise<void> {
    const attempt = ++this.attempt;
    let url: string;
    try {
      const ticket = await this.api.wsToken();
      const after = this.cursor === undefined ? "" : `&after=${this.cursor}`;
      url = `${socketOrigin(this.baseUrl)}${ticket.ws_url}?token=${encodeURIComponent(ticket.token)}${after}`;
    } catch (error) {
      if (attempt !== this.attempt || this.stopped) return;
      if (error instanceof ChatApiError && error.status === 401) return this.fail(error);
      return this.socketFailed();
    }
    if (attempt !== this.attempt || this.stopped) return;
    let socket: WebSocketLike;
    try {
      socket = this.webSocket(url);
    } catch {
      return this.socketFailed();
    }
    this.socket = socket;
    let greeted = false;
    socket.onmessage = (message) => {
      if (attempt !== this.attempt) return;
      const frame = this.parse(message.data);
      if (!frame) return;
      if (frame.type === "connected") {
        greeted = true;
        this.cursor ??= frame.last_event_id;
        this.resyncIfBehind(frame.last_event_id);
        this.timers.clearTimeout(this.stableTimer);
        this.stableTimer = this.timers.setTimeout(() => {
          this.drops = 0;
        }, STABLE_AFTER_MS);
        this.transition("live");
        return;
      }
      this.handleFrame(frame);
    };
    socket.onerror = () => {};
    socket.onclose = (event) => {
      if (attempt !== this.attempt) return;
      this.socket = undefined;
      this.cancel("stableTimer");
      this.rejectPendingSends();
      if (this.stopped) return;
      if (!greeted) return this.socketFailed();
      if (event.code === 1001) {
        // The server is going away on purpose: reconnect at once, resuming from the cursor.
        this.transition("connecting");
        return;
      }
      this.drops += 1;
      if (this.drops >= this.settings.dropsBeforePolling) {
        this.transition("polling");
        return;
      }
      this.transition(
        "connecting",
        Math.max(1, backoff(this.drops, this.settings.backoffMinMs, this.settings.backoffMaxMs, this.random)),
      );
    };
  }

  /** WebSocket could not be opened: poll, and try again every 30 s. */
  private socketFailed(): void {
    if (this.stopped) return;
    if (this.state === "polling") this.scheduleRetry();
    else this.transition("polling");
  }

  private fail(error: ChatApiError): void {
    this.emit("fatal", { code: error.code, message: error.message });
    this.stop();
  }

  private scheduleRetry(): void {
    this.cancel("retryTimer");
    this.retryTimer = this.timers.setTimeout(() => {
      this.retryTimer = undefined;
      if (this.state === "polling" && !this.stopped) void this.openSocket();
    }, this.settings.wsRetryIntervalMs);
  }

  private async poll(run: number): Promise<void> {
    const started = this.timers.now();
    try {
      for (;;) {
        const page = await this.api.events(this.cursor);
        // Fix: checking the mode alone let a poll that hung through live → polling again start a second loop.
        if (this.state !== "polling" || run !== this.pollRun) return;
        for (const event of page.events) this.deliver(event);
        // The server's cursor is safe to adopt: it never passes an event it did not return.
        if (page.events.length < 500) {
          this.resyncIfBehind(page.last_event_id);
          this.cursor = Math.max(this.cursor ?? 0, page.last_event_id);
          break;
        }
      }
    } catch (error) {
      if (error instanceof ChatApiError && error.status === 401) return this.fail(error);
      // A failed poll is tried again at the next tick; the cursor has not moved past anything.
    }
    if (this.state !== "polling" || run !== this.pollRun) return;
    const wait = Math.max(0, this.settings.pollIntervalMs - (this.timers.now() - started));
    this.pollTimer = this.timers.setTimeout(() => {
      this.pollTimer = undefined;
      if (this.state === "polling") void this.poll(run);
    }, wait);
  }

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
        const pending = this.pendingSends.get(frame.ref);
        this.pendingSends.delete(frame.ref);
        pending?.resolve(frame.message);
        return;
      }
      case "error": {
        if (!frame.ref) return;
        const pending = this.pendingSends.get(frame.ref);
        this.pendingSends.delete(frame.ref);
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
    this.emit("event", event);
    this.refreshUnreadSoon(UNREAD_REFRESH_DELAY_MS);
  }

  private sendOverSocket(socket: WebSocketLike, chatId: number, content: string, ref: string): Promise<Message> {
    return new Promise((resolve, reject) => {
      const timer = this.timers.setTimeout(() => {
        this.pendingSends.delete(ref);
        reject(new ChatApiError(0, "ack_timeout", "no ack in time: sending again"));
      }, this.settings.ackTimeoutMs);
      this.pendingSends.set(ref, {
        resolve: (message) => {
          this.timers.clearTimeout(timer);
          resolve(message);
        },
        reject: (error) => {
          this.timers.clearTimeout(timer);
          reject(error);
        },
      });
      socket.send(JSON.stringify({ type: "send_message", chat_id: chatId, content, client_msg_id: ref }));
    });
  }

  /** A socket that closed took its unanswered sends with it: they are sent again, with the same ids. */
  private rejectPendingSends(): void {
    for (const pending of this.pendingSends.values()) {
      pending.reject(new ChatApiError(0, "socket_closed", "the socket closed before the ack: sending again"));
    }
    this.pendingSends.clear();
  }

  private refreshUnreadSoon(delayMs: number): void {
    this.cancel("unreadTimer");
    this.unreadTimer = this.timers.setTimeout(() => {
      this.unreadTimer = undefined;
      this.api.unread().then(
        (counts) => {
          if (!this.stopped) this.setUnread(counts);
        },
        () => {},
      );
    }, delayMs);
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

  private cancel(timer: "reconnectTimer" | "pollTimer" | "retryTimer" | "stableTimer" | "unreadTimer"): void {
    if (this[timer] !== undefined) this.timers.clearTimeout(this[timer]);
    this[timer] = undefined;
  }
}
