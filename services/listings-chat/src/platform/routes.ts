import { clientMsgId, ErrorCode, listingStatuses, messageContent, storableText } from "@listings-chat/shared";
import { Hono } from "hono";
import { z } from "zod";
import { ChatError } from "../errors.ts";
import { jsonBody, optionalJsonBody, positiveInt } from "../http/validation.ts";
import type { PlatformService } from "./service.ts";

/** The longest listing title, in characters (code points): marketplaces cap theirs at 70–100; room to spare. */
export const LISTING_TITLE_MAX_CHARS = 200;
/** The longest `url` or `image_url`: what browsers and CDNs reliably carry. */
export const LISTING_URL_MAX_CHARS = 2048;

/** The longest display name, in characters (code points). */
export const DISPLAY_NAME_MAX_CHARS = 100;
/** The largest `data` of a system message, as JSON in UTF-8 (CONTRACT §8). */
export const SYSTEM_MESSAGE_DATA_MAX_BYTES = 4096;
/** The longest reason of a platform delete or a suspension: for the platform's moderators. */
export const REASON_MAX_CHARS = 1000;

const isHttpUrl = (value: string) => {
  try {
    const { protocol } = new URL(value);
    return protocol === "http:" || protocol === "https:";
  } catch {
    return false;
  }
};

const httpUrl = z
  .string()
  .max(LISTING_URL_MAX_CHARS, `must be at most ${LISTING_URL_MAX_CHARS} characters`)
  .refine(isHttpUrl, "must be an absolute http:// or https:// URL");

/** The body of `PUT /internal/chat/listings/:id` (CONTRACT §8). Unknown fields are ignored. */
export const putListingBody = z.object({
  seller_id: z.number().int().positive(),
  title: z
    .string()
    .refine((s) => s.trim().length > 0, "must not be empty")
    .refine(storableText, "must not contain NUL characters or unpaired surrogates")
    .refine((s) => [...s].length <= LISTING_TITLE_MAX_CHARS, `must be at most ${LISTING_TITLE_MAX_CHARS} characters`),
  // Minor units (cents) as a whole number, as the platform's payment side counts them: no float rounding.
  price_minor: z.number().int().nonnegative(),
  currency: z.string().regex(/^[A-Z]{3}$/, "must be an ISO 4217 code: three upper-case letters (EUR, USD)"),
  // A listing may have no photo: null or absent.
  image_url: httpUrl.nullish().transform((url) => url ?? null),
  url: httpUrl,
  status: z.enum(listingStatuses, { error: `must be one of ${listingStatuses.join(", ")}` }),
});

/** Every key and string of a JSON value can be stored as jsonb (no NUL, no half of a surrogate pair). */
function storableJson(value: unknown): boolean {
  if (typeof value === "string") return storableText(value);
  if (Array.isArray(value)) return value.every(storableJson);
  if (value !== null && typeof value === "object") {
    return Object.entries(value).every(([key, item]) => storableText(key) && storableJson(item));
  }
  return true;
}

const positiveId = z.number().int().positive();
const reason = z
  .string()
  .refine(storableText, "must not contain NUL characters or unpaired surrogates")
  .refine((s) => [...s].length <= REASON_MAX_CHARS, `must be at most ${REASON_MAX_CHARS} characters`)
  .nullish()
  .transform((text) => text ?? null);

/** `PUT /internal/chat/users/:id`: what chats show of the person; null (or absent) for none. */
export const putPersonBody = z.object({
  display_name: z
    .string()
    .refine((s) => s.trim().length > 0, "must not be empty (send null for no name)")
    .refine(storableText, "must not contain NUL characters or unpaired surrogates")
    .refine((s) => [...s].length <= DISPLAY_NAME_MAX_CHARS, `must be at most ${DISPLAY_NAME_MAX_CHARS} characters`)
    .nullish()
    .transform((name) => name ?? null),
  avatar_url: httpUrl.nullish().transform((url) => url ?? null),
});

