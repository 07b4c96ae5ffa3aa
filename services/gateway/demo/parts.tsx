/**
 * The demo's small pieces: how a person, a listing and a price are drawn, the report form, and the page's own
 * state (what it knows beyond the store: reports made, refusals heard, the error line).
 */
import { type ReportRequest, reportReasons } from "@listings-chat/client";
import type { Chat, ChatListing, ChatPeer, ListingStatus, ReportReason } from "@listings-chat/client/protocol";
import { useChatClient } from "@listings-chat/react";
import { createContext, type FormEvent, useContext, useEffect, useRef, useState } from "react";

export const describe = (error: unknown) => (error instanceof Error ? error.message : String(error));

/** What a suspended user reads, above the list and in place of the send form (CONTRACT §8). */
export const SUSPENDED_TEXT =
  "Your account is suspended: you can read your chats, but not send messages, edit them or start new chats.";

/** What the page keeps of its own for a signed-in user (the store keeps the chat's state). */
export interface PageState {
  userId: number;
  showError(text: string | null): void;
  /** What this user reported since sign-in (`message:12`, `chat:3`, `user:7`): shown as "Reported". */
  reported: ReadonlySet<string>;
  markReported(key: string): void;
  /**
   * People a send to whom was refused `blocked` although this user does not block them: they block this user.
   * Known only from a refusal (nobody is told they are blocked), forgotten when a send to them is stored or a
   * message from them arrives (they unblocked).
   */
  refusedBy: ReadonlySet<number>;
  setRefusedBy(userId: number, refused: boolean): void;
  /** Chats whose sends were refused `listing_closed` before the page heard that their listing was removed. */
  closedChats: ReadonlySet<number>;
  setChatClosed(chatId: number, closed: boolean): void;
}

export const PageContext = createContext<PageState | null>(null);

export function usePage(): PageState {
  const page = useContext(PageContext);
  if (!page) throw new Error("usePage: outside the signed-in page");
  return page;
}

export const otherParticipant = (chat: Chat, me: number) => (chat.buyer_id === me ? chat.seller_id : chat.buyer_id);

/** What the platform calls a person (CONTRACT §8), or "User N" while it has not named them. */
export const nameOf = (peer: Pick<ChatPeer, "id" | "display_name"> | undefined, userId: number) =>
  peer?.id === userId && peer.display_name ? peer.display_name : `User ${userId}`;

export const peerName = (chat: Chat, me: number) => nameOf(chat.peer, otherParticipant(chat, me));

/** An image that removes itself when it does not load (the initials or the empty frame behind it show). */
function FallibleImage({ src, alt }: { src: string; alt: string }) {
  const [failed, setFailed] = useState(false);
  return failed ? null : <img alt={alt} src={src} onError={() => setFailed(true)} />;
}

/** The person's picture, or their initials in a circle when the platform gave none (or it does not load). */
export function Avatar({
  peer,
  userId,
  size = "small",
}: {
  peer?: ChatPeer;
  userId: number;
  size?: "small" | "large";
}) {
  const name = nameOf(peer, userId);
  const initials = name
    .split(/\s+/)
    .filter(Boolean)
    .slice(0, 2)
    .map((word) => [...word][0]?.toUpperCase() ?? "")
    .join("");
  const url = peer?.id === userId ? peer.avatar_url : null;
  return (
    <span className={`avatar ${size}`} data-testid="avatar">
      {/^User \d+$/.test(name) ? "#" : initials}
      {url && <FallibleImage alt="" src={url} />}
    </span>
  );
}

