/**
 * The demo chat page (development only): everything goes through the `shared/` ChatClient, as the
 * monolith frontend would use it. Bundled by the gateway with esbuild (src/dev/demo-page.ts).
 *
 * Rule of the page: text from users (message content, previews) is only ever put in the DOM with
 * `textContent`; nothing here parses HTML.
 *
 * `window.chatDemo` exposes what the page received (every event id, in order, and any anomaly it saw) so
 * that tests and curious developers can check the client's "exactly once, in order" from the outside.
 *
 * Safety (CONTRACT §10): a chat can be reported, and so can the other person and each of their messages
 * (inline forms, no dialogs); the other person can be blocked and unblocked. Whom this user blocks comes
 * from `GET /api/v1/blocks` at sign-in, then from the `user_blocked` / `user_unblocked` events that every
 * device of this user hears. A user who is blocked is told nothing until a send is refused `blocked`.
 *
 * The platform's voice (CONTRACT §8): each chat shows its listing (photo, title, price, a sold / reserved /
 * removed badge) and the other person's name and avatar ("User N" while the platform has not named them);
 * system messages are drawn centred, without a bubble; a chat can be archived (the "Archived" list), and
 * comes back by itself when someone else writes in it. A suspended user and a removed listing are said in
 * words, and the send form is closed while they last.
 */

import { ChatApiError, ChatClient, type ChatClientMode, type ReportRequest } from "@listings-chat/client";
import {
  type Chat,
  type ChatEvent,
  type ChatListing,
  type ChatPeer,
  type ChatSummary,
  ErrorCode,
  type ListingStatus,
  type Message,
  type ReportReason,
  reportReasons,
} from "@listings-chat/shared";

const PAGE_SIZE = 20;
/** A typing indicator disappears this long after the last `typing` frame that said so. */
const TYPING_EXPIRES_MS = 5_000;
/** Older messages are loaded when the list is scrolled this close to its top. */
const LOAD_OLDER_WITHIN_PX = 48;
const SESSION_KEY = "listings-chat-demo";
/** What a suspended user reads, above the list and in place of the send form (CONTRACT §8). */
const SUSPENDED_TEXT =
  "Your account is suspended: you can read your chats, but not send messages, edit them or start new chats.";

// ---------------------------------------------------------------------------------------------------
// Elements

function element<T extends HTMLElement = HTMLElement>(testId: string): T {
  const found = document.querySelector<T>(`[data-testid="${testId}"]`);
  if (!found) throw new Error(`the page has no [data-testid="${testId}"]`);
  return found;
}

const ui = {
  mode: element("mode"),
  me: element("me"),
  unreadTotal: element("unread-total"),
  signOut: element<HTMLButtonElement>("sign-out"),
  banner: element("fallback-banner"),
  bannerText: element("fallback-text"),
  retryNow: element<HTMLButtonElement>("retry-now"),
  error: element("error"),
  signIn: element("sign-in"),
  signInForm: element<HTMLFormElement>("sign-in-form"),
  signInUser: element<HTMLInputElement>("sign-in-user"),
  workspace: element("workspace"),
  openChat: element<HTMLDetailsElement>("open-chat"),
  openChatForm: element<HTMLFormElement>("open-chat-form"),
  openChatListing: element<HTMLInputElement>("open-chat-listing"),
  openChatSeller: element<HTMLInputElement>("open-chat-seller"),
  chatList: element<HTMLUListElement>("chat-list"),
  noChats: element("no-chats"),
  chatListTitle: element("chat-list-title"),
  archivedToggle: element<HTMLButtonElement>("archived-toggle"),
  suspendedBanner: element("suspended-banner"),
  archiveChat: element<HTMLButtonElement>("archive-chat"),
  chatListing: element("chat-listing"),
  chatView: element("chat-view"),
  chatPlaceholder: element("chat-placeholder"),
  chatTitle: element("chat-title"),
  reportChat: element<HTMLButtonElement>("report-chat"),
  reportUser: element<HTMLButtonElement>("report-user"),
  blockUser: element<HTMLButtonElement>("block-user"),
  reportPanel: element("report-panel"),
  chatNotice: element("chat-notice"),
  scroller: element("message-scroller"),
  historyStatus: element("history-status"),
  messageList: element<HTMLOListElement>("message-list"),
  typing: element("typing-indicator"),
  sendForm: element<HTMLFormElement>("send-form"),
  sendInput: element<HTMLTextAreaElement>("send-input"),
  sendSubmit: element<HTMLButtonElement>("send-submit"),
};

/** `<tag class=…>` with its text set as text. */
function make<K extends keyof HTMLElementTagNameMap>(tag: K, className?: string, text?: string) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

function showError(text: string | null) {
  ui.error.textContent = text ?? "";
  ui.error.hidden = text === null;
}

const describe = (error: unknown) => (error instanceof Error ? error.message : String(error));

// ---------------------------------------------------------------------------------------------------
// What the page received, for tests (and for anyone debugging the client)

interface DemoDebug {
  /** Every `event` the client handed to the page, in the order it did. */
  /** `chat_id` is absent on an event of the user's own (`user_blocked`, `user_unblocked`). */
  events: { event_id: number; type: ChatEvent["type"]; chat_id?: number; message_id?: number }[];
  /** Anything the page saw that the client promised not to do (an event twice or out of order). */
  anomalies: string[];
  /** Every mode change, with the time it happened. */
  modes: { to: ChatClientMode; at: number }[];
  /** New access tokens the client asked for (refused or expiring). */
  tokenRefreshes: number;
}
const debug: DemoDebug = { events: [], anomalies: [], modes: [], tokenRefreshes: 0 };
(window as unknown as { chatDemo: DemoDebug }).chatDemo = debug;

function record(event: ChatEvent) {
  const last = debug.events.at(-1);
  if (last && event.event_id <= last.event_id) {
    const anomaly = `event ${event.event_id} (${event.type}) delivered after event ${last.event_id}`;
    debug.anomalies.push(anomaly);
    console.error(`chat demo: ${anomaly}: the client promised every event once, in order`);
  }
  const chatId =
    event.type === "chat_created" || event.type === "chat_updated"
      ? event.chat.id
      : "chat_id" in event
        ? event.chat_id
        : undefined;
  const messageId =
    event.type === "message_read" ? event.message_id : "message" in event ? event.message.id : undefined;
  debug.events.push({ event_id: event.event_id, type: event.type, chat_id: chatId, message_id: messageId });
}

// ---------------------------------------------------------------------------------------------------
// Session state

interface OpenChatView {
  chat: Chat;
  messages: Map<number, Message>;
  items: Map<number, HTMLLIElement>;
  hasMore: boolean;
  loadingOlder: boolean;
  loaded: boolean;
  /** Report forms open on messages (by id): kept across a re-render of the message, with what was typed. */
  reportForms: Map<number, HTMLFormElement>;
}

