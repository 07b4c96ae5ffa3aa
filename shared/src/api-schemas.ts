/**
 * zod schemas of the RESPONSE shapes of the public HTTP API (CONTRACT §2–§4), for documentation
 * (the gateway's OpenAPI document) and for anyone who wants to check an answer at run time.
 *
 * Each schema carries a zod-native `.meta({ id })`, so that JSON Schema and OpenAPI generators emit it
 * once under that name and refer to it wherever it is nested. No generator is imported here.
 *
 * The compile-time checks at the end keep every schema equal to the TypeScript type that the code actually
 * uses (`@listings-chat/client/protocol`): change one without the other and `tsc` fails.
 */

import type {
  Attachment,
  AttachmentLink,
  Chat,
  ChatEvent,
  ChatListing,
  ChatPeer,
  ChatSummary,
  ClientFrame,
  ErrorBody,
  Message,
  ServerControlFrame,
  UploadTicket,
} from "@listings-chat/client/protocol";
import { listingStatuses, messageKinds } from "@listings-chat/client/protocol";
import { z } from "zod";
import type { clientFrameSchema } from "./protocol.ts";

const id = z.number().int().positive();
const count = z.number().int().nonnegative();
/** ISO-8601 UTC, as `Date.prototype.toISOString` writes it. */
const isoTime = z.iso.datetime();
/** 0 before the first event; otherwise the id of an event. */
const eventCursor = z.number().int().nonnegative();

export const attachmentSchema = z
  .object({
    id: z.string(),
    content_type: z.string().meta({ example: "image/jpeg" }),
    width: z.number().int().positive(),
    height: z.number().int().positive(),
    size: count.meta({ description: "stored bytes" }),
    url: z.string().meta({ description: "API path: 302 to the photo" }),
    thumb_url: z.string().meta({ description: "API path: 302 to the thumbnail (at most 320 px)" }),
  })
  .meta({ id: "Attachment", description: "A photo of an `image` message." });

export const messageSchema = z
  .object({
    id,
    chat_id: id,
    sender_id: id.nullable().meta({ description: "null for a system message (the platform's voice)" }),
    kind: z.enum(messageKinds).meta({
      description: "`text`: a person's; `system`: the platform's, with `data`; `image`: with `attachments`",
    }),
    content: z.string().meta({ description: "Empty once the message is deleted." }),
    data: z
      .record(z.string(), z.unknown())
      .nullable()
      .meta({ description: "what the platform attached to a system message; null otherwise" }),
    attachments: z.array(attachmentSchema).meta({ description: "`[]` when none" }),
    client_msg_id: z.string().nullable(),
    created_at: isoTime,
    edited_at: isoTime.nullable(),
    deleted_at: isoTime.nullable(),
    deleted_by: z
      .enum(["sender", "platform"])
      .nullable()
      .meta({ description: "who deleted it: its sender, or the platform (moderation); null while not deleted" }),
  })
  .meta({ id: "Message", description: "A stored message. A deleted message keeps its id and has empty content." });

export const chatListingSchema = z
  .object({
    id,
    title: z.string(),
    price_minor: count.meta({ description: "minor units (cents)" }),
    currency: z.string().meta({ example: "EUR" }),
    image_url: z.string().nullable(),
    url: z.string(),
    status: z.enum(listingStatuses),
  })
  .meta({ id: "ChatListing", description: "The listing as the platform registered it." });

export const chatPeerSchema = z
  .object({ id, display_name: z.string().nullable(), avatar_url: z.string().nullable() })
  .meta({ id: "ChatPeer", description: "The other participant as the viewer sees them; unknown names are null." });

export const chatSchema = z
  .object({
    id,
    listing_id: id,
    buyer_id: id,
    seller_id: id,
    created_at: isoTime,
    last_activity_at: isoTime,
    listing: z
      .union([chatListingSchema, z.null()])
      .meta({ description: "null while the platform has not registered it" }),
    peer: chatPeerSchema,
    archived: z.boolean().meta({ description: "archived by the viewer" }),
  })
  .meta({ id: "Chat" });

export const chatSummarySchema = chatSchema
  .extend({
    // Same as `messageSchema.nullable()` to zod, but generators turn `.nullable()` of a named schema into a
    // nullable component or an unsatisfiable `allOf`; the union is emitted as `anyOf: [$ref, null]`.
    last_message: z.union([messageSchema, z.null()]),
    unread_count: count,
    peer_last_read_message_id: id.nullable().meta({
      description: "how far the other participant has read: your messages up to this id show as read",
    }),
  })
  .meta({ id: "ChatSummary", description: "A chat as `GET /api/v1/chats` lists it." });

const messageEventFields = { event_id: id, chat_id: id, message: messageSchema };

export const newMessageEventSchema = z
  .object({ type: z.literal("new_message"), ...messageEventFields })
  .meta({ id: "NewMessageEvent" });
export const messageEditedEventSchema = z
  .object({ type: z.literal("message_edited"), ...messageEventFields })
  .meta({ id: "MessageEditedEvent" });
