/**
 * The open chat: its header (the other person, the listing, archive, report, block), the messages (history
 * pages, live ones, sends in flight, photos), typing, what the chat allows, and the send form (text, and
 * photos: attached, pasted or dropped onto the thread).
 */
import { type ChatApiError, ErrorCode } from "@listings-chat/client";
import type { ChatSummary, Message } from "@listings-chat/client/protocol";
import {
  type PendingMessage,
  type Thread,
  useBlocks,
  useChat,
  useChatStore,
  useConnection,
  usePresence,
  useThread,
  useTyping,
} from "@listings-chat/react";
import {
  type FormEvent,
  type KeyboardEvent,
  type ReactElement,
  useEffect,
  useLayoutEffect,
  useRef,
  useState,
} from "react";
import {
  Avatar,
  describe,
  ListingCard,
  nameOf,
  otherParticipant,
  PresenceDot,
  peerName,
  ReportForm,
  type ReportTarget,
  reportKey,
  SUSPENDED_TEXT,
  usePage,
} from "./parts.tsx";
import { AttachButton, PendingPhotos, PhotoGrid, pastedFiles, useFileDrop } from "./photos.tsx";

/** Older messages are loaded when the list is scrolled this close to its top. */
const LOAD_OLDER_WITHIN_PX = 48;
/** After this long without a keystroke the user has stopped typing, and the other side is told at once. */
const STOPPED_TYPING_AFTER_MS = 2_000;

const timeOf = (iso: string) => new Date(iso).toLocaleTimeString([], { timeStyle: "short" });
const dayOf = (iso: string) =>
  new Date(iso).toLocaleDateString([], { weekday: "long", year: "numeric", month: "long", day: "numeric" });

/** The platform's voice: centred, no bubble, no actions; its data in one short line when there is some. */
function SystemMessage({ message }: { message: Message }) {
  const data = message.data && !message.deleted_at ? Object.entries(message.data) : [];
  const compact = data
    .map(([key, value]) => `${key}: ${typeof value === "object" ? JSON.stringify(value) : String(value)}`)
    .join(" · ");
  return (
    <li
      className={`message system${message.deleted_at ? " deleted" : ""}`}
      data-testid="message"
      data-message-id={message.id}
      data-sender-id="platform"
      data-kind="system"
    >
      <span className="content" data-testid="message-content">
        {message.deleted_at ? "message removed" : message.content}
      </span>
      {data.length > 0 && (
        <span className="data" data-testid="message-data">
          {compact.length > 160 ? `${compact.slice(0, 159)}…` : compact}
        </span>
      )}
      <span className="meta">
        <time dateTime={message.created_at}>{timeOf(message.created_at)}</time>
      </span>
    </li>
  );
}

/** Edit in place: Enter (or "save") stores the new text, Escape (or "cancel") keeps the old. */
function EditField({ message, thread, onDone }: { message: Message; thread: Thread; onDone(): void }) {
  const page = usePage();
  const [text, setText] = useState(message.content);
  const input = useRef<HTMLInputElement>(null);
  useEffect(() => input.current?.focus(), []);
  const submit = () => {
    if (text.trim() === "" || text === message.content) return onDone();
    thread.edit(message.id, text).then(onDone, (error: unknown) => {
      onDone();
      page.showError(`could not edit the message: ${describe(error)}`);
    });
  };
  return (
    <>
      <input
        ref={input}
        className="edit"
        data-testid="message-edit-input"
        value={text}
        onChange={(e) => setText(e.target.value)}
        onKeyDown={(e) => {
          if (e.key === "Enter") submit();
          if (e.key === "Escape") onDone();
        }}
      />
      <span className="meta">
        <button type="button" className="link" data-testid="message-edit-save" onClick={submit}>
          save
        </button>
        {" · "}
        <button type="button" className="link" onClick={onDone}>
          cancel
        </button>
      </span>
    </>
  );
}