interface Session {
  userId: number;
  client: ChatClient;
  chats: Map<number, ChatSummary>;
  /** The other participant's read marker per chat: stored (chat list), then moved on by `message_read` events. */
  theirReadUpTo: Map<number, number>;
  view: OpenChatView | undefined;
  typingTimers: Map<number, ReturnType<typeof setTimeout>>;
  /** Who of the people this user chats with is online (presence frames). */
  online: Set<number>;
  /** Whom this user blocks: `GET /api/v1/blocks`, then the `user_blocked` / `user_unblocked` events. */
  blocked: Set<number>;
  /**
   * Blocks and unblocks heard while `GET /api/v1/blocks` is on its way: applied over its answer, which may
   * be older than they are.
   */
  blockChangesWhileLoading: Map<number, boolean> | undefined;
  /**
   * People a send to whom was refused `blocked` although this user does not block them: they block this
   * user. Known only from a refusal (nobody is told they are blocked), forgotten when a send to them is
   * stored or a message from them arrives (they unblocked).
   */
  refusedBy: Set<number>;
  /** What this user reported since sign-in (`message:12`, `chat:3`, `user:7`): shown as "Reported". */
  reported: Set<string>;
  /** The list shows the archived chats (`GET /api/v1/chats?archived=1`) instead of the others. */
  showArchived: boolean;
  /** The platform suspended this user (the client's `suspended` event): reads only. */
  suspended: boolean;
  /** Chats whose sends were refused `listing_closed` before the page heard that their listing was removed. */
  closedChats: Set<number>;
  off: (() => void)[];
}

let session: Session | undefined;

const otherParticipant = (chat: Chat, me: number) => (chat.buyer_id === me ? chat.seller_id : chat.buyer_id);

/** What the platform calls a person (CONTRACT §8), or "User N" while it has not named them. */
const nameOf = (peer: Pick<ChatPeer, "id" | "display_name"> | undefined, userId: number) =>
  peer?.id === userId && peer.display_name ? peer.display_name : `User ${userId}`;

/** The other participant's name, as this user sees them. */
const peerName = (chat: Chat, me: number) => nameOf(chat.peer, otherParticipant(chat, me));

/** The chat in words: which side of the listing this user is on, and with whom. */
function chatInWords(chat: Chat, me: number): string {
  const name = peerName(chat, me);
  return chat.buyer_id === me ? `Buying from ${name}` : `Selling to ${name}`;
}

/** The person's picture, or their initials in a circle when the platform gave none (or it does not load). */
function avatar(peer: ChatPeer | undefined, userId: number, size: "small" | "large" = "small"): HTMLSpanElement {
  const name = nameOf(peer, userId);
  const box = make("span", `avatar ${size}`);
  box.dataset.testid = "avatar";
  const initials = name
    .split(/\s+/)
    .filter(Boolean)
    .slice(0, 2)
    .map((word) => [...word][0]?.toUpperCase() ?? "")
    .join("");
  box.textContent = /^User \d+$/.test(name) ? "#" : initials;
  const url = peer?.id === userId ? peer.avatar_url : null;
  if (url) {
    const img = make("img");
    img.alt = "";
    img.src = url;
    img.addEventListener("error", () => img.remove());
    box.append(img);
  }
  return box;
}

/** Digits after the decimal point of a currency (2 for EUR, 0 for JPY), as Intl knows it. */
function minorDigits(currency: string): number {
  try {
    return new Intl.NumberFormat("en", { style: "currency", currency }).resolvedOptions().maximumFractionDigits ?? 2;
  } catch {
    return 2;
  }
}

/** `price_minor` (cents) in the user's own notation: 45000 EUR → "€450.00" (en-US), "450,00 €" (de-DE). */
function formatPrice(priceMinor: number, currency: string): string {
  const value = priceMinor / 10 ** minorDigits(currency);
  try {
    return new Intl.NumberFormat(undefined, { style: "currency", currency }).format(value);
  } catch {
    return `${value} ${currency}`;
  }
}

const STATUS_LABELS: Record<ListingStatus, string | null> = {
  active: null,
  reserved: "reserved",
  sold: "sold",
  removed: "removed",
};

/**
 * The listing a chat is about: photo, title, price and a badge unless active. `compact` in the chat list;
 * at the top of the open chat the title links to the listing on the platform. Unregistered: its number.
 */
function listingCard(listing: ChatListing | null, listingId: number, compact: boolean): HTMLElement {
  const card = make("div", `listing-card${compact ? " compact" : ""}`);
  card.dataset.testid = "listing-card";
  card.dataset.listingId = String(listingId);
  card.dataset.status = listing?.status ?? "unregistered";
  const photo = make("span", "listing-photo");
  photo.dataset.testid = "listing-photo";
  if (listing?.image_url) {
    const img = make("img");
    img.alt = listing.title;
    img.src = listing.image_url;
    img.addEventListener("error", () => img.remove());
    photo.append(img);
  }
  const text = make("span", "listing-text");
  const titleText = listing ? listing.title : `Listing #${listingId}`;
  let title: HTMLElement;
  if (listing && !compact) {
    const link = make("a", "listing-title", titleText);
    link.href = listing.url;
    link.target = "_blank";
    link.rel = "noopener noreferrer";
    title = link;
  } else {
    title = make("span", "listing-title", titleText);
  }
  title.dataset.testid = "listing-title";
  const line = make("span", "listing-line");
  if (listing) {
    const price = make("span", "listing-price", formatPrice(listing.price_minor, listing.currency));
    price.dataset.testid = "listing-price";
    line.append(price);
    const label = STATUS_LABELS[listing.status];
    if (label) {
      const badge = make("span", `listing-badge ${listing.status}`, label);
      badge.dataset.testid = "listing-badge";
      line.append(" ", badge);
    }
  } else {
    line.append(make("span", "muted", "not on the platform yet"));
  }
  text.append(title, line);
  card.append(photo, text);
  return card;
}

/** A dot that is green while the other person is online. */
function presenceDot(s: Session, userId: number, peer?: ChatPeer): HTMLSpanElement {
  const online = s.online.has(userId);
  const dot = make("span", `presence${online ? " online" : ""}`);
  dot.dataset.testid = "presence";
  dot.dataset.userId = String(userId);
  dot.dataset.online = String(online);
  dot.title = `${nameOf(peer, userId)} is ${online ? "online" : "offline"}`;
  dot.setAttribute("aria-label", dot.title);
  return dot;
}

// ---------------------------------------------------------------------------------------------------
// Header: mode, banner, unread

const MODE_LABELS: Record<ChatClientMode, string> = {
  connecting: "connecting…",
  live: "live",
  polling: "polling every 5 s",
  offline: "offline",
};

function showMode(mode: ChatClientMode) {
  document.body.dataset.mode = mode;
  ui.mode.textContent = MODE_LABELS[mode];
}

function showUnread(s: Session) {
  const { total } = s.client.unread;
  ui.unreadTotal.textContent = String(total);
  ui.unreadTotal.hidden = total === 0;
  renderChatList(s);
}

// ---------------------------------------------------------------------------------------------------
// Chat list

function upsertChat(s: Session, chat: Chat, lastMessage?: Message) {
  const known = s.chats.get(chat.id);
  const summary: ChatSummary = {
    ...chat,
    last_message: lastMessage ?? known?.last_message ?? null,
    unread_count: known?.unread_count ?? 0,
    peer_last_read_message_id: known?.peer_last_read_message_id ?? null,
  };
  if (lastMessage && lastMessage.created_at > summary.last_activity_at) {
    summary.last_activity_at = lastMessage.created_at;
  }
  s.chats.set(chat.id, summary);
}

