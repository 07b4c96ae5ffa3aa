import type {
  Chat,
  ChatEvent,
  ChatEventDraft,
  ChatListing,
  ChatSummary,
  Message,
  ServerFrame,
} from "../protocol/index.ts";
import { ErrorCode, Limits } from "../protocol/index.ts";
import { ChatApiError } from "../rest.ts";
import type { WebSocketFactory, WebSocketLike } from "../types.ts";
import type { XMLHttpRequestFactory } from "../upload.ts";
import { FAKE_STORAGE_ORIGIN, FAKE_STORAGE_PATH, FakePhotos, fakePhoto } from "./fake-photos.ts";
import { FakeXMLHttpRequest } from "./fake-xhr.ts";

export {
  FAKE_STORAGE_ORIGIN,
  FAKE_STORAGE_PATH,
  FakePhotos,
  type FakeUpload,
  fakePhoto,
  sniffImageType,
} from "./fake-photos.ts";
export { FakeXMLHttpRequest } from "./fake-xhr.ts";

/**
 * An in-process fake of the chat backend as the browser client sees it through the gateway
 * (CONTRACT §3–§5), in the spirit of centrifuge-js's `fakeServer`: a `fetch` and a WebSocket factory
 * to hand to `ChatClient`, an event log per user, and switches that a test flips to break things.
 * No network, no timers of its own: frames and callbacks arrive as microtasks, so fake timers decide
 * every delay the client makes.
 *
 *   const server = new FakeChatServer();
 *   const chat = server.addChat(1, 2);
 *   const client = new ChatClient({ baseUrl: FAKE_BASE_URL, getAccessToken: () => server.accessToken(1),
 *     fetch: server.fetch, webSocket: server.webSocket, xmlHttpRequest: server.xmlHttpRequest });
 *
 * Photos (CONTRACT §11) are `server.photos`: upload tickets, a storage on the gateway's path or on another
 * origin (`photos.storage`), the checks of a send with attachments, and links to stored photos.
 */
export const FAKE_BASE_URL = "http://chat.test";

const CONNECTING = 0;
const OPEN = 1;
const CLOSING = 2;
const CLOSED = 3;

/** One fetch the client made, as the server saw it (also the ones the switches failed). */
export interface RecordedRequest {
  method: string;
  path: string;
  query: Record<string, string>;
  userId: number | undefined;
  /** A JSON body, parsed; undefined for any other (a photo's bytes). */
  body: unknown;
  /** Header names in lower case. */
  headers: Record<string, string>;
  /** What fetch was asked to send of cookies: storage requests must say `omit`. */
  credentials: RequestCredentials | undefined;
  /** `Date.now()` when it arrived: fake time under fake timers. */
  at: number;
  status: number | "network_error";
}

/** A refusal the next send (REST or WebSocket) gets instead of being stored. */
export interface SendRefusal {
  code: string;
  message?: string;
  retryAfterMs?: number;
}

/** How the WebSocket `send_message` frames are answered. */
export type SendAnswer =
  /** store, `ack` the sender, `new_message` to every participant (the real server) */
  | "ack"
  /** store and tell the participants, but the `ack` is lost */
  | "store-without-ack"
  /** the frame is lost: nothing stored, nothing answered */
  | "drop-frame";

/** What the fake answers with an error body: the same fields the client reads from a real one. */
const FakeHttpError = ChatApiError;

const statusOf: Record<string, number> = {
  [ErrorCode.rateLimited]: 429,
  [ErrorCode.blocked]: 403,
  [ErrorCode.validationFailed]: 400,
  [ErrorCode.notFound]: 404,
  [ErrorCode.storageUnavailable]: 503,
  [ErrorCode.shuttingDown]: 503,
  [ErrorCode.internal]: 500,
  [ErrorCode.unauthorized]: 401,
  [ErrorCode.userSuspended]: 403,
  [ErrorCode.listingClosed]: 409,
};

/** A chat as the fake keeps it: the viewer's fields (`peer`, `archived`) are made per viewer. */
type StoredChat = Omit<Chat, "peer" | "archived">;

/** Headers as a plain object, names in lower case (no DOM.Iterable in the client's types). */
function headersOf(headers: Headers): Record<string, string> {
  const plain: Record<string, string> = {};
  headers.forEach((value, name) => {
    plain[name] = value;
  });
  return plain;
}

function later(fn: () => void): void {
  // A microtask, never a timer: fake timers must only count the client's own timers.
  void Promise.resolve().then(fn);
}

export class FakeChatServer {
  // ── switches ───────────────────────────────────────────────────────────────────────────────
  /** `POST /api/v2/ws-token` answers 401, as for an access token the gateway refuses. */
  wsTokenUnauthorized = false;
  /** What happens to a new socket: accepted at once, refused at once, or left to the test. */
  upgrades: "accept" | "refuse" | "manual" = "accept";
  /** Every fetch fails as a network error (a `TypeError`, as browsers reject). */
  failFetches = false;
  /** Paths answered 503 with this Retry-After (ms), as by a gateway in a reconnect storm. */
  readonly busyPaths = new Map<string, number>();
  sendAnswer: SendAnswer = "ack";
  /** The gateway's BASE_PATH: every path is under it (a path outside gets 404), and so is the ws-token's `ws_url`. */
  basePath = "";
  /** Cuts `/events` pages at this many events with `has_more`, as the real server cuts a page of long messages by bytes. */
  eventsPageCut: number | undefined;

