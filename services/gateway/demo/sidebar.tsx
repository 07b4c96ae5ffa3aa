/** The sidebar: "Contact a seller", and the chat list (or the archived one) as the store keeps it. */
import { ChatApiError, ErrorCode } from "@listings-chat/client";
import type { Chat, ChatSummary, Message } from "@listings-chat/client/protocol";
import { useBlocks, useChatList, useChatStore, usePresence } from "@listings-chat/react";
import { type FormEvent, useEffect, useRef, useState } from "react";
import {
  Avatar,
  describe,
  IdField,
  ListingCard,
  nameOf,
  otherParticipant,
  PresenceDot,
  peerName,
  SUSPENDED_TEXT,
  usePage,
} from "./parts.tsx";

/** A photo message in one line: its caption, else how many photos. */
function photoLine(message: Message): string {
  const count = message.attachments.length;
  const what = count === 1 ? "a photo" : `${count} photos`;
  return message.content ? `${what}: ${message.content}` : what;
}

function previewOf(message: Message, me: number, chat: Chat): string {
  const text = message.deleted_at ? "(deleted)" : message.kind === "image" ? photoLine(message) : message.content;
  if (message.kind === "system" || message.sender_id === null) return text;
  const who = message.sender_id === me ? "you" : nameOf(chat.peer, message.sender_id);
  return `${who}: ${text}`;
}

function ChatItem({ chat, open, onSelect }: { chat: ChatSummary; open: boolean; onSelect(): void }) {
  const { userId } = usePage();
  const other = otherParticipant(chat, userId);
  const online = usePresence(other) === true;
  const blocked = useBlocks().blocked.includes(other);
  return (
    <li>
      <button
        type="button"
        data-testid="chat-item"
        data-chat-id={chat.id}
        data-archived={String(chat.archived)}
        data-blocked={String(blocked)}
        aria-current={String(open) as "true" | "false"}
        onClick={onSelect}
      >
        <span className="title">
          <Avatar peer={chat.peer} userId={other} />
          <PresenceDot userId={other} peer={chat.peer} online={online} />
          <span className="peer-name" data-testid="peer-name">
            {peerName(chat, userId)}
          </span>
          <span className="role muted">{chat.buyer_id === userId ? " · buying" : " · selling"}</span>
          {blocked && (
            <>
              {" "}
              <span className="blocked-tag" data-testid="chat-blocked" title={`You blocked ${peerName(chat, userId)}`}>
                blocked
              </span>
            </>
          )}
        </span>
        <span className="badge" data-testid="chat-unread" hidden={chat.unread_count === 0}>
          {chat.unread_count}
        </span>
        <ListingCard listing={chat.listing} listingId={chat.listing_id} compact />
        <span className="preview" data-testid="chat-preview">
          {chat.last_message ? previewOf(chat.last_message, userId, chat) : "no messages"}
        </span>
      </button>
    </li>
  );
}

/** "Contact a seller": opens (or finds) the chat about a listing; unfolded while the user has no chats yet. */
function OpenChatForm({ unfold, onOpened }: { unfold: boolean; onOpened(chat: Chat): void }) {
  const store = useChatStore();
  const page = usePage();
  const { blocked } = useBlocks();
  const details = useRef<HTMLDetailsElement>(null);
  const [listing, setListing] = useState("");
  const [seller, setSeller] = useState("");
  // Where a new user starts; once there are chats it stays folded until asked for.
  useEffect(() => {
    if (unfold && details.current) details.current.open = true;
  }, [unfold]);
  const submit = (e: FormEvent) => {
    e.preventDefault();
    const listingId = Number(listing);
    const sellerId = Number(seller);
    store.openChat(listingId, sellerId).then(
      (chat) => {
        page.showError(null);
        onOpened(chat);
      },
      (error: unknown) => {
        const code = error instanceof ChatApiError ? error.code : undefined;
        if (code === ErrorCode.userSuspended) return page.showError(SUSPENDED_TEXT);
        if (code === ErrorCode.listingClosed)
          return page.showError(`Listing #${listingId} was removed: no new chats on it`);
        if (code === ErrorCode.listingNotFound) {
          return page.showError(`Listing #${listingId} is not on the platform, or User ${sellerId} does not sell it`);
        }
        if (code !== ErrorCode.blocked) return page.showError(`could not open the chat: ${describe(error)}`);
        page.showError(
          blocked.includes(sellerId)
            ? `You blocked User ${sellerId}: unblock them (in your chat with them) to contact them`
            : `You can't contact User ${sellerId}`,
        );
      },
    );
  };
  return (
    <details className="open-chat" data-testid="open-chat" ref={details}>
      <summary>Contact a seller</summary>
      <form data-testid="open-chat-form" onSubmit={submit}>
        <p className="muted">As a buyer: the listing you are interested in, and its seller.</p>
        <IdField
          label="Listing id"
          name="listing_id"
          testId="open-chat-listing"
          value={listing}
          onChange={setListing}
        />
        <IdField
          label="Seller's user id"
          name="seller_id"
          testId="open-chat-seller"
          value={seller}
          onChange={setSeller}
        />
        <button type="submit" data-testid="open-chat-submit">
          Open the chat
        </button>
      </form>
    </details>
  );
}

export function Sidebar({ openChatId, onSelect }: { openChatId: number | null; onSelect(chatId: number): void }) {
  const main = useChatList();
  const archived = useChatList({ archived: true });
  const [showArchived, setShowArchived] = useState(false);
  const shown = showArchived ? archived : main;
  const loaded = main.status === "ready" && archived.status === "ready";
  const [firstCount, setFirstCount] = useState<number | null>(null);
  useEffect(() => {
    if (loaded && firstCount === null) setFirstCount(main.chats.length + archived.chats.length);
  }, [loaded, firstCount, main.chats.length, archived.chats.length]);
  const count = archived.chats.length;
  const { showError } = usePage();
  const listError = main.error ?? archived.error;
  useEffect(() => {
    if (listError) showError(`could not list the chats: ${listError.message}`);
  }, [listError, showError]);
  return (
    <aside className="sidebar">
      <OpenChatForm
        unfold={firstCount === 0}
        onOpened={(chat) => {
          // An archived chat opened again is shown where it is.
          setShowArchived(chat.archived);
          onSelect(chat.id);
        }}
      />
      <div className="list-head">
        <h2 data-testid="chat-list-title">{showArchived ? "Archived chats" : "Chats"}</h2>
        <button
          type="button"
          className="quiet small"
          data-testid="archived-toggle"
          aria-pressed={showArchived}
          data-count={count}
          onClick={() => setShowArchived(!showArchived)}
        >
          {showArchived ? "← All chats" : `Archived (${count})`}
        </button>
      </div>
      <ul className="chat-list" data-testid="chat-list" data-list={showArchived ? "archived" : "main"}>
        {shown.chats.map((chat) => (
          <ChatItem key={chat.id} chat={chat} open={chat.id === openChatId} onSelect={() => onSelect(chat.id)} />
        ))}
      </ul>
      <p className="muted" data-testid="no-chats" hidden={shown.chats.length > 0}>
        {showArchived ? "No archived chats." : "No chats yet."}
      </p>
    </aside>
  );
}