function renderChatList(s: Session) {
  const all = [...s.chats.values()];
  const archivedCount = all.filter((chat) => chat.archived).length;
  const chats = all
    .filter((chat) => chat.archived === s.showArchived)
    .sort((a, b) => b.last_activity_at.localeCompare(a.last_activity_at) || b.id - a.id);
  ui.chatListTitle.textContent = s.showArchived ? "Archived chats" : "Chats";
  ui.archivedToggle.textContent = s.showArchived ? "← All chats" : `Archived (${archivedCount})`;
  ui.archivedToggle.setAttribute("aria-pressed", String(s.showArchived));
  ui.archivedToggle.dataset.count = String(archivedCount);
  ui.chatList.dataset.list = s.showArchived ? "archived" : "main";
  const items = chats.map((chat) => {
    const li = make("li");
    const button = make("button");
    button.type = "button";
    button.dataset.testid = "chat-item";
    button.dataset.chatId = String(chat.id);
    button.dataset.archived = String(chat.archived);
    button.setAttribute("aria-current", String(s.view?.chat.id === chat.id));
    const other = otherParticipant(chat, s.userId);
    const title = make("span", "title");
    const name = make("span", "peer-name", peerName(chat, s.userId));
    name.dataset.testid = "peer-name";
    const role = make("span", "role muted", chat.buyer_id === s.userId ? " · buying" : " · selling");
    title.append(avatar(chat.peer, other), presenceDot(s, other, chat.peer), name, role);
    const blocked = s.blocked.has(other);
    button.dataset.blocked = String(blocked);
    if (blocked) {
      const tag = make("span", "blocked-tag", "blocked");
      tag.dataset.testid = "chat-blocked";
      tag.title = `You blocked ${peerName(chat, s.userId)}`;
      title.append(" ", tag);
    }
    const unread = s.client.unread.chats[String(chat.id)] ?? 0;
    const badge = make("span", "badge", String(unread));
    badge.dataset.testid = "chat-unread";
    badge.hidden = unread === 0;
    const preview = make(
      "span",
      "preview",
      chat.last_message ? previewOf(chat.last_message, s.userId, chat) : "no messages",
    );
    preview.dataset.testid = "chat-preview";
    button.append(title, badge, listingCard(chat.listing, chat.listing_id, true), preview);
    button.addEventListener("click", () => void selectChat(s, chat));
    li.append(button);
    return li;
  });
  ui.chatList.replaceChildren(...items);
  ui.noChats.textContent = s.showArchived ? "No archived chats." : "No chats yet.";
  ui.noChats.hidden = items.length > 0;
}

function previewOf(message: Message, me: number, chat: Chat): string {
  const text = message.deleted_at ? "(deleted)" : message.content;
  if (message.kind === "system" || message.sender_id === null) return text;
  const who = message.sender_id === me ? "you" : nameOf(chat.peer, message.sender_id);
  return `${who}: ${text}`;
}

/** Both lists (the main one and the archived one): the page shows either from memory. */
async function refreshChats(s: Session) {
  const [main, archived] = await Promise.all([s.client.listChats(), s.client.listChats({ archived: true })]);
  if (session !== s) return;
  const chats = [...main, ...archived];
  // "Contact a seller" is where a new user starts; once there are chats it stays folded until asked for.
  if (chats.length === 0 && s.chats.size === 0) ui.openChat.open = true;
  for (const chat of chats) {
    s.chats.set(chat.id, chat);
    // The stored marker, so that ticks survive a reload; message_read events move it on from here.
    const stored = chat.peer_last_read_message_id ?? 0;
    if (stored > (s.theirReadUpTo.get(chat.id) ?? 0)) s.theirReadUpTo.set(chat.id, stored);
  }
  renderChatList(s);
}

// ---------------------------------------------------------------------------------------------------
// The open chat

function tickOf(s: Session, message: Message): { text: string; state: "sent" | "read" } {
  const readUpTo = s.theirReadUpTo.get(message.chat_id) ?? 0;
  return readUpTo >= message.id ? { text: "✓✓", state: "read" } : { text: "✓", state: "sent" };
}

/** The platform's voice: centred, no bubble, no actions; its data in one short line when there is some. */
function fillSystemItem(li: HTMLLIElement, message: Message) {
  li.className = `message system${message.deleted_at ? " deleted" : ""}`;
  li.dataset.testid = "message";
  li.dataset.messageId = String(message.id);
  li.dataset.senderId = "platform";
  li.dataset.kind = "system";
  const content = make("span", "content", message.deleted_at ? "message removed" : message.content);
  content.dataset.testid = "message-content";
  const meta = make("span", "meta");
  const time = make("time", undefined, new Date(message.created_at).toLocaleTimeString([], { timeStyle: "short" }));
  time.dateTime = message.created_at;
  meta.append(time);
  li.replaceChildren(content);
  const data = message.data && !message.deleted_at ? Object.entries(message.data) : [];
  if (data.length > 0) {
    const compact = data
      .map(([key, value]) => `${key}: ${typeof value === "object" ? JSON.stringify(value) : String(value)}`)
      .join(" · ");
    const line = make("span", "data", compact.length > 160 ? `${compact.slice(0, 159)}…` : compact);
    line.dataset.testid = "message-data";
    li.append(line);
  }
  li.append(meta);
}

function fillMessageItem(s: Session, li: HTMLLIElement, message: Message) {
  // Being edited: a redraw (a read receipt, a "reported" mark) would drop the text field; ending the edit redraws
  // the item from the newest state.
  if (li.dataset.editing) return;
  if (message.kind === "system" || message.sender_id === null) return fillSystemItem(li, message);
  const mine = message.sender_id === s.userId;
  li.className = `message${mine ? " mine" : ""}${message.deleted_at ? " deleted" : ""}`;
  li.dataset.testid = "message";
  li.dataset.messageId = String(message.id);
  li.dataset.senderId = String(message.sender_id);
  li.dataset.kind = message.kind;
  const deletedText = message.deleted_by === "platform" ? "removed by the platform" : "message deleted";
  const content = make("span", "content", message.deleted_at ? deletedText : message.content);
  content.dataset.testid = "message-content";
  const meta = make("span", "meta");
  const time = make("time", undefined, new Date(message.created_at).toLocaleTimeString([], { timeStyle: "short" }));
  time.dateTime = message.created_at;
  meta.append(time);
  if (message.edited_at && !message.deleted_at) meta.append(" · edited");
  if (mine) {
    const { text, state } = tickOf(s, message);
    const tick = make("span", "tick", text);
    tick.dataset.testid = "message-tick";
    tick.dataset.state = state;
    tick.title = state === "read" ? "read" : "sent";
    meta.append(" ", tick);
  }
  const reported = s.reported.has(reportKey({ message_id: message.id }));
  if (reported) {
    const confirmation = make("span", "reported", "Reported");
    confirmation.dataset.testid = "message-reported";
    meta.append(" · ", confirmation);
  }
  li.replaceChildren(content, meta);
  if (mine && !message.deleted_at) li.append(messageActions(s, message));
  if (!mine && !message.deleted_at && !reported) {
    const form = s.view?.reportForms.get(message.id);
    li.append(form ?? reportAction(s, message));
  }
}

/** "report" on someone else's message: opens the report form inside the message. */
function reportAction(s: Session, message: Message): HTMLSpanElement {
  const actions = make("span", "actions");
  const report = make("button", "link", "report");
  report.type = "button";
  report.dataset.testid = "message-report";
  report.addEventListener("click", () => {
    const view = s.view;
    const li = view?.items.get(message.id);
    if (!view || !li) return;
    const refill = () => fillMessageItem(s, li, view.messages.get(message.id) ?? message);
    const form = reportForm(s, { message_id: message.id }, "this message", () => {
      view.reportForms.delete(message.id);
      refill();
    });
    view.reportForms.set(message.id, form);
    refill();
    form.querySelector("select")?.focus();
  });
  actions.append(report);
  return actions;
}

