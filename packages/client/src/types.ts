import type { AccessTokenProvider } from "./access-token.ts";
import type { UploadProgress } from "./photos.ts";
import type { Chat, ChatEvent } from "./protocol/index.ts";
import type { TabEnvironment } from "./tab-link.ts";
import type { XMLHttpRequestFactory } from "./upload.ts";

/** Where the client stands: what the page shows as its connection state. */
export type ChatClientMode = "connecting" | "live" | "polling" | "offline";

/** The subset of the browser's WebSocket the client uses, so tests and Node can pass their own. */
export interface WebSocketLike {
  readonly readyState: number;
  send(data: string): void;
  close(code?: number, reason?: string): void;
  onopen: ((event: unknown) => void) | null;
  onmessage: ((event: { data: unknown }) => void) | null;
  onclose: ((event: { code: number; reason: string }) => void) | null;
  onerror: ((event: unknown) => void) | null;
}
export type WebSocketFactory = (url: string) => WebSocketLike;

export interface Timers {
  setTimeout(fn: () => void, ms: number): unknown;
  clearTimeout(handle: unknown): void;
  now(): number;
}

export interface ChatClientOptions {
  /** The gateway's origin, e.g. "https://chat.example.com"; "" for the page's own origin. */
  baseUrl: string;
  /**
   * The monolith's access token, asked for each request (answer the one you hold). With `{ refresh: true }` the
   * last one was refused (401) or expires within a quarter of its life (30 s at most): fetch a new one. Throw
   * `AccessTokenRefusedError` when none can be had (signed out): the client stops with `fatal`; any other error
   * is retried like the network's.
   */
  getAccessToken: AccessTokenProvider;
  /** Where to start: the last event id the page already has (events after it are delivered). */
  lastEventId?: number;
  /** Injectable for tests and Node; the browser's globals by default. */
  webSocket?: WebSocketFactory;
  fetch?: typeof fetch;
  timers?: Timers;
  random?: () => number;
  /** Polling cadence while WebSocket is unavailable (CONTRACT §7: 5 s). */
  pollIntervalMs?: number;
  /** While polling, WebSocket is tried again after this long, then twice as long each time … */
  wsRetryFirstMs?: number;
  /** … up to this (CONTRACT §7: 30 s). Also at once on `online`, on the tab becoming visible, and `retryNow()`. */
  wsRetryIntervalMs?: number;
  /**
   * After a drop, reconnecting gives up for polling after this many failed attempts in a row, or after
   * `reconnectingMaxMs`, whichever comes first; and so do this many drops in a row of sockets that did not
   * stay up 10 s. A connect that fails before the page was ever live goes to polling at once.
   */
  dropsBeforePolling?: number;
  reconnectingMaxMs?: number;
  /** Full-jitter backoff bounds for reconnects. */
  backoffMinMs?: number;
  backoffMaxMs?: number;
  /** Reconnects after a 1001 (the server going away) are spread over this long, so they do not come at once. */
  goingAwayJitterMs?: number;
  /**
   * A first connect that was refused (closed before the `connected` frame, or a ws-token answer with
   * Retry-After) is tried once more on WebSocket, after a wait drawn in [0.5, 1.5) of this (or after the
   * Retry-After, when there is one), before polling: in a reconnect storm a busy server refuses, and a
   * browser cannot read why an upgrade was refused. 2,000 ms: the spread of the server's own Retry-After.
   */
  refusedRetryMs?: number;
  /** Each connect attempt must reach the `connected` frame within this, or it is closed and counts as failed. */
  connectTimeoutMs?: number;
  /** While live: a `ping` when nothing was received for this long … */
  heartbeatIdleMs?: number;
  /** … and the socket is dead (closed, reconnected) when nothing comes within this after it. */
  heartbeatTimeoutMs?: number;
  /** How long to wait for an `ack`; no ack in time means a dead socket, and the message goes over REST. */
  ackTimeoutMs?: number;
  /** A send that is not stored within this long rejects (`send_expired`), so the page can offer retry or discard. */
  sendMaxAgeMs?: number;
  /** The unread counts are read at most once per this long. */
  unreadMinIntervalMs?: number;
  /** The browser's `online`/`offline` and tab visibility; the page's own window and document by default. */
  connectivity?: ConnectivitySignals;
  /**
   * The signed-in user, so that a `new_message` from someone else (or the platform) can bring an archived
   * chat back before the first `connected` frame says who this is (e.g. while polling).
   */
  userId?: number;
  /**
   * One connection for all of this user's tabs in one browser (needs `userId`): the tab that holds a Web Lock
   * connects and relays what it hears to the others over a BroadcastChannel; when it closes, the next tab takes
   * over from where it left off. Other tabs send over REST. Off by default; without BroadcastChannel and Web
   * Locks every tab connects on its own.
   */
  shareAcrossTabs?: boolean;
  /** The browser features `shareAcrossTabs` uses: the page's own by default (tests pass their own). */
  tabEnvironment?: TabEnvironment;
  /**
   * How photos' bytes go to storage (`sendPhotos`): over XMLHttpRequest, for upload progress, by default where
   * there is one, unless `fetch` was given (then through that `fetch`, as every other request); `null`: always
   * over `fetch`, which reports progress once each photo is there.
   */
  xmlHttpRequest?: XMLHttpRequestFactory | null;
}

