import { type AccessTokenProvider, AccessTokenRefusedError, AccessTokens } from "./access-token.ts";
import type {
  AttachmentLink,
  Chat,
  ChatEvent,
  ChatSummary,
  Message,
  ReportReason,
  UploadContentType,
  UploadTicket,
} from "./protocol/index.ts";

/** What `report` names: exactly one message, chat or user, with a reason and an optional note (CONTRACT §10). */
export type ReportRequest = { reason: ReportReason; note?: string } & (
  | { message_id: number }
  | { chat_id: number }
  | { user_id: number }
);

/** An answer the server gave with an error body; `status` 0 means the request never got an answer. */
export class ChatApiError extends Error {
  readonly status: number;
  readonly code: string;
  readonly retryAfterMs: number | undefined;
  constructor(status: number, code: string, message: string, retryAfterMs?: number) {
    super(message);
    this.name = "ChatApiError";
    this.status = status;
    this.code = code;
    this.retryAfterMs = retryAfterMs;
  }

  /** Worth sending again (same client_msg_id): the network, the server, or the rate limit. */
  get retryable(): boolean {
    return this.status === 0 || this.status === 429 || this.status >= 500;
  }
}

/** A send (or an upload) that its signal aborted. */
export const sendAbortedError = () => new ChatApiError(0, "send_aborted", "the send was aborted");

/**
 * A token from the provider. It gives up (`AccessTokenRefusedError`): a 401 of its own, the client stops; it
 * fails otherwise: as the network failing, tried again later.
 */
async function tokenFrom(ask: () => Promise<string>): Promise<string> {
  try {
    return await ask();
  } catch (error) {
    const message = error instanceof Error ? error.message : String(error);
    if (error instanceof AccessTokenRefusedError) throw new ChatApiError(401, "access_token_refused", message);
    throw new ChatApiError(0, "access_token_unavailable", `getAccessToken failed: ${message}`);
  }
}

/** The longest Retry-After the client waits for: past it, its own retry rules take over. */
const RETRY_AFTER_MAX_MS = 60_000;

/**
 * A Retry-After in ms: whole seconds, or an HTTP date; undefined when absent or unreadable (a NaN here once
 * meant a retry scheduled for never).
 */
export function parseRetryAfter(header: string | null): number | undefined {
  if (!header) return undefined;
  const seconds = /^\s*(\d+)\s*$/.exec(header);
  // An HTTP date always ends in GMT; Date.parse alone would read "-1" or "1.5" as dates.
  const date = /GMT\s*$/.test(header) ? Date.parse(header) : Number.NaN;
  const ms = seconds ? Number(seconds[1]) * 1000 : date - Date.now();
  if (!Number.isFinite(ms)) return undefined;
  return Math.min(Math.max(0, ms), RETRY_AFTER_MAX_MS);
}

/**
 * The chat REST API of the gateway (CONTRACT §4), with the access token on every call. A 401 asks the provider
 * for a new token and sends the request once more (the gateway refused it before doing anything); a second 401
 * goes to the caller.
 */
export class ChatApi {
  private readonly baseUrl: string;
  private readonly tokens: AccessTokens;
  private readonly fetchImpl: typeof fetch;
  constructor(baseUrl: string, getAccessToken: AccessTokenProvider, fetchImpl: typeof fetch) {
    this.baseUrl = baseUrl;
    this.tokens = new AccessTokens(getAccessToken);
    this.fetchImpl = fetchImpl;
  }

  async request<T>(method: string, path: string, body?: unknown, headers?: Record<string, string>): Promise<T> {
    const token = await tokenFrom(() => this.tokens.current());
    try {
      return await this.send<T>(method, path, body, token, headers);
    } catch (error) {
      if (!(error instanceof ChatApiError) || error.status !== 401) throw error;
      return this.send<T>(method, path, body, await tokenFrom(() => this.tokens.refresh(token)), headers);
    }
  }

  /**
   * Where a URL the server gave points: a path (`/…`) is the gateway's, below its base as API paths are; any
   * other URL (storage of another origin) is taken as it is.
   */
  gatewayUrl(pathOrUrl: string): string {
    return pathOrUrl.startsWith("/") ? `${this.baseUrl}${pathOrUrl}` : pathOrUrl;
  }

  private async send<T>(
    method: string,
    path: string,
    body: unknown,
    token: string,
    headers: Record<string, string> = {},
  ): Promise<T> {
    let res: Response;
    try {
      res = await this.fetchImpl(this.gatewayUrl(path), {
        method,
        headers: {
          ...headers,
          authorization: `Bearer ${token}`,
          ...(body === undefined ? {} : { "content-type": "application/json" }),
        },
        body: body === undefined ? undefined : JSON.stringify(body),
      });
    } catch (error) {
      throw new ChatApiError(0, "network_error", error instanceof Error ? error.message : "network error");
    }
    const text = await res.text();
    let parsed: unknown;
    try {
      parsed = text ? JSON.parse(text) : undefined;
    } catch {
      parsed = undefined;
    }
    if (!res.ok) {
      const error = (parsed as { error?: { code?: string; message?: string } } | undefined)?.error;
      throw new ChatApiError(
        res.status,
        error?.code ?? "http_error",
        error?.message ?? `HTTP ${res.status}`,
        parseRetryAfter(res.headers.get("retry-after")),
      );
    }
    return parsed as T;
  }