/** Edit and delete, on the user's own messages: inline, no dialogs. */
function messageActions(s: Session, message: Message): HTMLSpanElement {
  const actions = make("span", "actions");
  const edit = make("button", "link", "edit");
  edit.type = "button";
  edit.dataset.testid = "message-edit";
  edit.addEventListener("click", () => startEditing(s, message));
  const remove = make("button", "link", "delete");
  remove.type = "button";
  remove.dataset.testid = "message-delete";
  // The first click asks; a second within 3 s deletes.
  let confirmUntil = 0;
  remove.addEventListener("click", () => {
    if (Date.now() > confirmUntil) {
      confirmUntil = Date.now() + 3_000;
      remove.textContent = "delete for both of you?";
      remove.dataset.testid = "message-delete-confirm";
      setTimeout(() => {
        remove.textContent = "delete";
        remove.dataset.testid = "message-delete";
      }, 3_000);
      return;
    }
    s.client.api.deleteMessage(message.id).catch((error: unknown) => {
      showError(`could not delete the message: ${describe(error)}`);
    });
  });
  actions.append(edit, remove);
  return actions;
}

/** Turns a message into a text field: Enter (or "save") stores the new text, Escape (or "cancel") keeps the old. */
function startEditing(s: Session, message: Message) {
  const li = s.view?.items.get(message.id);
  if (!li) return;
  const input = make("input", "edit");
  input.value = message.content;
  input.dataset.testid = "message-edit-input";
  const save = make("button", "link", "save");
  save.type = "button";
  save.dataset.testid = "message-edit-save";
  const cancel = make("button", "link", "cancel");
  cancel.type = "button";
  const done = () => {
    delete li.dataset.editing;
    fillMessageItem(s, li, s.view?.messages.get(message.id) ?? message);
  };
  const submit = () => {
    const content = input.value;
    if (content.trim() === "" || content === message.content) return done();
    s.client.api.editMessage(message.id, content).then(
      (edited) => {
        delete li.dataset.editing;
        const view = s.view;
        if (view?.items.has(edited.id)) upsertMessage(s, view, edited);
      },
      (error: unknown) => {
        done();
        showError(`could not edit the message: ${describe(error)}`);
      },
    );
  };
  save.addEventListener("click", submit);
  cancel.addEventListener("click", done);
  input.addEventListener("keydown", (e) => {
    if (e.key === "Enter") submit();
    if (e.key === "Escape") done();
  });
  li.dataset.editing = "true";
  li.replaceChildren(input, make("span", "meta"));
  li.lastElementChild?.append(save, " · ", cancel);
  input.focus();
}

const dayOf = (iso: string) =>
  new Date(iso).toLocaleDateString([], { weekday: "long", year: "numeric", month: "long", day: "numeric" });

/** A separator before the first message of each day (recomputed: the list is short, and pages arrive in any order). */
function renderDaySeparators() {
  for (const separator of ui.messageList.querySelectorAll(".day")) separator.remove();
  let lastDay = "";
  for (const node of [...ui.messageList.children] as HTMLElement[]) {
    const at = node.querySelector("time")?.dateTime;
    if (!node.dataset.messageId || !at) continue;
    const day = dayOf(at);
    if (day === lastDay) continue;
    lastDay = day;
    const separator = make("li", "day", day);
    separator.dataset.testid = "day-separator";
    ui.messageList.insertBefore(separator, node);
  }
}

const nearBottom = () => ui.scroller.scrollHeight - ui.scroller.scrollTop - ui.scroller.clientHeight < 64;
const scrollToBottom = () => {
  ui.scroller.scrollTop = ui.scroller.scrollHeight;
};

/** Puts a stored message in the open chat, in id order; a message it already shows is updated in place. */
function upsertMessage(s: Session, view: OpenChatView, message: Message) {
  view.messages.set(message.id, message);
  const existing = view.items.get(message.id);
  if (existing) {
    fillMessageItem(s, existing, message);
    return;
  }
  const li = make("li");
  fillMessageItem(s, li, message);
  view.items.set(message.id, li);
  // Newer messages are the common case: look for the place from the end.
  let next: HTMLLIElement | null = null;
  for (let node = ui.messageList.lastElementChild; node; node = node.previousElementSibling) {
    const id = Number((node as HTMLElement).dataset.messageId);
    if (!(node as HTMLElement).dataset.messageId) continue; // a pending send stays at the end
    if (id < message.id) break;
    next = node as HTMLLIElement;
  }
  if (next) ui.messageList.insertBefore(li, next);
  else ui.messageList.insertBefore(li, ui.messageList.querySelector(".pending"));
  renderDaySeparators();
}

function showHistoryStatus(view: OpenChatView) {
  ui.historyStatus.dataset.state = view.hasMore ? "more" : "complete";
  ui.historyStatus.textContent = view.loadingOlder
    ? "loading older messages…"
    : view.hasMore
      ? "scroll up for older messages"
      : "beginning of the conversation";
}

function renderTitle(s: Session, chat: Chat) {
  const other = otherParticipant(chat, s.userId);
  const known = s.client.mode === "live";
  const status = make("span", "muted", known ? (s.online.has(other) ? " · online" : " · offline") : "");
  status.dataset.testid = "chat-presence";
  const words = make("span", "chat-words", chatInWords(chat, s.userId));
  words.dataset.testid = "chat-peer";
  ui.chatTitle.replaceChildren(
    avatar(chat.peer, other, "large"),
    presenceDot(s, other, chat.peer),
    words,
    make("span", "muted", ` · chat ${chat.id}`),
    status,
  );
  ui.chatListing.replaceChildren(listingCard(chat.listing, chat.listing_id, false));
  ui.chatListing.hidden = false;
  ui.archiveChat.textContent = chat.archived ? "Unarchive" : "Archive";
  ui.archiveChat.dataset.archived = String(chat.archived);
}

async function selectChat(s: Session, chat: Chat) {
  if (s.view?.chat.id === chat.id) return;
  const view: OpenChatView = {
    chat,
    messages: new Map(),
    items: new Map(),
    hasMore: true,
    loadingOlder: true,
    loaded: false,
    reportForms: new Map(),
  };
  s.view = view;
  clearTyping(s);
  ui.messageList.replaceChildren();
  ui.reportPanel.replaceChildren();
  ui.reportPanel.hidden = true;
  ui.chatView.hidden = false;
  ui.chatView.dataset.chatId = String(chat.id);
  ui.chatPlaceholder.hidden = true;
  renderTitle(s, chat);
  renderChatState(s);
  renderChatList(s);
  showHistoryStatus(view);
  try {
    const page = await s.client.api.messages(chat.id, { limit: PAGE_SIZE });
    if (s.view !== view) return;
    for (const message of page.messages) upsertMessage(s, view, message);
    view.hasMore = page.has_more;
    view.loadingOlder = false;
    view.loaded = true;
    showHistoryStatus(view);
    scrollToBottom();
    markReadUpToNewest(s, view);
    await fillViewport(s, view);
  } catch (error) {
    view.loadingOlder = false;
    showError(`could not load the messages of chat ${chat.id}: ${describe(error)}`);
  }
  if (!ui.sendInput.disabled) ui.sendInput.focus();
}