/** Delete on a first click asks; a second within 3 s deletes. */
function DeleteButton({ onDelete }: { onDelete(): void }) {
  const [asking, setAsking] = useState(false);
  useEffect(() => {
    if (!asking) return;
    const timer = setTimeout(() => setAsking(false), 3_000);
    return () => clearTimeout(timer);
  }, [asking]);
  return (
    <button
      type="button"
      className="link"
      data-testid={asking ? "message-delete-confirm" : "message-delete"}
      onClick={() => (asking ? onDelete() : setAsking(true))}
    >
      {asking ? "delete for both of you?" : "delete"}
    </button>
  );
}

function ChatMessage({ message, thread }: { message: Message; thread: Thread }) {
  const page = usePage();
  const [editing, setEditing] = useState(false);
  const [reporting, setReporting] = useState(false);
  if (message.kind === "system" || message.sender_id === null) return <SystemMessage message={message} />;
  const mine = message.sender_id === page.userId;
  const reported = page.reported.has(reportKey({ message_id: message.id }));
  const read = (thread.peerLastReadMessageId ?? 0) >= message.id;
  const attributes = {
    className: `message${mine ? " mine" : ""}${message.deleted_at ? " deleted" : ""}`,
    "data-testid": "message",
    "data-message-id": message.id,
    "data-sender-id": message.sender_id,
    "data-kind": message.kind,
  };
  // Being edited: the text field stays whatever arrives (a read receipt, a "reported" mark).
  if (editing) {
    return (
      <li {...attributes}>
        <EditField message={message} thread={thread} onDone={() => setEditing(false)} />
      </li>
    );
  }
  const deletedText = message.deleted_by === "platform" ? "removed by the platform" : "message deleted";
  return (
    <li {...attributes}>
      {message.attachments.length > 0 && !message.deleted_at && <PhotoGrid attachments={message.attachments} />}
      <span className="content" data-testid="message-content">
        {message.deleted_at ? deletedText : message.content}
      </span>
      <span className="meta">
        <time dateTime={message.created_at}>{timeOf(message.created_at)}</time>
        {message.edited_at && !message.deleted_at && " · edited"}
        {mine && (
          <>
            {" "}
            <span
              className="tick"
              data-testid="message-tick"
              data-state={read ? "read" : "sent"}
              title={read ? "read" : "sent"}
            >
              {read ? "✓✓" : "✓"}
            </span>
          </>
        )}
        {reported && (
          <>
            {" · "}
            <span className="reported" data-testid="message-reported">
              Reported
            </span>
          </>
        )}
      </span>
      {mine && !message.deleted_at && (
        <span className="actions">
          <button type="button" className="link" data-testid="message-edit" onClick={() => setEditing(true)}>
            edit
          </button>
          <DeleteButton
            onDelete={() =>
              thread
                .remove(message.id)
                .catch((error: unknown) => page.showError(`could not delete the message: ${describe(error)}`))
            }
          />
        </span>
      )}
      {!mine &&
        !message.deleted_at &&
        !reported &&
        (reporting ? (
          <ReportForm target={{ message_id: message.id }} what="this message" onClose={() => setReporting(false)} />
        ) : (
          <span className="actions">
            <button type="button" className="link" data-testid="message-report" onClick={() => setReporting(true)}>
              report
            </button>
          </span>
        ))}
    </li>
  );
}

/** Why a failed send cannot simply be retried, in words; undefined when a retry may work. */
function refusalOf(error: ChatApiError | null): { testId: string; why: string } | undefined {
  switch (error?.code) {
    case ErrorCode.blocked:
      return { testId: "message-refused", why: "you can't send messages in this chat" };
    case ErrorCode.userSuspended:
      return { testId: "message-refused", why: "your account is suspended" };
    case ErrorCode.listingClosed:
      return { testId: "message-refused", why: "this listing was removed" };
    case ErrorCode.contentRejected:
      return { testId: "message-rejected", why: error.message };
    // The same photo would be refused again: what is wrong with which file, and discard.
    case ErrorCode.attachmentInvalid:
      return { testId: "message-refused", why: error.message };
    default:
      return undefined;
  }
}

/**
 * A send not stored yet: "sending…"; then, if it failed, retry (the same client_msg_id: stored once) and
 * discard; a refusal that lasts (a block, a suspension, a removed listing, a content rule) offers discard only.
 */