export const messageDeletedEventSchema = z
  .object({ type: z.literal("message_deleted"), ...messageEventFields })
  .meta({ id: "MessageDeletedEvent" });
export const messageReadEventSchema = z
  .object({
    type: z.literal("message_read"),
    event_id: id,
    chat_id: id,
    message_id: id,
    read_by: id,
    read_at: isoTime,
  })
  .meta({ id: "MessageReadEvent" });
export const chatCreatedEventSchema = z
  .object({ type: z.literal("chat_created"), event_id: id, chat: chatSchema })
  .meta({ id: "ChatCreatedEvent" });

export const chatUpdatedEventSchema = z
  .object({ type: z.literal("chat_updated"), event_id: id, chat: chatSchema })
  .meta({
    id: "ChatUpdatedEvent",
    description: "The chat's listing changed (both participants), or you archived or restored it (your devices only).",
  });

export const userBlockedEventSchema = z
  .object({ type: z.literal("user_blocked"), event_id: id, user_id: id.meta({ description: "whom you block" }) })
  .meta({ id: "UserBlockedEvent", description: "Only on the blocker's own devices." });
export const userUnblockedEventSchema = z
  .object({
    type: z.literal("user_unblocked"),
    event_id: id,
    user_id: id.meta({ description: "whom you no longer block" }),
  })
  .meta({ id: "UserUnblockedEvent", description: "Only on the blocker's own devices." });

export const chatEventSchema = z
  .discriminatedUnion("type", [
    newMessageEventSchema,
    messageEditedEventSchema,
    messageDeletedEventSchema,
    messageReadEventSchema,
    chatCreatedEventSchema,
    chatUpdatedEventSchema,
    userBlockedEventSchema,
    userUnblockedEventSchema,
  ])
  .meta({
    id: "ChatEvent",
    description: "A stored change; the same objects, in the same order, as the WebSocket delivers.",
  });

/** Frames the server sends that are not stored events (CONTRACT §5): the socket's own conversation. */
export const connectedFrameSchema = z
  .object({
    type: z.literal("connected"),
    user_id: id,
    connection_id: z.string(),
    timestamp: isoTime,
    last_event_id: eventCursor.meta({ description: "the newest event of your stream: store it to resume after it" }),
  })
  .meta({ id: "ConnectedFrame", description: "The greeting: the socket is live once it arrives (after any replay)." });
export const pongFrameSchema = z
  .object({ type: z.literal("pong"), timestamp: isoTime })
  .meta({ id: "PongFrame", description: "The answer to a `ping`." });
export const typingFrameSchema = z
  .object({ type: z.literal("typing"), chat_id: id, user_id: id, is_typing: z.boolean() })
  .meta({ id: "TypingFrame", description: "The other participant is typing, or stopped (not stored)." });
export const presenceFrameSchema = z
  .object({ type: z.literal("presence"), user_id: id, online: z.boolean() })
  .meta({ id: "PresenceFrame", description: "Someone you chat with came online or went offline (not stored)." });
export const ackFrameSchema = z
  .object({
    type: z.literal("ack"),
    ref: z.string().meta({ description: "the `client_msg_id` of the `send_message` it answers" }),
    message: messageSchema,
  })
  .meta({ id: "AckFrame", description: "Your `send_message` is stored: the message as stored." });
export const errorFrameSchema = z
  .object({
    type: z.literal("error"),
    code: z.string().meta({ description: "snake_case machine code, as in REST error bodies" }),
    message: z.string(),
    ref: z.string().optional().meta({ description: "the `client_msg_id` of the `send_message` it refuses" }),
  })
  .meta({ id: "ErrorFrame", description: "A frame was refused; the socket stays open." });
export const serverControlFrameSchema = z
  .discriminatedUnion("type", [
    connectedFrameSchema,
    pongFrameSchema,
    typingFrameSchema,
    presenceFrameSchema,
    ackFrameSchema,
    errorFrameSchema,
  ])
  .meta({ id: "ServerControlFrame" });

export const errorBodySchema = z
  .object({
    error: z.object({
      code: z.string().meta({ description: "snake_case machine code", example: "unauthorized" }),
      message: z.string().meta({ description: "human sentence" }),
    }),
  })
  .meta({ id: "ErrorBody", description: 'Every error: `{"error": {"code", "message"}}`.' });

export const wsTokenResponseSchema = z
  .object({
    token: z.string().meta({ description: "single-use ws-token for `GET /ws/chat?token=`" }),
    expires_in: z.number().int().positive().meta({ description: "seconds", example: 60 }),
    ws_url: z.string().meta({ example: "/ws/chat" }),
  })
  .meta({ id: "WsTokenResponse" });

export const devTokenRequestSchema = z
  .object({ user_id: id.max(Number.MAX_SAFE_INTEGER) })
  .meta({ id: "DevTokenRequest" });
export const devTokenResponseSchema = z
  .object({ access_token: z.string().meta({ description: "a JWT for `Authorization: Bearer`" }) })
  .meta({ id: "DevTokenResponse" });