/** Loads the page of messages before the oldest one shown, keeping what is on screen where it is. */
async function loadOlder(s: Session, view: OpenChatView) {
  if (!view.loaded || !view.hasMore || view.loadingOlder) return;
  const oldest = Math.min(...view.messages.keys());
  view.loadingOlder = true;
  showHistoryStatus(view);
  try {
    const page = await s.client.api.messages(view.chat.id, { before: oldest, limit: PAGE_SIZE });
    if (s.view !== view) return;
    const fromBottom = ui.scroller.scrollHeight - ui.scroller.scrollTop;
    for (const message of page.messages) upsertMessage(s, view, message);
    view.hasMore = page.has_more;
    ui.scroller.scrollTop = ui.scroller.scrollHeight - fromBottom;
  } catch (error) {
    showError(`could not load older messages: ${describe(error)}`);
  } finally {
    view.loadingOlder = false;
    if (s.view === view) showHistoryStatus(view);
  }
}

/** While the list does not fill the screen there is nothing to scroll: load older pages until it does. */
async function fillViewport(s: Session, view: OpenChatView) {
  while (s.view === view && view.hasMore && ui.scroller.scrollHeight <= ui.scroller.clientHeight) {
    await loadOlder(s, view);
  }
}

/** Marks the newest message of the open chat read when it is someone else's and the page is seen. */
function markReadUpToNewest(s: Session, view: OpenChatView) {
  if (document.visibilityState !== "visible" || view.messages.size === 0) return;
  const newest = Math.max(...view.messages.keys());
  const unread = s.client.unread.chats[String(view.chat.id)] ?? 0;
  const message = view.messages.get(newest);
  if (unread === 0 && message?.sender_id === s.userId) return;
  s.client.markRead(view.chat.id, newest).catch((error: unknown) => {
    showError(`could not mark chat ${view.chat.id} read: ${describe(error)}`);
  });
}

// ---------------------------------------------------------------------------------------------------
// Safety: reports and blocks (CONTRACT §10)

type ReportTarget = { message_id: number } | { chat_id: number } | { user_id: number };

const reportKey = (target: ReportTarget) =>
  "message_id" in target
    ? `message:${target.message_id}`
    : "chat_id" in target
      ? `chat:${target.chat_id}`
      : `user:${target.user_id}`;

const REASON_LABELS: Record<ReportReason, string> = {
  spam: "Spam",
  scam: "Scam or fraud",
  harassment: "Harassment",
  inappropriate: "Inappropriate content",
  other: "Something else",
};

/**
 * An inline report form: a reason (to choose: none is preselected), an optional note, "Report" and
 * "cancel". `onClose(true)` once the report is stored, `onClose(false)` on cancel; a refusal (a limit, the
 * network) is shown in the form, which stays open to try again.
 */
function reportForm(
  s: Session,
  target: ReportTarget,
  what: string,
  onClose: (reported: boolean) => void,
): HTMLFormElement {
  const form = make("form", "report");
  form.dataset.testid = "report-form";
  const reason = make("select");
  reason.dataset.testid = "report-reason";
  reason.required = true;
  reason.setAttribute("aria-label", `Why you report ${what}`);
  const choose = make("option", undefined, `Report ${what}: why?`);
  choose.value = "";
  choose.disabled = true;
  choose.selected = true;
  reason.append(choose);
  for (const value of reportReasons) {
    const option = make("option", undefined, REASON_LABELS[value]);
    option.value = value;
    reason.append(option);
  }
  const note = make("input");
  note.dataset.testid = "report-note";
  note.placeholder = "A note for the moderators (optional)";
  note.maxLength = 1_000;
  const submit = make("button", "small", "Report");
  submit.type = "submit";
  submit.dataset.testid = "report-submit";
  const cancel = make("button", "link", "cancel");
  cancel.type = "button";
  cancel.dataset.testid = "report-cancel";
  cancel.addEventListener("click", () => onClose(false));
  const failure = make("span", "report-error");
  failure.dataset.testid = "report-error";
  failure.hidden = true;
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    if (!reason.value) return;
    submit.disabled = true;
    failure.hidden = true;
    const text = note.value.trim();
    const request = { reason: reason.value as ReportReason, ...(text ? { note: text } : {}), ...target };
    s.client.report(request as ReportRequest).then(
      () => {
        s.reported.add(reportKey(target));
        onClose(true);
      },
      (error: unknown) => {
        submit.disabled = false;
        failure.textContent = `not reported: ${describe(error)}`;
        failure.hidden = false;
      },
    );
  });
  form.append(reason, note, submit, cancel, failure);
  return form;
}

/** "Report chat" / "Report user": the form under the chat's header, then "Reported" in its place. */
function openReportPanel(s: Session, target: ReportTarget, what: string) {
  const view = s.view;
  if (!view) return;
  const form = reportForm(s, target, what, (reported) => {
    if (s.view !== view) return;
    if (!reported) {
      ui.reportPanel.hidden = true;
      ui.reportPanel.replaceChildren();
      return;
    }
    const done = make("span", "reported", "Reported");
    done.dataset.testid = "report-done";
    const close = make("button", "link", "close");
    close.type = "button";
    close.addEventListener("click", () => {
      ui.reportPanel.hidden = true;
      ui.reportPanel.replaceChildren();
    });
    ui.reportPanel.replaceChildren(done, ` ${what}: thank you, the platform will look at it. `, close);
  });
  ui.reportPanel.replaceChildren(form);
  ui.reportPanel.hidden = false;
  form.querySelector("select")?.focus();
}

/**
 * What the open chat allows: Block (or nothing, while blocked: the notice holds Unblock), the notice of a
 * block or of a refused send, and the send form (disabled while this user blocks the other).
 */
function renderChatState(s: Session) {
  const view = s.view;
  if (!view) return;
  const other = otherParticipant(view.chat, s.userId);
  const name = peerName(view.chat, s.userId);
  const iBlock = s.blocked.has(other);
  const listingRemoved = view.chat.listing?.status === "removed" || s.closedChats.has(view.chat.id);
  ui.reportUser.textContent = `Report ${name}`;
  ui.blockUser.textContent = `Block ${name}`;
  ui.blockUser.hidden = iBlock;
  ui.chatView.dataset.blocked = iBlock ? "by-me" : s.refusedBy.has(other) ? "refused" : "no";
  ui.chatView.dataset.listingStatus = view.chat.listing?.status ?? "unregistered";
  const closed = iBlock || s.suspended || listingRemoved;
  ui.sendInput.disabled = closed;
  ui.sendSubmit.disabled = closed;
  ui.sendInput.placeholder = s.suspended
    ? "Your account is suspended: you can't send messages"
    : listingRemoved
      ? "This listing was removed: you can't send messages here"
      : iBlock
        ? "You blocked this user: unblock them to write"
        : "Write a message: Enter sends, Shift+Enter starts a new line";
  // The platform's reasons first: while they last, unblocking would not let this user write either.
  if (s.suspended) {
    const text = make("span", undefined, SUSPENDED_TEXT);
    text.dataset.testid = "chat-notice-text";
    ui.chatNotice.replaceChildren(text);
    ui.chatNotice.dataset.state = "suspended";
    ui.chatNotice.hidden = false;
  } else if (listingRemoved) {
    const text = make("span", undefined, "This listing was removed: you can read but not send");
    text.dataset.testid = "chat-notice-text";
    ui.chatNotice.replaceChildren(text);
    ui.chatNotice.dataset.state = "listing-removed";
    ui.chatNotice.hidden = false;
  } else if (iBlock) {
    const unblock = make("button", "small", "Unblock");
    unblock.type = "button";
    unblock.dataset.testid = "unblock-user";
    unblock.addEventListener("click", () => void setBlocked(s, other, false, unblock));
    const text = make("span", undefined, "You blocked this user");
    text.dataset.testid = "chat-notice-text";
    ui.chatNotice.replaceChildren(text, " ", unblock);
    ui.chatNotice.dataset.state = "blocked";
    ui.chatNotice.hidden = false;
  } else if (s.refusedBy.has(other)) {
    const text = make("span", undefined, "You can't send messages in this chat");
    text.dataset.testid = "chat-notice-text";
    ui.chatNotice.replaceChildren(text);
    ui.chatNotice.dataset.state = "refused";
    ui.chatNotice.hidden = false;
  } else {
    ui.chatNotice.replaceChildren();
    delete ui.chatNotice.dataset.state;
    ui.chatNotice.hidden = true;
  }
}

