/**
 * The protocol's shapes (CONTRACT §4–§6, §8, §11): what the API answers and what the socket carries, as plain
 * TypeScript with no run-time dependency. The services check frames and bodies with zod schemas of their own
 * (`@listings-chat/shared`), which `tsc` keeps equal to these types.
 */

/** What a message is (CONTRACT §8): a person's text, the platform's voice, or photos (§11). */
export type MessageKind = "text" | "system" | "image";
export const messageKinds = ["text", "system", "image"] as const satisfies readonly MessageKind[];

/** Who deleted a message: its sender, or the platform (moderation, CONTRACT §8). */
export type DeletedBy = "sender" | "platform";

/** A photo of an `image` message (CONTRACT §11); `url` and `thumb_url` are API paths. */
export interface Attachment {
  id: string;
  content_type: string;
  width: number;
  height: number;
  size: number;
  url: string;
  thumb_url: string;
}

/** The photo types the server takes (CONTRACT §11). */
export const uploadContentTypes = ["image/jpeg", "image/png", "image/webp"] as const;
export type UploadContentType = (typeof uploadContentTypes)[number];

/**
 * `POST /api/v1/uploads` (CONTRACT §11): where the browser sends one photo's bytes, straight to storage, before
 * the message names it by `upload_id`.
 */
export interface UploadTicket {
  upload_id: string;
  /** Absolute (S3, presigned: another origin), or a path on the gateway (development storage). */
  url: string;
  method: "PUT";
  /** Sent exactly as given (`content-type` among them), and no credentials. */
  headers: Record<string, string>;
  /** Seconds the `url` stays valid. */
  expires_in: number;
}

/**
 * `GET /api/v1/attachments/:id[?size=thumb]` asked with `Accept: application/json` (CONTRACT §11): a short-lived
 * URL of the bytes that needs no credentials (absolute, or a path on the gateway).
 */
export interface AttachmentLink {
  url: string;
  expires_in: number;
}

/** A stored message as the API returns it (CONTRACT §4, §8). Times are ISO-8601 UTC. */
export interface Message {
  id: number;
  chat_id: number;
  /** Null for a system message: the platform's voice, not a participant's. */
  sender_id: number | null;
  kind: MessageKind;
  /** Empty once deleted; may be empty only for an `image` message. */
  content: string;
  /** What the platform attached to a system message (an offer, a tracking number); null otherwise. */
  data: Record<string, unknown> | null;
  /** `[]` when none. */
  attachments: Attachment[];
  client_msg_id: string | null;
  created_at: string;
  edited_at: string | null;
  deleted_at: string | null;
  deleted_by: DeletedBy | null;
}

export const listingStatuses = ["active", "reserved", "sold", "removed"] as const;
export type ListingStatus = (typeof listingStatuses)[number];

/** The listing a chat is about, as the platform registered it (CONTRACT §8). */
export interface ChatListing {
  id: number;
  title: string;
  /** Minor units (cents). */
  price_minor: number;
  currency: string;
  image_url: string | null;
  url: string;
  status: ListingStatus;
}

/** The other participant, as the viewer sees them; unknown names are null (CONTRACT §8). */
export interface ChatPeer {
  id: number;
  display_name: string | null;
  avatar_url: string | null;
}

export interface Chat {
  id: number;
  listing_id: number;
  buyer_id: number;
  seller_id: number;
  created_at: string;
  last_activity_at: string;
  /** Null while the platform has not registered the listing. */
  listing: ChatListing | null;
  peer: ChatPeer;
  /** Archived by the viewer (hidden from their chat list until a message from the other side). */
  archived: boolean;
}

export interface ChatSummary extends Chat {
  last_message: Message | null;
  unread_count: number;
  /** How far the other participant has read: your messages up to this id show as read. */
  peer_last_read_message_id: number | null;
}

/** Every stored change, in the order of its strictly increasing `event_id`. */
export type ChatEvent =
  | { type: "new_message"; event_id: number; chat_id: number; message: Message }
  | { type: "message_edited"; event_id: number; chat_id: number; message: Message }
  | { type: "message_deleted"; event_id: number; chat_id: number; message: Message }
  | {
      type: "message_read";
      event_id: number;
      chat_id: number;
      message_id: number;
      read_by: number;
      read_at: string;
    }
  | { type: "chat_created"; event_id: number; chat: Chat }
  /** The chat's listing changed, or the viewer archived or restored it (CONTRACT §8). */
  | { type: "chat_updated"; event_id: number; chat: Chat }
  /** Only on the blocker's own devices (CONTRACT §10): `user_id` is whom they block, or no longer block. */
  | { type: "user_blocked"; event_id: number; user_id: number }
  | { type: "user_unblocked"; event_id: number; user_id: number };

export type ChatEventType = ChatEvent["type"];

/** An event before the log gave it an id. */
export type ChatEventDraft = ChatEvent extends infer E ? (E extends ChatEvent ? Omit<E, "event_id"> : never) : never;

/** Frames the server sends that are not stored events. */
export type ServerControlFrame =
  | { type: "connected"; user_id: number; connection_id: string; timestamp: string; last_event_id: number }
  | { type: "pong"; timestamp: string }
  | { type: "typing"; chat_id: number; user_id: number; is_typing: boolean }
  | { type: "presence"; user_id: number; online: boolean }
  | { type: "ack"; ref: string; message: Message }
  | { type: "error"; code: string; message: string; ref?: string };

export type ServerFrame = ChatEvent | ServerControlFrame;

/** Frames the client sends (CONTRACT §5). */
export type ClientFrame =
  | { type: "ping" }
  | { type: "typing"; chat_id: number; is_typing: boolean }
  | { type: "mark_read"; chat_id: number; message_id: number }
  /** `content` may be empty when `attachments` (upload ids, CONTRACT §11) are given. */
  | { type: "send_message"; chat_id: number; content: string; client_msg_id: string; attachments?: string[] }
  | { type: "resume"; after: number };

/** Why a report is made (CONTRACT §10). */
export const reportReasons = ["spam", "scam", "harassment", "inappropriate", "other"] as const;
export type ReportReason = (typeof reportReasons)[number];