function PendingItem({ pending, thread }: { pending: PendingMessage; thread: Thread }) {
  const refusal = pending.status === "failed" ? refusalOf(pending.error) : undefined;
  const discard = (
    <button type="button" className="link" data-testid="send-discard" onClick={() => thread.discard(pending)}>
      discard
    </button>
  );
  return (
    <li
      className={`message mine ${refusal ? "failed refused" : pending.status === "failed" ? "pending failed" : "pending"}`}
      data-testid={refusal?.testId ?? "message-pending"}
      data-kind={pending.photos ? "image" : "text"}
    >
      {pending.photos && <PendingPhotos pending={pending} />}
      <span className="content">{pending.content}</span>
      <span className="meta">
        {pending.status === "sending" ? (
          pending.photos ? (
            <button type="button" className="link" data-testid="photo-cancel" onClick={() => thread.discard(pending)}>
              cancel
            </button>
          ) : (
            "sending…"
          )
        ) : refusal ? (
          <>
            {`not sent: ${refusal.why} · `}
            {discard}
          </>
        ) : (
          <>
            {`not sent: ${pending.error?.message ?? "unknown error"} · `}
            <button
              type="button"
              className="link"
              data-testid="send-retry"
              // A retry that fails again shows here again, with its reason.
              onClick={() => thread.retry(pending).catch(() => {})}
            >
              retry
            </button>
            {" · "}
            {discard}
          </>
        )}
      </span>
    </li>
  );
}

/** The messages with a separator before the first one of each day. */
function MessageList({ thread }: { thread: Thread }) {
  const items: ReactElement[] = [];
  let lastDay = "";
  for (const message of thread.messages) {
    const day = dayOf(message.created_at);
    if (day !== lastDay) {
      lastDay = day;
      items.push(
        <li key={`day-${message.id}`} className="day" data-testid="day-separator">
          {day}
        </li>,
      );
    }
    items.push(<ChatMessage key={message.id} message={message} thread={thread} />);
  }
  return (
    <ol className="messages" data-testid="message-list">
      {items}
      {thread.pending.map((pending) => (
        <PendingItem key={pending.client_msg_id} pending={pending} thread={thread} />
      ))}
    </ol>
  );
}

/** The list scrolls: older pages load near its top (keeping what is on screen in place); it follows new ones. */
function useScrolling(thread: Thread, me: number) {
  const scroller = useRef<HTMLDivElement>(null);
  /** Whether the list was at its bottom the last time it scrolled: then it stays there when it changes. */
  const atBottom = useRef(true);
  /** Distance from the bottom before an older page was asked for: restored once it is drawn. */
  const keepFromBottom = useRef<number | null>(null);
  const nearBottom = (el: HTMLElement) => el.scrollHeight - el.scrollTop - el.clientHeight < 64;
  const loadOlder = () => {
    const el = scroller.current;
    if (!el || thread.loadingOlder || !thread.hasMore || thread.status !== "ready") return;
    keepFromBottom.current = el.scrollHeight - el.scrollTop;
    void thread.loadOlder();
  };
  const first = thread.messages[0]?.id;
  const last = thread.messages.at(-1);
  // Runs when the list changes shape (its first or last message, the sends in flight, a page loading), not
  // on every redraw: a read receipt must not pull the list to the bottom.
  // biome-ignore lint/correctness/useExhaustiveDependencies: the dependencies are the moments to act, on purpose
  useLayoutEffect(() => {
    const el = scroller.current;
    if (!el) return;
    if (keepFromBottom.current !== null) {
      el.scrollTop = el.scrollHeight - keepFromBottom.current;
      keepFromBottom.current = null;
    } else if (atBottom.current || last?.sender_id === me) {
      el.scrollTop = el.scrollHeight;
    }
    // Nothing to scroll while the list does not fill the screen: load older pages until it does.
    if (thread.hasMore && thread.status === "ready" && !thread.loadingOlder && el.scrollHeight <= el.clientHeight) {
      void thread.loadOlder();
    }
  }, [first, last, thread.pending.length, thread.status, thread.loadingOlder]);
  // The banner coming and going (or a resized window) changes the list's height.
  useEffect(() => {
    const el = scroller.current;
    if (!el) return;
    const observer = new ResizeObserver(() => {
      if (atBottom.current) el.scrollTop = el.scrollHeight;
    });
    observer.observe(el);
    return () => observer.disconnect();
  }, []);
  const onScroll = () => {
    const el = scroller.current;
    if (!el) return;
    atBottom.current = nearBottom(el);
    if (el.scrollTop < LOAD_OLDER_WITHIN_PX) loadOlder();
  };
  return { scroller, onScroll };
}

