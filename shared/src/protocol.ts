/**
 * The services' run-time checks of what clients send (CONTRACT §4, §5): zod schemas of the frames and bodies
 * whose TypeScript shapes `@listings-chat/client/protocol` publishes. `api-schemas.ts` keeps the two equal.
 */
import { Limits, reportReasons } from "@listings-chat/client/protocol";
import { z } from "zod";

export * from "@listings-chat/client/protocol";

const id = z.number().int().positive();
const eventCursor = z.number().int().nonnegative();

/**
 * Text PostgreSQL can store as it was sent: no NUL character, and no half of a surrogate pair (which
 * UTF-8 cannot encode; a driver would silently turn it into U+FFFD).
 */
const loneSurrogate = /[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/;
export const storableText = (s: string) => !s.includes("\u0000") && !loneSurrogate.test(s);

/** A message's text as stored: possibly empty (a photo's caption may be); see `messageContent`. */
const storedContent = z
  .string()
  .refine(storableText, "content must not contain NUL characters or unpaired surrogates")
  .refine(
    (s) => [...s].length <= Limits.maxContentChars,
    `content must be at most ${Limits.maxContentChars} characters`,
  );

export const messageContent = storedContent.refine((s) => s.trim().length > 0, "content must not be empty");

/** Upload ids of a send's photos (CONTRACT §11). */
const attachmentIds = z
  .array(z.string().min(1).max(64))
  .max(Limits.attachmentsPerMessage, `at most ${Limits.attachmentsPerMessage} attachments per message`);

/** Only a message with photos may have no text (CONTRACT §8). */
const textOrPhotos = (send: { content: string; attachments?: string[] | undefined }) =>
  send.content.trim().length > 0 || (send.attachments?.length ?? 0) > 0;
const textOrPhotosError = { message: "content must not be empty (unless attachments are given)", path: ["content"] };

export const clientMsgId = z
  .string()
  .min(1)
  .max(64)
  .refine(storableText, "client_msg_id must not contain NUL characters or unpaired surrogates");

/** `send_message`'s fields, before the rule that only a send with photos may have no text (for documents). */
export const sendMessageFrameFields = z.object({
  type: z.literal("send_message"),
  chat_id: id,
  content: storedContent,
  client_msg_id: clientMsgId,
  attachments: attachmentIds.optional(),
});

/** Inbound frames (client → server), validated at the socket's edge. */
export const clientFrameSchema = z.discriminatedUnion("type", [
  z.object({ type: z.literal("ping") }),
  z.object({ type: z.literal("typing"), chat_id: id, is_typing: z.boolean() }),
  z.object({ type: z.literal("mark_read"), chat_id: id, message_id: id }),
  sendMessageFrameFields.refine(textOrPhotos, textOrPhotosError),
  z.object({ type: z.literal("resume"), after: eventCursor }),
]);
export const clientFrameTypes = ["ping", "typing", "mark_read", "send_message", "resume"] as const;

/** REST bodies (CONTRACT §4). */
export const createChatBody = z.object({ listing_id: id, seller_id: id });
/** The send's fields, before the rule that only a send with photos may have no text (for documents). */
export const sendMessageFields = z.object({
  content: storedContent,
  client_msg_id: clientMsgId.optional(),
  attachments: attachmentIds.optional(),
});
export const sendMessageBody = sendMessageFields.refine(textOrPhotos, textOrPhotosError);

/** `POST /api/v1/uploads` (CONTRACT §11); the type and the size bound are checked by the media service. */
export const createUploadBody = z.object({ content_type: z.string(), size: z.number().int() });
export const editMessageBody = z.object({ content: messageContent });
export const markReadBody = z.object({ message_id: id });

/**
 * `POST /api/v1/reports` (CONTRACT §10): a reason, an optional note of at most `Limits.reportNoteChars`
 * characters, and exactly one target.
 */
export const reportBody = z
  .object({
    reason: z.enum(reportReasons),
    note: z
      .string()
      .refine(storableText, "note must not contain NUL characters or unpaired surrogates")
      .refine(
        (s) => [...s].length <= Limits.reportNoteChars,
        `note must be at most ${Limits.reportNoteChars} characters`,
      )
      .nullish(),
    message_id: id.optional(),
    chat_id: id.optional(),
    user_id: id.optional(),
  })
  .refine(
    (body) => [body.message_id, body.chat_id, body.user_id].filter((target) => target !== undefined).length === 1,
    "name exactly one of message_id, chat_id and user_id: what you report",
  );
export type ReportBody = z.infer<typeof reportBody>;