  // ── what happened ──────────────────────────────────────────────────────────────────────────
  readonly requests: RecordedRequest[] = [];
  /** Photos: uploads, storage, attachments and their links, with switches of their own. */
  readonly photos = new FakePhotos();
  /** Every socket the client asked for, refused ones included, in order. */
  readonly sockets: FakeSocket[] = [];

  private lastEventId = 0;
  private nextChatId = 1;
  private nextMessageId = 1;
  private nextTicket = 1;
  private readonly logs = new Map<number, ChatEvent[]>();
  private readonly chats = new Map<number, StoredChat>();
  /** `${chatId}:${userId}` of the chats each user archived. */
  private readonly archivedBy = new Set<string>();
  /** `${blocker}:${blocked}` → when; the fake does not refuse sends between them. */
  private readonly blocked = new Map<string, string>();
  /** Users the platform suspended: sends refused, sockets closed with 4003 (CONTRACT §8). */
  private readonly suspendedUsers = new Set<number>();
  private readonly names = new Map<number, { display_name: string | null; avatar_url: string | null }>();
  private readonly messages: Message[] = [];
  private readonly readMarkers = new Map<string, number>();
  private readonly tickets = new Map<string, number>();
  private readonly sendRefusals: SendRefusal[] = [];
  private readonly holds: Array<{ path: string; waiting: Array<() => void>; released: boolean }> = [];

  /** The access token of a user, for `getAccessToken`; anything else is a 401. */
  accessToken(userId: number): string {
    return `access-${userId}`;
  }