/** Whom this user blocks changed (here, on another device, or read at sign-in): the list and the chat show it. */
function applyBlock(s: Session, userId: number, blocked: boolean) {
  s.blockChangesWhileLoading?.set(userId, blocked);
  if (blocked) s.blocked.add(userId);
  else s.blocked.delete(userId);
  renderChatList(s);
  renderChatState(s);
}

/** Block or Unblock pressed: the button waits for the answer; the event the server sends changes nothing more. */
async function setBlocked(s: Session, userId: number, blocked: boolean, button: HTMLButtonElement) {
  button.disabled = true;
  try {
    await (blocked ? s.client.block(userId) : s.client.unblock(userId));
    if (session !== s) return;
    showError(null);
    applyBlock(s, userId, blocked);
  } catch (error) {
    showError(`could not ${blocked ? "block" : "unblock"} User ${userId}: ${describe(error)}`);
  } finally {
    button.disabled = false;
  }
}

async function refreshBlocks(s: Session) {
  const changes = new Map<number, boolean>();
  s.blockChangesWhileLoading = changes;
  try {
    const blocks = await s.client.blocks();
    // Signed out, or a newer read started (after a resync): that one has the last word.
    if (session !== s || s.blockChangesWhileLoading !== changes) return;
    s.blocked = new Set(blocks.map((b) => b.user_id));
    for (const [userId, blocked] of changes) {
      if (blocked) s.blocked.add(userId);
      else s.blocked.delete(userId);
    }
    renderChatList(s);
    renderChatState(s);
  } finally {
    if (s.blockChangesWhileLoading === changes) s.blockChangesWhileLoading = undefined;
  }
}

const isBlockedError = (error: unknown) => error instanceof ChatApiError && error.code === ErrorCode.blocked;

// ---------------------------------------------------------------------------------------------------
// Typing

function clearTyping(s: Session) {
  for (const timer of s.typingTimers.values()) clearTimeout(timer);
  s.typingTimers.clear();
  renderTyping(s);
}

function renderTyping(s: Session) {
  const users = [...s.typingTimers.keys()];
  ui.typing.hidden = users.length === 0;
  ui.typing.textContent =
    users.length === 0
      ? ""
      : `${users.map((id) => nameOf(s.view?.chat.peer, id)).join(", ")} ${users.length > 1 ? "are" : "is"} typing…`;
}

function setTyping(s: Session, userId: number, isTyping: boolean) {
  const timer = s.typingTimers.get(userId);
  if (timer) clearTimeout(timer);
  s.typingTimers.delete(userId);
  if (isTyping) {
    s.typingTimers.set(
      userId,
      setTimeout(() => {
        s.typingTimers.delete(userId);
        renderTyping(s);
      }, TYPING_EXPIRES_MS),
    );
  }
  renderTyping(s);
}

// ---------------------------------------------------------------------------------------------------
// Events from the client

function onEvent(s: Session, event: ChatEvent) {
  record(event);
  switch (event.type) {
    case "chat_created":
      upsertChat(s, event.chat);
      renderChatList(s);
      return;
    // Drawn by the client's `chat` (emitted right after), which also covers a chat that a message brought
    // back from the archive.
    case "chat_updated":
      return;
    case "new_message":
    case "message_edited":
    case "message_deleted": {
      const { message } = event;
      const known = s.chats.get(event.chat_id);
      if (known) {
        const isNewest = !known.last_message || known.last_message.id <= message.id;
        upsertChat(s, known, isNewest ? message : undefined);
        renderChatList(s);
      } else {
        // A chat this page has not heard of (opened elsewhere before this page started): list again.
        refreshChats(s).catch((error: unknown) => showError(`could not list the chats: ${describe(error)}`));
      }
      const view = s.view;
      if (view?.chat.id === event.chat_id) {
        const follow = nearBottom() || message.sender_id === s.userId;
        if (event.type === "new_message" || view.messages.has(message.id)) upsertMessage(s, view, message);
        if (event.type === "new_message" && message.sender_id !== s.userId) {
          if (message.sender_id !== null) setTyping(s, message.sender_id, false);
          markReadUpToNewest(s, view);
        }
        if (follow) scrollToBottom();
      }
      // Someone who blocks this user cannot write to them: a message from them means the block is gone.
      if (event.type === "new_message" && message.sender_id !== null && s.refusedBy.delete(message.sender_id)) {
        renderChatState(s);
      }
      return;
    }
    // This user's own blocks, from whichever of their devices (no chat_id: a block is of a person).
    case "user_blocked":
    case "user_unblocked":
      applyBlock(s, event.user_id, event.type === "user_blocked");
      return;
    case "message_read": {
      if (event.read_by === s.userId) return;
      const before = s.theirReadUpTo.get(event.chat_id) ?? 0;
      if (event.message_id <= before) return;
      s.theirReadUpTo.set(event.chat_id, event.message_id);
      const view = s.view;
      if (view?.chat.id === event.chat_id) {
        for (const [id, li] of view.items) {
          const message = view.messages.get(id);
          if (message && message.sender_id === s.userId && id > before && id <= event.message_id) {
            fillMessageItem(s, li, message);
          }
        }
      }
      return;
    }
  }
}

// ---------------------------------------------------------------------------------------------------
// Sending

/**
 * A message refused for as long as its cause lasts (a block, a suspension, a removed listing): not sent, with
 * only "discard" (a retry would be refused again), and no longer pending, so that messages stored later are
 * shown after it, in the order they happened.
 */
function markRefused(pending: HTMLElement, why: string) {
  pending.classList.remove("pending");
  pending.classList.add("failed", "refused");
  pending.dataset.testid = "message-refused";
  const discard = make("button", "link", "discard");
  discard.type = "button";
  discard.dataset.testid = "send-discard";
  discard.addEventListener("click", () => pending.remove());
  pending.lastElementChild?.replaceChildren(`not sent: ${why} · `, discard);
}

/**
 * Shows the message at once as "sending…" and hands it to the client's outbox (in order, retried with the
 * same client_msg_id). One that could not be stored in time can be retried (the same id: stored once) or
 * discarded.
 */