  wsToken() {
    return this.request<{ token: string; expires_in: number; ws_url: string }>("POST", "/api/v2/ws-token");
  }
  events(after: number | undefined, limit = 500) {
    const query = after === undefined ? "" : `?after=${after}&limit=${limit}`;
    return this.request<{ events: ChatEvent[]; last_event_id: number; has_more?: boolean }>(
      "GET",
      `/api/v1/events${query}`,
    );
  }
  /** The caller's chats, newest activity first: those not archived, or with `archived: true` the archived ones. */
  listChats(options: { archived?: boolean } = {}) {
    const path = options.archived ? "/api/v1/chats?archived=1" : "/api/v1/chats";
    return this.request<{ chats: ChatSummary[] }>("GET", path).then((r) => r.chats);
  }
  /** Hides the chat from the caller's list (their own devices hear `chat_updated`); 204. */
  archiveChat(chatId: number) {
    return this.request<void>("POST", `/api/v1/chats/${chatId}/archive`);
  }
  /** Brings the chat back to the caller's list; 204. */
  unarchiveChat(chatId: number) {
    return this.request<void>("DELETE", `/api/v1/chats/${chatId}/archive`);
  }
  openChat(listingId: number, sellerId: number) {
    return this.request<Chat>("POST", "/api/v1/chats", { listing_id: listingId, seller_id: sellerId });
  }
  messages(chatId: number, options: { before?: number; limit?: number } = {}) {
    const query = new URLSearchParams();
    if (options.before !== undefined) query.set("before", String(options.before));
    if (options.limit !== undefined) query.set("limit", String(options.limit));
    const qs = query.size > 0 ? `?${query}` : "";
    return this.request<{ messages: Message[]; has_more: boolean }>("GET", `/api/v1/chats/${chatId}/messages${qs}`);
  }
  /** With `attachments` (upload ids, CONTRACT §11), a photo message: `content` is its caption and may be empty. */
  sendMessage(chatId: number, content: string, clientMsgId: string, attachments?: readonly string[]) {
    const body = { content, client_msg_id: clientMsgId, ...(attachments?.length ? { attachments } : {}) };
    return this.request<Message>("POST", `/api/v1/chats/${chatId}/messages`, body);
  }
  /** Where to send one photo's bytes (CONTRACT §11): 400 `validation_failed` for another type or size, 429 past 30 an hour. */
  createUpload(contentType: UploadContentType, size: number) {
    return this.request<UploadTicket>("POST", "/api/v1/uploads", { content_type: contentType, size });
  }
  /**
   * A short-lived URL of a photo's bytes, or of its thumbnail (CONTRACT §11), as JSON rather than the 302 a
   * browser follows: a page cannot read a redirect's Location, and an `<img>` cannot send the access token.
   */
  attachmentLink(attachmentId: string, options: { thumb?: boolean } = {}) {
    const path = `/api/v1/attachments/${encodeURIComponent(attachmentId)}${options.thumb ? "?size=thumb" : ""}`;
    return this.request<AttachmentLink>("GET", path, undefined, { accept: "application/json" });
  }
  editMessage(messageId: number, content: string) {
    return this.request<Message>("PATCH", `/api/v1/messages/${messageId}`, { content });
  }
  deleteMessage(messageId: number) {
    return this.request<Message>("DELETE", `/api/v1/messages/${messageId}`);
  }
  markRead(chatId: number, messageId: number) {
    return this.request<{ chat_id: number; message_id: number; unread_count: number }>(
      "POST",
      `/api/v1/chats/${chatId}/read`,
      { message_id: messageId },
    );
  }
  unread() {
    return this.request<{ total: number; chats: Record<string, number> }>("GET", "/api/v1/chats/unread");
  }
  /** Neither can send to the other or open a chat with the other; their presence and typing stop both ways. */
  block(userId: number) {
    return this.request<void>("POST", `/api/v1/users/${userId}/block`);
  }
  unblock(userId: number) {
    return this.request<void>("DELETE", `/api/v1/users/${userId}/block`);
  }
  /** Whom this user blocks, the most recently blocked first. */
  blocks() {
    return this.request<{ blocks: { user_id: number; created_at: string }[] }>("GET", "/api/v1/blocks").then(
      (r) => r.blocks,
    );
  }
  /** The same report of the same target again answers the same id. */
  report(report: ReportRequest) {
    return this.request<{ id: number }>("POST", "/api/v1/reports", report);
  }
}
