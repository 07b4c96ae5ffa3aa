import type { ChatEvent, Message } from "../protocol.ts";

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
  /** The monolith's access token; called again whenever a new one may be needed. */
  getAccessToken: () => string | Promise<string>;
  /** Where to start: the last event id the page already has (events after it are delivered). */
  lastEventId?: number;
  /** Injectable for tests and Node; the browser's globals by default. */
  webSocket?: WebSocketFactory;
  fetch?: typeof fetch;
  timers?: Timers;
  random?: () => number;
  /** Polling cadence while WebSocket is unavailable (CONTRACT §7: 5 s). */
  pollIntervalMs?: number;
  /** How often WebSocket is tried again while polling (CONTRACT §7: 30 s). */
  wsRetryIntervalMs?: number;
  /** Drops in a row (sockets that close without having stayed up) before switching to polling. */
  dropsBeforePolling?: number;
  /** Full-jitter backoff bounds for plain reconnects. */
  backoffMinMs?: number;
  backoffMaxMs?: number;
  /** How long to wait for an `ack` before sending again over REST (same client_msg_id). */
  ackTimeoutMs?: number;
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
}

export type { ChatEvent, Message };