async function send(
  s: Session,
  view: OpenChatView,
  content: string,
  clientMsgId = crypto.randomUUID(),
  bubble?: HTMLLIElement,
) {
  const pending = bubble ?? make("li", "message mine pending");
  pending.classList.remove("failed");
  pending.dataset.testid = "message-pending";
  pending.replaceChildren(make("span", "content", content), make("span", "meta", "sending…"));
  if (!bubble) ui.messageList.append(pending);
  scrollToBottom();
  const other = otherParticipant(view.chat, s.userId);
  try {
    const message = await s.client.send(view.chat.id, content, { clientMsgId });
    pending.remove();
    // Stored: whoever blocked this user has unblocked them.
    if (s.refusedBy.delete(other)) renderChatState(s);
    if (s.view === view) {
      upsertMessage(s, view, message);
      scrollToBottom();
    }
  } catch (error) {
    if (isBlockedError(error)) {
      // Refused while the block lasts.
      markRefused(pending, "you can't send messages in this chat");
      if (!s.blocked.has(other)) s.refusedBy.add(other);
      renderChatState(s);
      return;
    }
    if (
      error instanceof ChatApiError &&
      (error.code === ErrorCode.userSuspended || error.code === ErrorCode.listingClosed)
    ) {
      // The platform's refusals (CONTRACT §8): sending again would be refused again while they last.
      markRefused(
        pending,
        error.code === ErrorCode.userSuspended ? "your account is suspended" : "this listing was removed",
      );
      if (error.code === ErrorCode.listingClosed) s.closedChats.add(view.chat.id);
      renderChatState(s);
      return;
    }
    if (error instanceof ChatApiError && error.code === "content_rejected") {
      // The platform's content rules refuse this text (CONTRACT §10): sending it again would be refused again.
      // The text goes back into the form, to be changed; the refused copy can be discarded.
      pending.classList.remove("pending");
      pending.classList.add("failed", "refused");
      pending.dataset.testid = "message-rejected";
      const discard = make("button", "link", "discard");
      discard.type = "button";
      discard.dataset.testid = "send-discard";
      discard.addEventListener("click", () => pending.remove());
      pending.lastElementChild?.replaceChildren(`not sent: ${error.message} · `, discard);
      if (!ui.sendInput.value) ui.sendInput.value = content;
      return;
    }
    pending.classList.add("failed");
    const retry = make("button", "link", "retry");
    retry.type = "button";
    retry.dataset.testid = "send-retry";
    retry.addEventListener("click", () => void send(s, view, content, clientMsgId, pending));
    const discard = make("button", "link", "discard");
    discard.type = "button";
    discard.dataset.testid = "send-discard";
    discard.addEventListener("click", () => pending.remove());
    pending.lastElementChild?.replaceChildren(`not sent: ${describe(error)} · `, retry, " · ", discard);
  }
}

// ---------------------------------------------------------------------------------------------------
// Signing in and out

async function devToken(userId: number): Promise<string> {
  const res = await fetch("/api/dev/token", {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ user_id: userId }),
  });
  const body = (await res.json().catch(() => undefined)) as
    | { access_token?: string; error?: { message?: string } }
    | undefined;
  if (!res.ok || typeof body?.access_token !== "string") {
    throw new Error(body?.error?.message ?? `POST /api/dev/token answered ${res.status}`);
  }
  return body.access_token;
}

/**
 * `?send_max_age_ms=N` (1 s to 10 min): how long a send may take before the page offers retry or discard.
 * The client's default (60 s) otherwise; tests use a short one.
 */
function sendMaxAgeFromQuery(): number | undefined {
  const raw = Number(new URLSearchParams(location.search).get("send_max_age_ms"));
  return Number.isInteger(raw) && raw >= 1_000 && raw <= 600_000 ? raw : undefined;
}

/** The open chat's listing, peer or archive changed (the client's `chat` event): the list and the view follow. */
function applyChat(s: Session, chat: Chat) {
  const known = s.chats.get(chat.id);
  if (known) s.chats.set(chat.id, { ...known, listing: chat.listing, peer: chat.peer, archived: chat.archived });
  else upsertChat(s, chat);
  const view = s.view;
  if (view?.chat.id === chat.id) {
    view.chat = { ...view.chat, listing: chat.listing, peer: chat.peer, archived: chat.archived };
    // The platform registered the listing again as not removed: sends may go again.
    if (chat.listing?.status !== "removed") s.closedChats.delete(chat.id);
    renderTitle(s, view.chat);
    renderChatState(s);
  }
  renderChatList(s);
}

/** The suspended banner, and the polling banner only when it is not the suspension that makes the client poll. */
function renderBanners(s: Session) {
  ui.suspendedBanner.textContent = s.suspended ? SUSPENDED_TEXT : "";
  ui.suspendedBanner.hidden = !s.suspended;
  ui.banner.hidden = s.suspended || ui.bannerText.textContent === "";
  document.body.dataset.suspended = String(s.suspended);
}

function startSession(userId: number, firstToken: string) {
  // As a monolith's page would: the token it holds, and a new one when the client asks (refused, or expiring:
  // DEV_TOKEN_TTL_S=5 shows it). Kept for a reload of this tab.
  let token = firstToken;
  const getAccessToken = async ({ refresh }: { refresh: boolean }) => {
    if (refresh) {
      token = await devToken(userId);
      debug.tokenRefreshes += 1;
      sessionStorage.setItem(SESSION_KEY, JSON.stringify({ userId, token }));
    }
    return token;
  };
  const client = new ChatClient({
    baseUrl: "",
    getAccessToken,
    sendMaxAgeMs: sendMaxAgeFromQuery(),
    userId,
  });
  const s: Session = {
    userId,
    client,
    chats: new Map(),
    theirReadUpTo: new Map(),
    view: undefined,
    typingTimers: new Map(),
    online: new Set(),
    blocked: new Set(),
    blockChangesWhileLoading: undefined,
    refusedBy: new Set(),
    reported: new Set(),
    showArchived: false,
    suspended: false,
    closedChats: new Set(),
    off: [],
  };
  session = s;
  sessionStorage.setItem(SESSION_KEY, JSON.stringify({ userId, token }));

  s.off.push(
    client.on("event", (event) => onEvent(s, event)),
    client.on("mode", ({ to }) => {
      debug.modes.push({ to, at: Date.now() });
      showMode(to);
      // Presence comes only over a live socket (its snapshot on connect): otherwise it is not known.
      if (to !== "live" && s.online.size > 0) {
        s.online.clear();
        renderChatList(s);
        if (s.view) renderTitle(s, s.view.chat);
      }
    }),
    client.on("warning", (text) => {
      ui.bannerText.textContent = text ?? "";
      renderBanners(s);
    }),
    client.on("chat", (chat) => applyChat(s, chat)),
    client.on("suspended", ({ suspended }) => {
      s.suspended = suspended;
      renderBanners(s);
      renderChatState(s);
    }),
    client.on("presence", ({ user_id, online }) => {
      if (online) s.online.add(user_id);
      else s.online.delete(user_id);
      renderChatList(s);
      if (s.view) renderTitle(s, s.view.chat);
    }),
    client.on("typing", ({ chat_id, user_id, is_typing }) => {
      if (s.view?.chat.id === chat_id && user_id !== s.userId) setTyping(s, user_id, is_typing);
    }),
    client.on("unread", () => showUnread(s)),
    // The server's stream was renumbered or restored: what the page shows may have missed events.
    client.on("resync", () => {
      refreshChats(s).catch((error: unknown) => showError(`could not list the chats: ${describe(error)}`));
      refreshBlocks(s).catch((error: unknown) => showError(`could not read whom you block: ${describe(error)}`));
    }),
    client.on("fatal", ({ message }) => {
      signOut();
      showError(`signed out: ${message}`);
    }),
  );

  ui.me.textContent = `signed in as user ${userId}`;
  ui.signIn.hidden = true;
  ui.workspace.hidden = false;
  ui.signOut.hidden = false;
  ui.chatView.hidden = true;
  ui.chatPlaceholder.hidden = false;
  showError(null);
  client.start();
  showMode(client.mode);
  refreshChats(s).catch((error: unknown) => showError(`could not list the chats: ${describe(error)}`));
  refreshBlocks(s).catch((error: unknown) => showError(`could not read whom you block: ${describe(error)}`));
}