export const unreadSchema = z
  .object({
    total: count,
    chats: z
      .record(z.string().regex(/^[1-9]\d*$/), z.number().int().positive())
      .meta({ description: "unread count by chat id; chats with nothing unread are left out" }),
  })
  .meta({ id: "Unread", example: { total: 3, chats: { "12": 2, "15": 1 } } });

export const messagesPageSchema = z
  .object({
    messages: z.array(messageSchema).meta({ description: "newest first" }),
    has_more: z.boolean().meta({ description: "older messages remain before the last one returned" }),
  })
  .meta({ id: "MessagesPage" });

export const chatsListSchema = z
  .object({ chats: z.array(chatSummarySchema).meta({ description: "newest activity first" }) })
  .meta({ id: "ChatsList" });

export const eventsPageSchema = z
  .object({
    events: z.array(chatEventSchema),
    last_event_id: eventCursor.meta({ description: "the cursor to pass as `after` next time" }),
    has_more: z.boolean().meta({
      description:
        "the page was cut short (by `limit`, or at about 256 KiB of events): ask again from `last_event_id` at once",
    }),
  })
  .meta({ id: "EventsPage" });

export const readResultSchema = z
  .object({ chat_id: id, message_id: id, unread_count: count })
  .meta({ id: "ReadResult" });

export const blocksListSchema = z
  .object({
    blocks: z
      .array(z.object({ user_id: id, created_at: isoTime }).meta({ id: "Block" }))
      .meta({ description: "the users you block, the most recently blocked first" }),
  })
  .meta({ id: "BlocksList" });

export const reportCreatedSchema = z
  .object({ id: id.meta({ description: "the report's id; the same again for a repeated report of one target" }) })
  .meta({ id: "ReportCreated" });

export const uploadTicketSchema = z
  .object({
    upload_id: z.string().meta({ description: "name it in a send's `attachments`" }),
    url: z.string().meta({
      description:
        "where to PUT the bytes: a presigned URL of the storage, or (development) a signed path on the gateway",
    }),
    method: z.literal("PUT"),
    headers: z
      .record(z.string(), z.string())
      .meta({ description: "send exactly these (`content-type` among them), and no credentials" }),
    expires_in: z.number().int().positive().meta({ description: "seconds the url stays valid" }),
  })
  .meta({ id: "UploadTicket", description: "A presigned upload of one photo (CONTRACT §11)." });

export const attachmentLinkSchema = z
  .object({
    url: z.string().meta({ description: "the bytes, with no credentials needed: absolute, or a path on the gateway" }),
    expires_in: z.number().int().positive().meta({ description: "seconds the url stays valid" }),
  })
  .meta({ id: "AttachmentLink", description: "A short-lived link to a photo or its thumbnail." });

export type WsTokenResponse = z.infer<typeof wsTokenResponseSchema>;
export type DevTokenRequest = z.infer<typeof devTokenRequestSchema>;
export type DevTokenResponse = z.infer<typeof devTokenResponseSchema>;
export type UnreadCounts = z.infer<typeof unreadSchema>;
export type MessagesPage = z.infer<typeof messagesPageSchema>;
export type ChatsList = z.infer<typeof chatsListSchema>;
export type EventsPage = z.infer<typeof eventsPageSchema>;
export type ReadResult = z.infer<typeof readResultSchema>;
export type BlocksList = z.infer<typeof blocksListSchema>;
export type ReportCreated = z.infer<typeof reportCreatedSchema>;

// Compile-time agreement with the hand-written types: exact equality, not mere assignability.
type Equal<A, B> = (<T>() => T extends A ? 1 : 2) extends <T>() => T extends B ? 1 : 2 ? true : false;
type Expect<T extends true> = T;

export type SchemaTypeChecks = [
  Expect<Equal<z.infer<typeof attachmentSchema>, Attachment>>,
  Expect<Equal<z.infer<typeof uploadTicketSchema>, UploadTicket>>,
  Expect<Equal<z.infer<typeof attachmentLinkSchema>, AttachmentLink>>,
  Expect<Equal<z.infer<typeof messageSchema>, Message>>,
  Expect<Equal<z.infer<typeof chatListingSchema>, ChatListing>>,
  Expect<Equal<z.infer<typeof chatPeerSchema>, ChatPeer>>,
  Expect<Equal<z.infer<typeof chatSchema>, Chat>>,
  Expect<Equal<z.infer<typeof chatSummarySchema>, ChatSummary>>,
  Expect<Equal<z.infer<typeof chatEventSchema>, ChatEvent>>,
  Expect<Equal<z.infer<typeof clientFrameSchema>, ClientFrame>>,
  Expect<Equal<z.infer<typeof serverControlFrameSchema>, ServerControlFrame>>,
  Expect<Equal<z.infer<typeof errorBodySchema>, ErrorBody>>,
  Expect<Equal<z.infer<typeof messagesPageSchema>, { messages: Message[]; has_more: boolean }>>,
  Expect<Equal<z.infer<typeof chatsListSchema>, { chats: ChatSummary[] }>>,
  Expect<Equal<z.infer<typeof eventsPageSchema>, { events: ChatEvent[]; last_event_id: number; has_more: boolean }>>,
];
