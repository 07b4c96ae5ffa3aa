import { Limits, messageContent } from "@listings-chat/shared";

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