function signOut() {
  const s = session;
  session = undefined;
  sessionStorage.removeItem(SESSION_KEY);
  if (s) {
    for (const off of s.off) off();
    clearTyping(s);
    s.client.stop();
  }
  showMode("offline");
  ui.mode.textContent = "signed out";
  ui.me.textContent = "";
  ui.banner.hidden = true;
  ui.unreadTotal.hidden = true;
  ui.signOut.hidden = true;
  ui.workspace.hidden = true;
  ui.signIn.hidden = false;
  ui.chatList.replaceChildren();
  ui.messageList.replaceChildren();
  ui.reportPanel.replaceChildren();
  ui.reportPanel.hidden = true;
  ui.chatNotice.hidden = true;
  ui.suspendedBanner.hidden = true;
  ui.chatListing.replaceChildren();
  delete document.body.dataset.suspended;
}

// ---------------------------------------------------------------------------------------------------
// Wiring

ui.signInForm.addEventListener("submit", (e) => {
  e.preventDefault();
  const userId = Number(ui.signInUser.value);
  if (!Number.isSafeInteger(userId) || userId < 1) return showError("a user id is a positive whole number");
  devToken(userId).then(
    (token) => startSession(userId, token),
    (error: unknown) => showError(`could not sign in: ${describe(error)}`),
  );
});

ui.signOut.addEventListener("click", () => signOut());
ui.retryNow.addEventListener("click", () => session?.client.retryNow());

ui.openChatForm.addEventListener("submit", (e) => {
  e.preventDefault();
  const s = session;
  if (!s) return;
  const listingId = Number(ui.openChatListing.value);
  const sellerId = Number(ui.openChatSeller.value);
  s.client.openChat(listingId, sellerId).then(
    (chat) => {
      if (session !== s) return;
      showError(null);
      upsertChat(s, chat);
      // An archived chat opened again is shown where it is.
      if (chat.archived !== s.showArchived) s.showArchived = chat.archived;
      renderChatList(s);
      void selectChat(s, chat);
    },
    (error: unknown) => {
      const code = error instanceof ChatApiError ? error.code : undefined;
      if (code === ErrorCode.userSuspended) return showError(SUSPENDED_TEXT);
      if (code === ErrorCode.listingClosed) return showError(`Listing #${listingId} was removed: no new chats on it`);
      if (code === ErrorCode.listingNotFound) {
        return showError(`Listing #${listingId} is not on the platform, or User ${sellerId} does not sell it`);
      }
      if (!isBlockedError(error)) return showError(`could not open the chat: ${describe(error)}`);
      showError(
        s.blocked.has(sellerId)
          ? `You blocked User ${sellerId}: unblock them (in your chat with them) to contact them`
          : `You can't contact User ${sellerId}`,
      );
    },
  );
});

ui.archivedToggle.addEventListener("click", () => {
  const s = session;
  if (!s) return;
  s.showArchived = !s.showArchived;
  renderChatList(s);
});

/** Archive / Unarchive: for this user only; the client's `chat` event moves it between the lists. */
ui.archiveChat.addEventListener("click", () => {
  const s = session;
  const view = s?.view;
  if (!s || !view) return;
  const archive = !view.chat.archived;
  ui.archiveChat.disabled = true;
  (archive ? s.client.archiveChat(view.chat.id) : s.client.unarchiveChat(view.chat.id))
    .then(
      (chat) => {
        if (session !== s) return;
        showError(null);
        // A chat the client did not know (it always does once listed): draw it from the view.
        if (!chat) applyChat(s, { ...view.chat, archived: archive });
      },
      (error: unknown) => showError(`could not ${archive ? "archive" : "unarchive"} the chat: ${describe(error)}`),
    )
    .finally(() => {
      ui.archiveChat.disabled = false;
    });
});

ui.reportChat.addEventListener("click", () => {
  const s = session;
  if (s?.view) openReportPanel(s, { chat_id: s.view.chat.id }, "this chat");
});
ui.reportUser.addEventListener("click", () => {
  const s = session;
  if (!s?.view) return;
  const other = otherParticipant(s.view.chat, s.userId);
  openReportPanel(s, { user_id: other }, peerName(s.view.chat, s.userId));
});
ui.blockUser.addEventListener("click", () => {
  const s = session;
  if (s?.view) void setBlocked(s, otherParticipant(s.view.chat, s.userId), true, ui.blockUser);
});

ui.sendForm.addEventListener("submit", (e) => {
  e.preventDefault();
  const s = session;
  const view = s?.view;
  const content = ui.sendInput.value;
  if (!s || !view || content.trim() === "") return;
  if (s.blocked.has(otherParticipant(view.chat, s.userId)) || ui.sendInput.disabled) return;
  ui.sendInput.value = "";
  clearTimeout(stoppedTyping);
  s.client.typing(view.chat.id, false);
  void send(s, view, content);
});

ui.sendInput.addEventListener("keydown", (e) => {
  if (e.key === "Enter" && !e.shiftKey && !e.isComposing) {
    e.preventDefault();
    ui.sendForm.requestSubmit();
  }
});

/** After this long without a keystroke the user has stopped typing, and the other side is told at once. */
const STOPPED_TYPING_AFTER_MS = 2_000;
let stoppedTyping: ReturnType<typeof setTimeout> | undefined;
ui.sendInput.addEventListener("input", () => {
  const s = session;
  const view = s?.view;
  if (!s || !view) return;
  clearTimeout(stoppedTyping);
  if (ui.sendInput.value.trim() === "") {
    s.client.typing(view.chat.id, false);
    return;
  }
  s.client.typing(view.chat.id, true);
  stoppedTyping = setTimeout(() => s.client.typing(view.chat.id, false), STOPPED_TYPING_AFTER_MS);
});

/** Whether the list was at its bottom the last time it scrolled: then it stays there when it shrinks. */
let atBottom = true;
ui.scroller.addEventListener("scroll", () => {
  atBottom = nearBottom();
  const s = session;
  if (s?.view && ui.scroller.scrollTop < LOAD_OLDER_WITHIN_PX) void loadOlder(s, s.view);
});
// The banner coming and going (or a resized window) changes the list's height.
new ResizeObserver(() => {
  if (atBottom) scrollToBottom();
}).observe(ui.scroller);

document.addEventListener("visibilitychange", () => {
  if (session?.view?.loaded) markReadUpToNewest(session, session.view);
});

// A reload keeps the user signed in (this tab only).
const saved = sessionStorage.getItem(SESSION_KEY);
if (saved) {
  try {
    const { userId, token } = JSON.parse(saved) as { userId: number; token: string };
    startSession(userId, token);
  } catch {
    sessionStorage.removeItem(SESSION_KEY);
  }
}