/** Hooks for what the environment knows about connectivity; each returns the function that unsubscribes. */
export interface ConnectivitySignals {
  onOnline(listener: () => void): () => void;
  onOffline(listener: () => void): () => void;
  onVisible(listener: () => void): () => void;
}

/** Options of one send. */
export interface SendOptions {
  /** Reused by a page that retries a failed send, so that it is stored once. */
  clientMsgId?: string;
  /** Overrides `sendMaxAgeMs` for this send. */
  maxAgeMs?: number;
  /** Aborting stops the retries and rejects (`send_aborted`); a try already on its way may still be stored. */
  signal?: AbortSignal;
}

/** Options of one photo send (`sendPhotos`). */
export interface SendPhotosOptions {
  /** The caption; may be empty. */
  content?: string;
  /** Reused by a page that retries a failed send, so that it is stored once (and photos that got there are not sent again). */
  clientMsgId?: string;
  /** Bytes of all the photos that reached storage, of how many; called as they go. */
  onProgress?: (progress: UploadProgress) => void;
  /** Aborting stops the uploads and the send, and rejects (`send_aborted`). */
  signal?: AbortSignal;
}

/** What the client tells the page. Every stored event reaches `event` exactly once, in order. */
export interface ChatClientEvents {
  event: ChatEvent;
  mode: { from: ChatClientMode; to: ChatClientMode };
  /** A sentence to show while real-time updates are unavailable; null when they are back. */
  warning: string | null;
  typing: { chat_id: number; user_id: number; is_typing: boolean };
  presence: { user_id: number; online: boolean };
  unread: { total: number; chats: Record<string, number> };
  /**
   * The server's stream ends before the client's cursor (the streams were renumbered, or the database was
   * restored from a backup): events may have been missed. The page should reload what it shows (chat list,
   * open chat, unread counts); the client goes on from `last_event_id`.
   */
  resync: { last_event_id: number };
  /** The client stopped for good (e.g. the access token was refused): the page must sign in again. */
  fatal: { code: string; message: string };
  /**
   * A chat the client knows changed (CONTRACT §8): its listing, its peer or `archived` (a `chat_updated`
   * event), or it came back from the archive because someone else (or the platform) wrote in it — the
   * server sends no `chat_updated` for that, the `new_message` is the signal. Emitted after the `event`.
   */
  chat: Chat;
  /**
   * The platform suspended this user (a socket closed with 4003, or a send refused `user_suspended`), or
   * the suspension is over (a socket was accepted again, or a send was stored). While suspended the client
   * polls (reads go on) and tries WebSocket only every `wsRetryIntervalMs`; sends are refused.
   */
  suspended: { suspended: boolean; message: string | null };
}