function Composer({
  chat,
  thread,
  closed,
  placeholder,
  onPhotos,
}: {
  chat: ChatSummary;
  thread: Thread;
  closed: boolean;
  placeholder: string;
  onPhotos(files: File[]): void;
}) {
  const page = usePage();
  const { setTyping } = useTyping(chat.id);
  const [text, setText] = useState("");
  const stopped = useRef<ReturnType<typeof setTimeout>>(undefined);
  const input = useRef<HTMLTextAreaElement>(null);
  const other = otherParticipant(chat, page.userId);
  useEffect(() => {
    if (!closed) input.current?.focus();
  }, [closed]);
  // Leaving the chat while typing: the other side is told at once, not when its indicator expires.
  const store = useChatStore();
  const chatId = chat.id;
  useEffect(
    () => () => {
      if (stopped.current === undefined) return;
      clearTimeout(stopped.current);
      store.setTyping(chatId, false);
    },
    [store, chatId],
  );
  const send = (e?: FormEvent) => {
    e?.preventDefault();
    if (text.trim() === "" || closed) return;
    const content = text;
    setText("");
    clearTimeout(stopped.current);
    setTyping(false);
    thread.send(content).then(
      // Stored: whoever blocked this user has unblocked them.
      () => page.setRefusedBy(other, false),
      (error: ChatApiError) => {
        if (error.code === ErrorCode.blocked) page.setRefusedBy(other, true);
        if (error.code === ErrorCode.listingClosed) page.setChatClosed(chat.id, true);
        // The content rules refuse this text (CONTRACT §10): it goes back into the form, to be changed.
        if (error.code === ErrorCode.contentRejected) setText((now) => now || content);
      },
    );
  };
  const onKeyDown = (e: KeyboardEvent<HTMLTextAreaElement>) => {
    if (e.key === "Enter" && !e.shiftKey && !e.nativeEvent.isComposing) send(e);
  };
  return (
    <form className="send" data-testid="send-form" onSubmit={send}>
      <AttachButton disabled={closed} onFiles={onPhotos} />
      <textarea
        ref={input}
        rows={2}
        maxLength={4000}
        placeholder={placeholder}
        data-testid="send-input"
        disabled={closed}
        value={text}
        onKeyDown={onKeyDown}
        onPaste={(e) => {
          const files = pastedFiles(e);
          if (files.length > 0 && !closed) onPhotos(files);
        }}
        onChange={(e) => {
          setText(e.target.value);
          clearTimeout(stopped.current);
          if (e.target.value.trim() === "") return setTyping(false);
          setTyping(true);
          stopped.current = setTimeout(() => setTyping(false), STOPPED_TYPING_AFTER_MS);
        }}
      />
      <button type="submit" data-testid="send-submit" disabled={closed}>
        Send
      </button>
    </form>
  );
}

/** "Report chat" / "Report user": the form under the chat's header, then "Reported" in its place. */
function ReportPanelContent({ target, what, onClose }: { target: ReportTarget; what: string; onClose(): void }) {
  const [done, setDone] = useState(false);
  if (!done) {
    return <ReportForm target={target} what={what} onClose={(reported) => (reported ? setDone(true) : onClose())} />;
  }
  return (
    <>
      <span className="reported" data-testid="report-done">
        Reported
      </span>
      {` ${what}: thank you, the platform will look at it. `}
      <button type="button" className="link" onClick={onClose}>
        close
      </button>
    </>
  );
}

