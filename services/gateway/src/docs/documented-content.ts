import { Limits, messageContent } from "@listings-chat/shared";
import { z } from "zod";

/**
 * `messageContent` validates with refinements, which JSON Schema cannot read off. The same validator, with the
 * equivalent keywords spelled out: at most 4000 code points (JSON Schema counts code points, as the refinement
 * does) and at least one character that is not white space (`\S` is exactly what `String.prototype.trim` does
 * not remove). Both documents (OpenAPI and AsyncAPI) describe message content with it.
 */
export const documentedContent = messageContent.meta({
  description: `1–${Limits.maxContentChars} characters (code points), not only white space`,
  minLength: 1,
  maxLength: Limits.maxContentChars,
  pattern: "\\S",
});

/** A photo send's text (CONTRACT §8, §11): a caption, which may be empty. */
export const documentedCaption = z.string().meta({
  description: `a caption of 0–${Limits.maxContentChars} characters (code points)`,
  maxLength: Limits.maxContentChars,
});

/** A send's photos (CONTRACT §11): upload ids of the sender's own uploads, at least one. */
export const documentedAttachments = z
  .array(z.string().min(1).max(64))
  .min(1)
  .max(Limits.attachmentsPerMessage)
  .meta({
    description:
      `upload ids (POST /api/v1/uploads), at most ${Limits.attachmentsPerMessage}: the message is then ` +
      '`kind: "image"`; each is checked, stripped of its metadata and thumbnailed before it is stored',
  });

/**
 * A send (REST body or `send_message` frame) as two documented alternatives, since JSON Schema cannot read the
 * services' rule "text, unless there are photos" off a refinement: a text send (`content` not blank, no photos)
 * or a photo send (`attachments`, one to ten; `content` a caption, maybe empty).
 */
export function documentedSend<T extends z.ZodObject>(fields: T, names: { text: string; photos: string }) {
  return z.union([
    fields
      .extend({ content: documentedContent, attachments: z.array(z.string()).max(0).optional() })
      .meta({ id: names.text, description: "A text message." }),
    fields
      .extend({ content: documentedCaption, attachments: documentedAttachments })
      .meta({ id: names.photos, description: 'A message with photos (CONTRACT §11): `kind: "image"`.' }),
  ]);
}