  /**
   * A JWT-shaped access token of a user (not signed: the fake trusts it) that the fake refuses with 401 from
   * `exp` on, by `Date.now()`; `iat` is now. `exp` in whole seconds, as a monolith's.
   */
  expiringAccessToken(userId: number, lifetimeS: number): string {
    const iat = Math.floor(Date.now() / 1000);
    const encode = (value: object) =>
      btoa(JSON.stringify(value)).replace(/=+$/, "").replace(/\+/g, "-").replace(/\//g, "_");
    return `${encode({ alg: "none" })}.${encode({ sub: String(userId), iat, exp: iat + lifetimeS })}.fake`;
  }

  /** Access tokens answered 401 whatever they say (revoked by the monolith, say). */
  private readonly refusedTokens = new Set<string>();
  refuseToken(token: string): void {
    this.refusedTokens.add(token);
  }

  /** The user of an `Authorization` header: `access-N`, or an expiring token before its `exp`. */
  private userOf(auth: string): number | undefined {
    if (this.refusedTokens.has(auth.replace(/^Bearer /, ""))) return undefined;
    const plain = /^Bearer access-(\d+)$/.exec(auth);
    if (plain) return Number(plain[1]);
    const payload = /^Bearer [\w-]+\.([\w-]+)\.fake$/.exec(auth)?.[1];
    if (!payload) return undefined;
    const claims = JSON.parse(atob(payload.replace(/-/g, "+").replace(/_/g, "/"))) as { sub: string; exp: number };
    return claims.exp * 1000 > Date.now() ? Number(claims.sub) : undefined;
  }

  /** A chat between two users; appends `chat_created` to both logs (each with its own `peer`). */
  addChat(buyerId: number, sellerId: number, listingId = 1, listing: ChatListing | null = null): Chat {
    const at = new Date().toISOString();
    const chat: StoredChat = {
      id: this.nextChatId++,
      listing_id: listingId,
      buyer_id: buyerId,
      seller_id: sellerId,
      created_at: at,
      last_activity_at: at,
      listing,
    };
    this.chats.set(chat.id, chat);
    this.append((userId) => ({ type: "chat_created", chat: this.viewOf(chat, userId) }), chat);
    return this.viewOf(chat, buyerId);
  }

  /** The chat as `userId` sees it: the other participant as `peer`, and whether they archived it. */
  viewOf(chat: StoredChat, userId: number): Chat {
    const other = chat.buyer_id === userId ? chat.seller_id : chat.buyer_id;
    const known = this.names.get(other);
    return {
      ...chat,
      peer: { id: other, display_name: known?.display_name ?? null, avatar_url: known?.avatar_url ?? null },
      archived: this.archivedBy.has(`${chat.id}:${userId}`),
    };
  }

  /** `PUT /internal/chat/users/:id`: what chat lists show of that person from then on (no event). */
  setPerson(userId: number, displayName: string | null, avatarUrl: string | null = null): void {
    this.names.set(userId, { display_name: displayName, avatar_url: avatarUrl });
  }

  /** The platform changed the chat's listing: `chat_updated` to both participants. */
  updateListing(chatId: number, listing: ChatListing): void {
    const chat = this.chats.get(chatId);
    if (!chat) throw new Error(`no chat ${chatId}`);
    chat.listing = listing;
    this.append((userId) => ({ type: "chat_updated", chat: this.viewOf(chat, userId) }), chat);
  }

  /** A system message (`sender_id: null`): both participants get it, and it un-archives the chat for both. */
  postSystem(chatId: number, content: string, data: Record<string, unknown> | null = null): Message {
    const chat = this.chats.get(chatId);
    if (!chat) throw new Error(`no chat ${chatId}`);
    const message = this.newMessage(chatId, null, content, null, "system", data);
    this.archivedBy.delete(`${chatId}:${chat.buyer_id}`);
    this.archivedBy.delete(`${chatId}:${chat.seller_id}`);
    this.append({ type: "new_message", chat_id: chatId, message }, chat);
    return message;
  }

  /** Suspends a user: live sockets close with 4003, new ones are accepted then closed with 4003, sends get 403. */
  suspend(userId: number): void {
    this.suspendedUsers.add(userId);
    for (const socket of this.openSockets(userId)) socket.closeWith(4003, "suspended");
  }

  unsuspend(userId: number): void {
    this.suspendedUsers.delete(userId);
  }

  isArchived(chatId: number, userId: number): boolean {
    return this.archivedBy.has(`${chatId}:${userId}`);
  }

  /** A message stored on the server's side (e.g. the other participant wrote it). */
  post(chatId: number, senderId: number, content = `message ${this.nextMessageId}`): Message {
    return this.store(senderId, chatId, content, null).message;
  }

  /**
   * A photo message stored on the server's side (the other participant sent it): each file uploaded as it,
   * complete, then sent with `content` as the caption.
   */
  async postPhotos(chatId: number, senderId: number, files: Blob[] = [fakePhoto()], content = ""): Promise<Message> {
    const ids: string[] = [];
    for (const file of files) {
      const [, ticket] = this.photos.createUpload(senderId, { content_type: file.type, size: file.size });
      const id = (ticket as { upload_id: string }).upload_id;
      const upload = this.photos.uploads.get(id);
      if (upload) upload.bytes = new Uint8Array(await file.arrayBuffer());
      ids.push(id);
    }
    return this.store(senderId, chatId, content, null, ids).message;
  }

  /** The user's event log: what WebSocket and polling must hand the client, exactly once, in order. */
  eventsFor(userId: number): ChatEvent[] {
    return [...(this.logs.get(userId) ?? [])];
  }

  /** The stored messages of a chat, oldest first. */
  messagesIn(chatId: number): Message[] {
    return this.messages.filter((m) => m.chat_id === chatId);
  }

  /** The next sends (REST or WebSocket, one each) are refused with these, in order. */
  refuseNextSends(...refusals: SendRefusal[]): void {
    this.sendRefusals.push(...refusals);
  }

  /**
   * Requests to `path` (without query) wait from now on until `release()`; they are answered with the
   * state at release time, as a request that was slow on the way in.
   */
  hold(path: string): { release(): void; readonly waiting: number } {
    const hold = { path, waiting: [] as Array<() => void>, released: false };
    this.holds.push(hold);
    return {
      release: () => {
        hold.released = true;
        this.holds.splice(this.holds.indexOf(hold), 1);
        for (const go of hold.waiting.splice(0)) go();
      },
      get waiting() {
        return hold.waiting.length;
      },
    };
  }

  /** Recorded requests, optionally only those of one method and path (without query). */
  requestsTo(method?: string, path?: string): RecordedRequest[] {
    return this.requests.filter((r) => (!method || r.method === method) && (!path || r.path === path));
  }

  /** The last socket the client asked for. */
  get lastSocket(): FakeSocket {
    const socket = this.sockets.at(-1);
    if (!socket) throw new Error("the client has not opened any socket");
    return socket;
  }

  /** Sockets the client opened and the server accepted, still open. */
  openSockets(userId?: number): FakeSocket[] {
    return this.sockets.filter((s) => s.isLive && (userId === undefined || s.userId === userId));
  }

  /** A frame the server sends to every open socket of a user (typing, presence…). */
  pushTo(userId: number, frame: ServerFrame): void {
    for (const socket of this.openSockets(userId)) socket.push(frame);
  }

  // ── the client's doors ─────────────────────────────────────────────────────────────────────

  readonly fetch = async (input: RequestInfo | URL, init?: RequestInit): Promise<Response> => {
    const url = new URL(typeof input === "string" || input instanceof URL ? input : input.url);
    // Any origin is the gateway's (tests name their own), but the storage's of `photos.storage = "s3"`.
    const onGateway = url.origin !== FAKE_STORAGE_ORIGIN;
    if (this.basePath && onGateway) {
      if (!url.pathname.startsWith(`${this.basePath}/`)) return new Response(null, { status: 404 });
      url.pathname = url.pathname.slice(this.basePath.length);
    }
    const storage = !onGateway || url.pathname.startsWith(FAKE_STORAGE_PATH);
    const method = (init?.method ?? "GET").toUpperCase();
    const headers = new Headers(init?.headers);
    const auth = headers.get("authorization") ?? "";
    const userId = this.userOf(auth);
    let body: unknown;
    try {
      body = typeof init?.body === "string" ? JSON.parse(init.body) : undefined;
    } catch {
      body = undefined;
    }
    const record: RecordedRequest = {
      method,
      path: url.pathname,
      query: Object.fromEntries(url.searchParams),
      userId,
      body,
      headers: headersOf(headers),
      credentials: init?.credentials,
      at: Date.now(),
      status: "network_error",
    };
    this.requests.push(record);
    const hold = this.holds.find((h) => h.path === url.pathname && !h.released);
    if (hold) await new Promise<void>((go) => hold.waiting.push(go));
    if (this.failFetches) throw new TypeError("Failed to fetch");
    if (storage) {
      const key = url.pathname.replace(/^\/bucket\//, "").replace(FAKE_STORAGE_PATH, "");
      const answer = await this.photos.storageRequest(method, url, key, headers, init?.body);
      record.status = answer.status;
      return answer;
    }
    let status: number;
    let answer: unknown;
    const answerHeaders: Record<string, string> = { "content-type": "application/json" };
    try {
      if (userId === undefined) throw new FakeHttpError(401, ErrorCode.unauthorized, "missing or bad access token");
      let extra: Record<string, string> | undefined;
      [status, answer, extra] = this.route(method, url, userId, body, headers);
      Object.assign(answerHeaders, extra);
    } catch (error) {
      if (!(error instanceof FakeHttpError)) throw error;
      status = error.status;
      answer = { error: { code: error.code, message: error.message } };
      if (error.retryAfterMs !== undefined) {
        answerHeaders["retry-after"] = String(Math.ceil(error.retryAfterMs / 1000));
      }
    }
    record.status = status;
    if (status === 204 || answer === undefined) return new Response(null, { status, headers: answerHeaders });
    return new Response(JSON.stringify(answer), { status, headers: answerHeaders });
  };

  /** An XMLHttpRequest whose requests this server answers, for `ChatClientOptions.xmlHttpRequest` (photo uploads). */
  readonly xmlHttpRequest: XMLHttpRequestFactory = () => new FakeXMLHttpRequest(this.fetch);

  readonly webSocket: WebSocketFactory = (url) => {
    const parsed = new URL(url);
    // A socket to any other path is refused, as the gateway answers 404 before any upgrade.
    const token = parsed.pathname === `${this.basePath}/ws/chat` ? (parsed.searchParams.get("token") ?? "") : "";
    const userId = this.tickets.get(token);
    this.tickets.delete(token); // single use (CONTRACT §3)
    const afterParam = parsed.searchParams.get("after");
    const socket = new FakeSocket(this, url, userId, afterParam === null ? undefined : Number(afterParam));
    this.sockets.push(socket);
    if (userId === undefined) socket.refuse();
    else if (this.suspendedUsers.has(userId)) {
      // As the real server: the upgrade is accepted, then closed with 4003 before any `connected`.
      socket.open({ greet: false });
      socket.closeWith(4003, "suspended");
    } else if (this.upgrades === "accept") socket.open();
    else if (this.upgrades === "refuse") socket.refuse();
    return socket;
  };

  // ── inside ─────────────────────────────────────────────────────────────────────────────────

  private route(
    method: string,
    url: URL,
    userId: number,
    body: unknown,
    headers: Headers,
  ): [number, unknown, Record<string, string>?] {
    const path = url.pathname;
    const busyFor = this.busyPaths.get(path);
    if (busyFor !== undefined) throw new FakeHttpError(503, "upstream_busy", "busy: retry shortly", busyFor);
    if (method === "POST" && path === "/api/v2/ws-token") {
      if (this.wsTokenUnauthorized) throw new FakeHttpError(401, ErrorCode.unauthorized, "access token refused");
      const token = `ticket-${this.nextTicket++}`;
      this.tickets.set(token, userId);
      return [200, { token, expires_in: 60, ws_url: `${this.basePath}/ws/chat` }];
    }
    if (method === "GET" && path === "/api/v1/events") {
      const afterParam = url.searchParams.get("after");
      const limitParam = url.searchParams.get("limit");
      const limit = Math.min(Limits.eventsPageMax, limitParam ? Number(limitParam) : Limits.eventsPageDefault);
      const end = this.lastEventId;
      if (afterParam === null) return [200, { events: [], last_event_id: end, has_more: false }];
      const after = Number(afterParam);
      const events = this.eventsFor(userId)
        .filter((e) => e.event_id > after)
        .slice(0, Math.min(limit, this.eventsPageCut ?? limit));
      const last = events.at(-1)?.event_id;
      // Same rule as the real server: a page cut short (by `limit`, or by `eventsPageCut` as the real one
      // cuts by bytes) → its last id and `has_more`; otherwise the end of the stream, even below `after` (a
      // cursor from beyond the stream is told where it ends).
      const full = events.length === Math.min(limit, this.eventsPageCut ?? limit);
      const cursor = full && last !== undefined ? last : Math.max(end, last ?? 0);
      return [200, { events, last_event_id: cursor, has_more: full }];
    }
    if (method === "GET" && path === "/api/v1/chats/unread") return [200, this.unread(userId)];
    if (method === "POST" && path === "/api/v1/uploads") return this.photos.createUpload(userId, body);
    const attachmentRoute = /^\/api\/v1\/attachments\/([\w-]+)$/.exec(path);
    if (method === "GET" && attachmentRoute) {
      const attachmentId = attachmentRoute[1] ?? "";
      const chatId = this.photos.chatOf(attachmentId);
      // A photo of a chat the caller is not in is as missing as one that never was.
      if (chatId === undefined) throw new FakeHttpError(404, ErrorCode.notFound, "attachment not found");
      this.participant(chatId, userId);
      const thumb = url.searchParams.get("size") === "thumb";
      return this.photos.link(attachmentId, thumb, headers.get("accept"));
    }
    if (method === "GET" && path === "/api/v1/chats") {
      const archived = url.searchParams.get("archived") === "1";
      return [200, { chats: this.listFor(userId, archived) }];
    }
    const archiveRoute = /^\/api\/v1\/chats\/(\d+)\/archive$/.exec(path);
    if ((method === "POST" || method === "DELETE") && archiveRoute) {
      const chat = this.participant(Number(archiveRoute[1]), userId);
      const key = `${chat.id}:${userId}`;
      const archive = method === "POST";
      if (archive !== this.archivedBy.has(key)) {
        if (archive) this.archivedBy.add(key);
        else this.archivedBy.delete(key);
        // This user's devices only (CONTRACT §8).
        this.append({ type: "chat_updated", chat: this.viewOf(chat, userId) }, chat, [userId]);
      }
      return [204, undefined];
    }
    const chatRoute = /^\/api\/v1\/chats\/(\d+)\/(messages|read)$/.exec(path);
    if (method === "GET" && chatRoute?.[2] === "messages") {
      // History, newest first, `before` a message id (CONTRACT §4).
      const chat = this.participant(Number(chatRoute[1]), userId);
      const before = url.searchParams.get("before");
      const limit = Math.min(
        Limits.messagesPageMax,
        Number(url.searchParams.get("limit") ?? Limits.messagesPageDefault),
      );
      const older = this.messagesIn(chat.id)
        .filter((m) => before === null || m.id < Number(before))
        .reverse();
      return [200, { messages: older.slice(0, limit), has_more: older.length > limit }];
    }
    if (method === "GET" && path === "/api/v1/blocks") {
      const blocks = [...this.blocked].filter(([key]) => key.startsWith(`${userId}:`));
      return [200, { blocks: blocks.map(([key, at]) => ({ user_id: Number(key.split(":")[1]), created_at: at })) }];
    }
    const blockRoute = /^\/api\/v1\/users\/(\d+)\/block$/.exec(path);
    if ((method === "POST" || method === "DELETE") && blockRoute) {
      // Only the blocker's own devices hear it (CONTRACT §10).
      const other = Number(blockRoute[1]);
      const key = `${userId}:${other}`;
      const block = method === "POST";
      if (block !== this.blocked.has(key)) {
        if (block) this.blocked.set(key, new Date().toISOString());
        else this.blocked.delete(key);
        this.append({ type: block ? "user_blocked" : "user_unblocked", user_id: other }, undefined, [userId]);
      }
      return [204, undefined];
    }
    const messageRoute = /^\/api\/v1\/messages\/(\d+)$/.exec(path);
    if ((method === "PATCH" || method === "DELETE") && messageRoute) {
      const at = this.messages.findIndex((m) => m.id === Number(messageRoute[1]));
      const found = this.messages[at];
      if (!found || found.sender_id !== userId) throw new FakeHttpError(404, ErrorCode.notFound, "message not found");
      const chat = this.participant(found.chat_id, userId);
      const now = new Date().toISOString();
      const content = (body as { content?: unknown } | undefined)?.content;
      if (method === "PATCH" && (typeof content !== "string" || content.trim() === ""))
        throw new FakeHttpError(400, ErrorCode.validationFailed, "content must be 1 to 4000 characters");
      const message: Message =
        method === "PATCH"
          ? { ...found, content: content as string, edited_at: now }
          : { ...found, content: "", deleted_at: now, deleted_by: "sender" };
      this.messages[at] = message;
      const type = method === "PATCH" ? "message_edited" : "message_deleted";
      this.append({ type, chat_id: chat.id, message }, chat);
      return [200, message];
    }
    if (method === "POST" && chatRoute) {
      const chatId = Number(chatRoute[1]);
      const fields = (body ?? {}) as {
        content?: unknown;
        client_msg_id?: unknown;
        message_id?: unknown;
        attachments?: unknown;
      };
      if (chatRoute[2] === "messages") {
        const { message, created } = this.store(
          userId,
          chatId,
          fields.content,
          typeof fields.client_msg_id === "string" ? fields.client_msg_id : null,
          fields.attachments,
        );
        return [created ? 201 : 200, message];
      }
      return [200, this.markRead(userId, chatId, Number(fields.message_id))];
    }
    throw new FakeHttpError(404, ErrorCode.notFound, `no route ${method} ${path}`);
  }

  /** `GET /api/v1/chats` for a user: the archived ones, or the others. */
  private listFor(userId: number, archived: boolean): ChatSummary[] {
    return [...this.chats.values()]
      .filter((c) => (c.buyer_id === userId || c.seller_id === userId) && this.isArchived(c.id, userId) === archived)
      .map((c) => ({
        ...this.viewOf(c, userId),
        last_message: this.messagesIn(c.id).at(-1) ?? null,
        unread_count: this.unreadIn(c, userId),
        peer_last_read_message_id: null,
      }));
  }

  private participant(chatId: number, userId: number): StoredChat {
    const chat = this.chats.get(chatId);
    if (!chat || (chat.buyer_id !== userId && chat.seller_id !== userId))
      throw new FakeHttpError(404, ErrorCode.notFound, "chat not found");
    return chat;
  }

  /**
   * Stores a message (idempotent on the sender's client_msg_id), or throws the refusal. With `attachments`
   * (upload ids, CONTRACT §11) an `image` message, whose content may be empty.
   */
  store(
    senderId: number,
    chatId: number,
    content: unknown,
    clientMsgId: string | null,
    attachments?: unknown,
  ): { message: Message; created: boolean } {
    const chat = this.participant(chatId, senderId);
    const photos = Array.isArray(attachments) && attachments.length > 0;
    if (
      typeof content !== "string" ||
      (!photos && content.trim() === "") ||
      [...content].length > Limits.maxContentChars
    )
      throw new FakeHttpError(400, ErrorCode.validationFailed, "content must be 1 to 4000 characters");
    if (this.suspendedUsers.has(senderId))
      throw new FakeHttpError(403, ErrorCode.userSuspended, "your account is suspended");
    if (chat.listing?.status === "removed")
      throw new FakeHttpError(409, ErrorCode.listingClosed, "this listing was removed");
    const refusal = this.sendRefusals.shift();
    if (refusal)
      throw new FakeHttpError(
        statusOf[refusal.code] ?? 400,
        refusal.code,
        refusal.message ?? refusal.code,
        refusal.retryAfterMs,
      );
    if (clientMsgId !== null) {
      const existing = this.messages.find((m) => m.sender_id === senderId && m.client_msg_id === clientMsgId);
      if (existing) return { message: existing, created: false };
    }
    const uploads = this.photos.check(senderId, attachments);
    const message = this.newMessage(chatId, senderId, content, clientMsgId, photos ? "image" : "text", null);
    message.attachments = this.photos.attach(uploads, message.id, chatId);
    // A message brings the chat back from the archive of everyone but its sender, with no chat_updated.
    for (const userId of [chat.buyer_id, chat.seller_id]) {
      if (userId !== senderId) this.archivedBy.delete(`${chatId}:${userId}`);
    }
    this.append({ type: "new_message", chat_id: chatId, message }, chat);
    return { message, created: true };
  }

  private newMessage(
    chatId: number,
    senderId: number | null,
    content: string,
    clientMsgId: string | null,
    kind: Message["kind"],
    data: Message["data"],
  ): Message {
    const message: Message = {
      id: this.nextMessageId++,
      chat_id: chatId,
      sender_id: senderId,
      kind,
      content,
      data,
      attachments: [],
      client_msg_id: clientMsgId,
      created_at: new Date().toISOString(),
      edited_at: null,
      deleted_at: null,
      deleted_by: null,
    };
    this.messages.push(message);
    return message;
  }

  markRead(userId: number, chatId: number, messageId: number) {
    const chat = this.participant(chatId, userId);
    const message = this.messages.find((m) => m.id === messageId && m.chat_id === chatId);
    if (!message) throw new FakeHttpError(404, ErrorCode.notFound, "message not found");
    const key = `${chatId}:${userId}`;
    if ((this.readMarkers.get(key) ?? 0) < messageId) {
      this.readMarkers.set(key, messageId);
      this.append(
        {
          type: "message_read",
          chat_id: chatId,
          message_id: messageId,
          read_by: userId,
          read_at: new Date().toISOString(),
        },
        chat,
      );
    }
    return { chat_id: chatId, message_id: messageId, unread_count: this.unreadIn(chat, userId) };
  }

  unread(userId: number): { total: number; chats: Record<string, number> } {
    const chats: Record<string, number> = {};
    let total = 0;
    for (const chat of this.chats.values()) {
      if (chat.buyer_id !== userId && chat.seller_id !== userId) continue;
      const n = this.unreadIn(chat, userId);
      if (n > 0) chats[String(chat.id)] = n;
      total += n;
    }
    return { total, chats };
  }

  private unreadIn(chat: StoredChat, userId: number): number {
    const marker = this.readMarkers.get(`${chat.id}:${userId}`) ?? 0;
    return this.messages.filter((m) => m.chat_id === chat.id && m.sender_id !== userId && m.id > marker).length;
  }

  /**
   * Gives the change the next event id, appends it to each participant's log (or to `to`'s) and pushes it
   * live; a draft that is a function is made per user (a chat as each one sees it).
   */
  private append(
    draft: ChatEventDraft | ((userId: number) => ChatEventDraft),
    chat: StoredChat | undefined,
    to: number[] = chat ? [chat.buyer_id, chat.seller_id] : [],
  ): void {
    const eventId = ++this.lastEventId;
    for (const userId of new Set(to)) {
      const event = { ...(typeof draft === "function" ? draft(userId) : draft), event_id: eventId } as ChatEvent;
      let log = this.logs.get(userId);
      if (!log) {
        log = [];
        this.logs.set(userId, log);
      }
      log.push(event);
      for (const socket of this.openSockets(userId)) socket.pushEvent(event);
    }
  }

  /** @internal the socket's view of the server */
  get currentEventId(): number {
    return this.lastEventId;
  }

  /** @internal a frame a socket received from the client */
  handleFrame(socket: FakeSocket, frame: Record<string, unknown>): void {
    const userId = socket.userId;
    if (userId === undefined) return;
    switch (frame.type) {
      case "ping":
        socket.push({ type: "pong", timestamp: new Date().toISOString() });
        return;
      case "resume":
        socket.replay(Number(frame.after));
        return;
      case "typing": {
        const chat = this.chats.get(Number(frame.chat_id));
        if (!chat) return;
        const other = chat.buyer_id === userId ? chat.seller_id : chat.buyer_id;
        this.pushTo(other, { type: "typing", chat_id: chat.id, user_id: userId, is_typing: frame.is_typing === true });
        return;
      }
      case "mark_read":
        this.guard(socket, undefined, () => this.markRead(userId, Number(frame.chat_id), Number(frame.message_id)));
        return;
      case "send_message": {
        const ref = typeof frame.client_msg_id === "string" ? frame.client_msg_id : undefined;
        if (this.sendAnswer === "drop-frame") return;
        this.guard(socket, ref, () => {
          const { message } = this.store(userId, Number(frame.chat_id), frame.content, ref ?? null, frame.attachments);
          if (this.sendAnswer === "ack" && ref !== undefined) socket.push({ type: "ack", ref, message });
        });
        return;
      }
      default:
        socket.push({
          type: "error",
          code: ErrorCode.unknownType,
          message: `unknown frame type ${String(frame.type)}`,
        });
    }
  }

  private guard(socket: FakeSocket, ref: string | undefined, fn: () => void): void {
    try {
      fn();
    } catch (error) {
      if (!(error instanceof FakeHttpError)) throw error;
      socket.push({
        type: "error",
        code: error.code,
        message: error.message,
        ...(ref === undefined ? {} : { ref }),
        ...(error.retryAfterMs === undefined ? {} : { retry_after_ms: error.retryAfterMs }),
      } as ServerFrame);
    }
  }
}

/**
 * One socket of the client, driven by the test (or at once by the server's `upgrades` switch):
 * `open()` accepts the upgrade, `refuse()` fails it, `drop()` breaks it, `closeWith(code)` closes it.
 * Browser semantics: callbacks are asynchronous; `send` throws while connecting and is ignored once closed.
 */
export class FakeSocket implements WebSocketLike {
  readyState = CONNECTING;
  onopen: ((event: unknown) => void) | null = null;
  onmessage: ((event: { data: unknown }) => void) | null = null;
  onclose: ((event: { code: number; reason: string }) => void) | null = null;
  onerror: ((event: unknown) => void) | null = null;
  /** Frames the client sent, parsed, in order. */
  readonly sent: Array<Record<string, unknown>> = [];
  /** Event ids written to the client, in order (replay and live). */
  readonly eventIdsSent: number[] = [];
  /** How it ended, and who ended it. */
  closed: { by: "client" | "server"; code: number; reason: string } | undefined;
  /** `Date.now()` when the client asked for it. */
  readonly createdAt = Date.now();
  /** Server side: the upgrade was accepted and the server has not closed it. */
  private accepted = false;
  /** Server side: `connected` was sent; events flow only from then on (the real server holds them back). */
  private greeted = false;
  private lastSent = 0;
  private blackHoled = false;
  private readonly server: FakeChatServer;
  readonly url: string;
  /** The user its ws-token belonged to; undefined for a bad or reused token (refused). */
  readonly userId: number | undefined;
  /** The `after` the client asked to resume from. */
  readonly after: number | undefined;

  constructor(server: FakeChatServer, url: string, userId: number | undefined, after: number | undefined) {
    this.server = server;
    this.url = url;
    this.userId = userId;
    this.after = after;
  }

  /** Accepted and not closed by either side: the server pushes events to it. */
  get isLive(): boolean {
    return this.accepted && this.closed === undefined;
  }

  /** Frames of one type that the client sent. */
  sentOfType(type: string): Array<Record<string, unknown>> {
    return this.sent.filter((f) => f.type === type);
  }

  /**
   * Accepts the upgrade: `connected`, then the replay from `after` (or `replayFrom`, or from now), then
   * live events. With `greet: false` the socket opens but stays silent until `greet()`, as a server slow
   * to read its cursor.
   */
  open(options: { replayFrom?: number; greet?: boolean } = {}): void {
    if (this.readyState !== CONNECTING || this.userId === undefined) throw new Error("only a connecting socket opens");
    this.accepted = true;
    later(() => {
      if (this.readyState !== CONNECTING) return;
      this.readyState = OPEN;
      this.onopen?.({});
    });
    if (options.greet !== false) this.greet(options);
  }

  /** Sends `connected` and the replay (see `open`). */
  greet(options: { replayFrom?: number } = {}): void {
    if (!this.isLive || this.greeted || this.userId === undefined) throw new Error("greet an accepted socket once");
    this.greeted = true;
    const current = this.server.currentEventId;
    this.push({
      type: "connected",
      user_id: this.userId,
      connection_id: `fake-${this.server.sockets.indexOf(this) + 1}`,
      timestamp: new Date().toISOString(),
      last_event_id: current,
    });
    // As the real server: a cursor beyond the stream's end starts from the end.
    this.replay(Math.min(options.replayFrom ?? this.after ?? current, current));
  }

  /** The upgrade failed (401/429/503 or no network): the browser reports an error and close 1006. */
  refuse(): void {
    if (this.readyState !== CONNECTING) throw new Error("only a connecting socket can be refused");
    this.finish("server", 1006, "", true);
  }

  /** The connection broke without a close frame. */
  drop(): void {
    this.finish("server", 1006, "", true);
  }

  /**
   * The path goes dead with TCP up (a NAT that forgot the flow, a sleeping laptop, a dead proxy): from
   * now on no frame passes either way and no close comes, until the client closes the socket itself.
   */
  blackHole(): void {
    this.blackHoled = true;
  }

  /** The server closes with a code (1001 going away, 1011, 1013 slow consumer…). */
  closeWith(code: number, reason = ""): void {
    this.finish("server", code, reason, false);
  }

  /** @internal sends the user's events after `after`, then live ones continue from there. */
  replay(after: number): void {
    this.lastSent = after;
    for (const event of this.server.eventsFor(this.userId ?? 0)) this.pushEvent(event);
  }

  /** @internal an event for this socket: written once, in order. */
  pushEvent(event: ChatEvent): void {
    if (!this.isLive || !this.greeted || event.event_id <= this.lastSent) return;
    this.lastSent = event.event_id;
    this.eventIdsSent.push(event.event_id);
    this.push(event);
  }

  /** A frame from the server to the client. */
  push(frame: ServerFrame): void {
    if (!this.isLive || this.blackHoled) return;
    const data = JSON.stringify(frame);
    later(() => {
      if (this.readyState === OPEN) this.onmessage?.({ data });
    });
  }

  // ── the browser API the client uses ────────────────────────────────────────────────────────

  send(data: string): void {
    if (this.readyState === CONNECTING) throw new Error("InvalidStateError: still in CONNECTING state");
    if (this.readyState !== OPEN || this.closed) return;
    const frame = JSON.parse(data) as Record<string, unknown>;
    this.sent.push(frame);
    if (!this.blackHoled) this.server.handleFrame(this, frame);
  }

  close(code = 1000, reason = ""): void {
    if (this.closed) return;
    this.finish("client", code, reason, false);
  }

  private finish(by: "client" | "server", code: number, reason: string, error: boolean): void {
    if (this.closed) return;
    this.closed = { by, code, reason };
    // The client's close() is CLOSING at once; a server's close reaches the client after the frames before it.
    if (by === "client") this.readyState = CLOSING;
    later(() => {
      this.readyState = CLOSED;
      if (error) this.onerror?.({});
      this.onclose?.({ code, reason });
    });
  }
}

/**
 * What a client needs to talk to `server` as `userId`, for `new ChatClient({ ...connectionTo(server, userId) })`:
 * its fetch, its sockets, its XMLHttpRequest (photo uploads, with progress), the user's access token, the globals' timers looked up at call time (so that
 * vi.useFakeTimers() takes them over) and a fixed random draw.
 */
export function connectionTo(server: FakeChatServer, userId: number) {
  return {
    baseUrl: FAKE_BASE_URL,
    getAccessToken: () => server.accessToken(userId),
    fetch: server.fetch,
    webSocket: server.webSocket,
    xmlHttpRequest: server.xmlHttpRequest,
    timers: {
      setTimeout: (fn: () => void, ms: number) => setTimeout(fn, ms),
      clearTimeout: (handle: unknown) => clearTimeout(handle as ReturnType<typeof setTimeout>),
      now: () => Date.now(),
    },
    random: () => 0.5,
  };
}