export function ChatView({ chatId }: { chatId: number }) {
  const page = usePage();
  const store = useChatStore();
  const chat = useChat(chatId) as ChatSummary | undefined;
  const thread = useThread(chatId);
  const { mode, suspended } = useConnection();
  const { blocked, block, unblock } = useBlocks();
  const typing = useTyping(chatId).userIds.filter((id) => id !== page.userId);
  const other = chat ? otherParticipant(chat, page.userId) : 0;
  const online = usePresence(other) === true;
  const [report, setReport] = useState<{ target: ReportTarget; what: string } | null>(null);
  const [busy, setBusy] = useState(false);
  const { scroller, onScroll } = useScrolling(thread, page.userId);
  const iBlock = blocked.includes(other);
  const listingRemoved = chat?.listing?.status === "removed" || page.closedChats.has(chatId);
  const closed = iBlock || suspended || listingRemoved;
  const [photoError, setPhotoError] = useState<string | null>(null);
  // Attached, pasted or dropped: the client checks the files first (type, size, count), then the server does;
  // either refusal is said in words under the thread.
  const sendPhotos = (files: File[]) => {
    if (closed) return;
    setPhotoError(null);
    thread.sendPhotos(files).then(
      () => page.setRefusedBy(other, false),
      (error: ChatApiError) => {
        if (error.code === "send_aborted") return; // discarded while uploading
        if (error.code === ErrorCode.blocked) page.setRefusedBy(other, true);
        if (error.code === ErrorCode.listingClosed) page.setChatClosed(chatId, true);
        setPhotoError(`Photo not sent: ${error.message}`);
      },
    );
  };
  const drop = useFileDrop(sendPhotos, closed);

  const { showError } = page;
  useEffect(() => {
    if (thread.error) showError(`could not load the messages of chat ${chatId}: ${thread.error.message}`);
  }, [thread.error, chatId, showError]);
  // Seen: marked read up to the newest message from the other side, while the page is visible (the store sends
  // nothing when that is already done, so running on every change of the thread costs nothing).
  useEffect(() => {
    const markRead = () => {
      if (document.visibilityState !== "visible" || thread.status !== "ready") return;
      thread
        .markRead()
        .catch((error: unknown) => page.showError(`could not mark chat ${chatId} read: ${describe(error)}`));
    };
    markRead();
    document.addEventListener("visibilitychange", markRead);
    return () => document.removeEventListener("visibilitychange", markRead);
  }, [thread, chatId, page.showError]);

  if (!chat) return null;
  const name = peerName(chat, page.userId);
  const setBlocked = (to: boolean) => {
    setBusy(true);
    (to ? block(other) : unblock(other))
      .then(
        () => page.showError(null),
        (error: unknown) => page.showError(`could not ${to ? "block" : "unblock"} User ${other}: ${describe(error)}`),
      )
      .finally(() => setBusy(false));
  };
  const archive = () => {
    setBusy(true);
    (chat.archived ? store.unarchiveChat(chatId) : store.archiveChat(chatId))
      .then(
        () => page.showError(null),
        (error: unknown) =>
          page.showError(`could not ${chat.archived ? "unarchive" : "archive"} the chat: ${describe(error)}`),
      )
      .finally(() => setBusy(false));
  };
  // The platform's reasons first: while they last, unblocking would not let this user write either.
  const notice = suspended
    ? { state: "suspended", text: SUSPENDED_TEXT }
    : listingRemoved
      ? { state: "listing-removed", text: "This listing was removed: you can read but not send" }
      : iBlock
        ? { state: "blocked", text: "You blocked this user" }
        : page.refusedBy.has(other)
          ? { state: "refused", text: "You can't send messages in this chat" }
          : null;
  const placeholder = suspended
    ? "Your account is suspended: you can't send messages"
    : listingRemoved
      ? "This listing was removed: you can't send messages here"
      : iBlock
        ? "You blocked this user: unblock them to write"
        : "Write a message: Enter sends, Shift+Enter starts a new line";
  const typingNames = typing.map((id) => nameOf(chat.peer, id));
  return (
    <section
      className="chat"
      data-testid="chat-view"
      data-chat-id={chatId}
      data-blocked={iBlock ? "by-me" : page.refusedBy.has(other) ? "refused" : "no"}
      data-listing-status={chat.listing?.status ?? "unregistered"}
    >
      <header className="chat-header">
        <div className="chat-title" data-testid="chat-title">
          <Avatar peer={chat.peer} userId={other} size="large" />
          <PresenceDot userId={other} peer={chat.peer} online={online} />
          <span className="chat-words" data-testid="chat-peer">
            {chat.buyer_id === page.userId ? `Buying from ${name}` : `Selling to ${name}`}
          </span>
          <span className="muted">{` · chat ${chatId}`}</span>
          <span className="muted" data-testid="chat-presence">
            {mode === "live" ? (online ? " · online" : " · offline") : ""}
          </span>
        </div>
        <div className="chat-actions">
          <button
            type="button"
            className="quiet"
            data-testid="archive-chat"
            data-archived={String(chat.archived)}
            disabled={busy}
            onClick={archive}
          >
            {chat.archived ? "Unarchive" : "Archive"}
          </button>
          <button
            type="button"
            className="quiet"
            data-testid="report-chat"
            onClick={() => setReport({ target: { chat_id: chatId }, what: "this chat" })}
          >
            Report chat
          </button>
          <button
            type="button"
            className="quiet"
            data-testid="report-user"
            onClick={() => setReport({ target: { user_id: other }, what: name })}
          >
            {`Report ${name}`}
          </button>
          <button
            type="button"
            className="quiet danger"
            data-testid="block-user"
            hidden={iBlock}
            disabled={busy}
            onClick={() => setBlocked(true)}
          >
            {`Block ${name}`}
          </button>
        </div>
      </header>
      <div className="listing-bar" data-testid="chat-listing">
        <ListingCard listing={chat.listing} listingId={chat.listing_id} compact={false} />
      </div>
      <div className="report-panel" data-testid="report-panel" hidden={!report}>
        {report && <ReportPanelContent key={reportKey(report.target)} {...report} onClose={() => setReport(null)} />}
      </div>
      <div
        className={`scroller${drop.dropping ? " dropping" : ""}`}
        data-testid="message-scroller"
        ref={scroller}
        onScroll={onScroll}
        {...drop.handlers}
      >
        <p
          className="history muted"
          data-testid="history-status"
          data-state={
            thread.status === "error" ? "error" : thread.status === "loading" || thread.hasMore ? "more" : "complete"
          }
        >
          {thread.status === "error"
            ? `could not load the messages${thread.error?.retryable ? ": trying again" : ""}`
            : thread.status === "loading" || thread.loadingOlder
              ? "loading older messages…"
              : thread.hasMore
                ? "scroll up for older messages"
                : "beginning of the conversation"}
        </p>
        <MessageList thread={thread} />
      </div>
      <p className="typing" data-testid="typing-indicator" hidden={typing.length === 0}>
        {typing.length === 0 ? "" : `${typingNames.join(", ")} ${typing.length > 1 ? "are" : "is"} typing…`}
      </p>
      <p className="chat-notice" role="status" data-testid="chat-notice" data-state={notice?.state} hidden={!notice}>
        {notice && <span data-testid="chat-notice-text">{notice.text}</span>}
        {notice?.state === "blocked" && (
          <>
            {" "}
            <button
              type="button"
              className="small"
              data-testid="unblock-user"
              disabled={busy}
              onClick={() => setBlocked(false)}
            >
              Unblock
            </button>
          </>
        )}
      </p>
      <p className="photo-error" role="alert" hidden={photoError === null}>
        <span data-testid="photo-error">{photoError ?? ""}</span>{" "}
        <button type="button" className="link" data-testid="photo-error-dismiss" onClick={() => setPhotoError(null)}>
          dismiss
        </button>
      </p>
      <Composer chat={chat} thread={thread} closed={closed} placeholder={placeholder} onPhotos={sendPhotos} />
    </section>
  );
}