/** `POST /internal/chat/chats`: the seller is the listing's. */
export const platformChatBody = z.object({ listing_id: positiveId, buyer_id: positiveId });

/** `POST /internal/chat/chats/:id/messages`: a system message (CONTRACT §8). */
export const systemMessageBody = z.object({
  content: messageContent,
  data: z
    .record(z.string(), z.unknown(), { error: "must be a JSON object (or null)" })
    .nullish()
    .transform((data) => data ?? null)
    .refine(
      (data) => data === null || Buffer.byteLength(JSON.stringify(data)) <= SYSTEM_MESSAGE_DATA_MAX_BYTES,
      `must be at most ${SYSTEM_MESSAGE_DATA_MAX_BYTES} bytes of JSON`,
    )
    // jsonb refuses them (a 503 that a retry never cures): said here, as for any text.
    .refine(
      (data) => data === null || storableJson(data),
      "must not contain NUL characters or unpaired surrogates, in keys or strings",
    ),
  client_msg_id: clientMsgId.nullish().transform((id) => id ?? null),
});

/** `DELETE /internal/chat/messages/:id`: the reason is the platform's (kept, never shown). */
export const platformDeleteBody = z.object({ reason });

/** `POST /internal/chat/users/:id/suspend`: until when (absent or null: until lifted), and why. */
export const suspendBody = z.object({
  until: z.iso
    .datetime({ offset: true, error: "must be an ISO-8601 time, e.g. 2026-12-31T23:59:59Z" })
    .nullish()
    .transform((until) => (until ? new Date(until) : null)),
  reason,
});

/** The platform's voice (CONTRACT §8): the monolith's /internal routes, behind the internal token. */
export function createPlatformRoutes(platform: PlatformService) {
  const routes = new Hono();

  // Upsert: 200 the listing whether it was created, changed or the same again (a retry is harmless).
  routes.put("/internal/chat/listings/:id", async (c) => {
    const id = positiveInt("listing id", c.req.param("id"));
    const body = await jsonBody(c, putListingBody);
    const outcome = await platform.putListing(id, body);
    if (outcome.status === "seller_mismatch") {
      throw new ChatError(
        ErrorCode.sellerMismatch,
        409,
        `listing ${id} already has chats with another seller than ${body.seller_id}: a listing keeps the seller its chats were opened with`,
      );
    }
    return c.json(outcome.listing, 200);
  });

  routes.put("/internal/chat/users/:id", async (c) => {
    const id = positiveInt("user id", c.req.param("id"));
    return c.json(await platform.putPerson(id, await jsonBody(c, putPersonBody)), 200);
  });

  routes.post("/internal/chat/chats", async (c) => {
    const body = await jsonBody(c, platformChatBody);
    const { chat, created } = await platform.openChat(body.listing_id, body.buyer_id);
    return c.json(chat, created ? 201 : 200);
  });

  routes.post("/internal/chat/chats/:id/messages", async (c) => {
    const chatId = positiveInt("chat id", c.req.param("id"));
    const body = await jsonBody(c, systemMessageBody);
    const { message, created } = await platform.postSystemMessage(chatId, body.content, body.data, body.client_msg_id);
    return c.json(message, created ? 201 : 200);
  });

  routes.delete("/internal/chat/messages/:id", async (c) => {
    const messageId = positiveInt("message id", c.req.param("id"));
    const body = await optionalJsonBody(c, platformDeleteBody);
    return c.json(await platform.deleteMessage(messageId, body.reason), 200);
  });

  routes.post("/internal/chat/users/:id/suspend", async (c) => {
    const id = positiveInt("user id", c.req.param("id"));
    const body = await optionalJsonBody(c, suspendBody);
    await platform.suspend(id, body.until, body.reason);
    return c.body(null, 204);
  });

  routes.delete("/internal/chat/users/:id/suspend", async (c) => {
    await platform.lift(positiveInt("user id", c.req.param("id")));
    return c.body(null, 204);
  });

  return routes;
}