/** A dot that is green while the person is online. */
export function PresenceDot({ userId, peer, online }: { userId: number; peer?: ChatPeer; online: boolean }) {
  const title = `${nameOf(peer, userId)} is ${online ? "online" : "offline"}`;
  return (
    <span
      className={`presence${online ? " online" : ""}`}
      data-testid="presence"
      data-user-id={userId}
      data-online={String(online)}
      role="img"
      title={title}
      aria-label={title}
    />
  );
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
 * The listing a chat is about: photo, title, price and a badge unless active. `compact` in the chat list; at
 * the top of the open chat the title links to the listing on the platform. Unregistered: its number.
 */
export function ListingCard({
  listing,
  listingId,
  compact,
}: {
  listing: ChatListing | null;
  listingId: number;
  compact: boolean;
}) {
  const titleText = listing ? listing.title : `Listing #${listingId}`;
  const label = listing ? STATUS_LABELS[listing.status] : null;
  return (
    <div
      className={`listing-card${compact ? " compact" : ""}`}
      data-testid="listing-card"
      data-listing-id={listingId}
      data-status={listing?.status ?? "unregistered"}
    >
      <span className="listing-photo" data-testid="listing-photo">
        {listing?.image_url && <FallibleImage alt={listing.title} src={listing.image_url} />}
      </span>
      <span className="listing-text">
        {listing && !compact ? (
          <a
            className="listing-title"
            data-testid="listing-title"
            href={listing.url}
            target="_blank"
            rel="noopener noreferrer"
          >
            {titleText}
          </a>
        ) : (
          <span className="listing-title" data-testid="listing-title">
            {titleText}
          </span>
        )}
        <span className="listing-line">
          {listing ? (
            <>
              <span className="listing-price" data-testid="listing-price">
                {formatPrice(listing.price_minor, listing.currency)}
              </span>
              {label && (
                <>
                  {" "}
                  <span className={`listing-badge ${listing.status}`} data-testid="listing-badge">
                    {label}
                  </span>
                </>
              )}
            </>
          ) : (
            <span className="muted">not on the platform yet</span>
          )}
        </span>
      </span>
    </div>
  );
}

export type ReportTarget = { message_id: number } | { chat_id: number } | { user_id: number };

export const reportKey = (target: ReportTarget) =>
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
 * An inline report form: a reason (to choose: none is preselected), an optional note, "Report" and "cancel".
 * `onClose(true)` once the report is stored, `onClose(false)` on cancel; a refusal (a limit, the network) is
 * shown in the form, which stays open to try again.
 */
export function ReportForm({
  target,
  what,
  onClose,
}: {
  target: ReportTarget;
  what: string;
  onClose(reported: boolean): void;
}) {
  const client = useChatClient();
  const page = usePage();
  const [reason, setReason] = useState("");
  const [note, setNote] = useState("");
  const [busy, setBusy] = useState(false);
  const [failure, setFailure] = useState<string | null>(null);
  const select = useRef<HTMLSelectElement>(null);
  useEffect(() => select.current?.focus(), []);
  const submit = (e: FormEvent) => {
    e.preventDefault();
    if (!reason) return;
    setBusy(true);
    setFailure(null);
    const text = note.trim();
    const request = { reason: reason as ReportReason, ...(text ? { note: text } : {}), ...target } as ReportRequest;
    client.report(request).then(
      () => {
        page.markReported(reportKey(target));
        onClose(true);
      },
      (error: unknown) => {
        setBusy(false);
        setFailure(`not reported: ${describe(error)}`);
      },
    );
  };
  return (
    <form className="report" data-testid="report-form" onSubmit={submit}>
      <select
        ref={select}
        data-testid="report-reason"
        required
        aria-label={`Why you report ${what}`}
        value={reason}
        onChange={(e) => setReason(e.target.value)}
      >
        <option value="" disabled>
          {`Report ${what}: why?`}
        </option>
        {reportReasons.map((value) => (
          <option key={value} value={value}>
            {REASON_LABELS[value]}
          </option>
        ))}
      </select>
      <input
        data-testid="report-note"
        placeholder="A note for the moderators (optional)"
        maxLength={1_000}
        value={note}
        onChange={(e) => setNote(e.target.value)}
      />
      <button type="submit" className="small" data-testid="report-submit" disabled={busy}>
        Report
      </button>
      <button type="button" className="link" data-testid="report-cancel" onClick={() => onClose(false)}>
        cancel
      </button>
      <span className="report-error" data-testid="report-error" hidden={failure === null}>
        {failure}
      </span>
    </form>
  );
}

/** A labelled field for an id: a positive whole number (sign-in, "Contact a seller"). */
export function IdField(props: {
  label: string;
  name: string;
  testId: string;
  value: string;
  onChange(value: string): void;
}) {
  return (
    <label>
      {props.label}
      <input
        name={props.name}
        type="number"
        min="1"
        step="1"
        required
        data-testid={props.testId}
        value={props.value}
        onChange={(e) => props.onChange(e.target.value)}
      />
    </label>
  );
}
