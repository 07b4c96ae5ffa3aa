import {
  createChatBody,
  ErrorCode,
  editMessageBody,
  Limits,
  markReadBody,
  parseUserId,
  sendMessageBody,
} from "@listings-chat/shared";
import { type Context, Hono } from "hono";
import type { ChatService } from "../chats/service.ts";
import type { Database } from "../db/client.ts";
import { ChatError, storing } from "../errors.ts";
import { lastEventId, readStreamPage } from "../events/log.ts";
import { createMediaRoutes } from "../media/routes.ts";
import type { MediaService } from "../media/uploads.ts";
import type { MessageService } from "../messages/service.ts";
import { createSafetyRoutes } from "../safety/routes.ts";
import type { SafetyService } from "../safety/service.ts";
import { flag, jsonBody, optionalInt, pageLimit, positiveInt } from "./validation.ts";

export type ApiEnv = { Variables: { userId: number } };

export interface ApiDeps {
  /** For `/events` (polling): the pool of page reads. */
  db: Database;
  chats: ChatService;
  messages: MessageService;
  /** Blocks and reports (CONTRACT §10). */
  safety: SafetyService;
  /** Photos (CONTRACT §11); undefined while STORAGE is not set: uploads get 503. */
  media?: MediaService;
}

/** The chat REST API of CONTRACT §4, for the user the gateway names in `X-User-Id`. */
export function createApiRoutes({ db, chats, messages, safety, media }: ApiDeps) {
  const api = new Hono<ApiEnv>();

  api.use(async (c, next) => {
    const userId = parseUserId(c.req.header("x-user-id"));
    if (userId === undefined) {
      throw new ChatError(ErrorCode.unauthorized, 401, "X-User-Id is missing or not a positive integer");
    }
    c.set("userId", userId);
    await next();
  });

  api.post("/chats", async (c) => {
    const body = await jsonBody(c, createChatBody);
    const { chat, created } = await chats.open(c.get("userId"), body.listing_id, body.seller_id);
    return c.json(chat, created ? 201 : 200);
  });

  api.get("/chats", async (c) => {
    const limit = pageLimit(c.req.query("limit"), 100, 500);
    const archived = flag("archived", c.req.query("archived"));
    return jsonText(c, await chats.listBody(c.get("userId"), limit, archived));
  });

  // Archive (CONTRACT §8): for the caller only; 204 whether it changed or already was so.
  api.post("/chats/:id/archive", async (c) => {
    await chats.archive(c.get("userId"), positiveInt("chat id", c.req.param("id")), true);
    return c.body(null, 204);
  });

  api.delete("/chats/:id/archive", async (c) => {
    await chats.archive(c.get("userId"), positiveInt("chat id", c.req.param("id")), false);
    return c.body(null, 204);
  });

  api.get("/chats/unread", async (c) => jsonText(c, await chats.unreadBody(c.get("userId"))));

  api.get("/chats/:id/messages", async (c) => {
    const chatId = positiveInt("chat id", c.req.param("id"));
    const before = optionalInt("before", c.req.query("before"), 1);
    const limit = pageLimit(c.req.query("limit"), Limits.messagesPageDefault, Limits.messagesPageMax);
    return c.json(await messages.page(c.get("userId"), chatId, before, limit));
  });

  api.post("/chats/:id/messages", async (c) => {
    const chatId = positiveInt("chat id", c.req.param("id"));
    const body = await jsonBody(c, sendMessageBody);
    const { message, created } = await messages.send(
      c.get("userId"),
      chatId,
      body.content,
      body.client_msg_id ?? null,
      body.attachments,
    );
    return c.json(message, created ? 201 : 200);
  });

  api.post("/chats/:id/read", async (c) => {
    const chatId = positiveInt("chat id", c.req.param("id"));
    const body = await jsonBody(c, markReadBody);
    return c.json(await chats.markRead(c.get("userId"), chatId, body.message_id));
  });

  api.patch("/messages/:id", async (c) => {
    const messageId = positiveInt("message id", c.req.param("id"));
    const body = await jsonBody(c, editMessageBody);
    return c.json(await messages.edit(c.get("userId"), messageId, body.content));
  });

  api.delete("/messages/:id", async (c) => {
    const messageId = positiveInt("message id", c.req.param("id"));
    return c.json(await messages.remove(c.get("userId"), messageId));
  });

  api.get("/events", async (c) => {
    const after = optionalInt("after", c.req.query("after"), 0);
    const limit = pageLimit(c.req.query("limit"), Limits.eventsPageDefault, Limits.eventsPageMax);
    const userId = c.get("userId");
    return c.json(
      await storing(async () => {
        // The end of the caller's stream is read first: an event committed after this read has a larger
        // id, so a cursor no further than it can never step over an event we did not return.
        const end = await lastEventId(db, userId);
        if (after === undefined) return { events: [], last_event_id: end, has_more: false };
        const { events, more } = await readStreamPage(db, userId, after, { maxEvents: limit });
        const last = events.at(-1)?.event_id;
        // A page cut short (by `limit`, or by bytes: STREAM_PAGE_BYTES): more may follow, so the cursor is the
        // last event returned. Otherwise the end of the stream, even when it is below `after`: a cursor from
        // beyond the stream (another numbering, a restored database) is told where the stream really ends
        // instead of being echoed back.
        const cursor = more && last !== undefined ? last : Math.max(end, last ?? 0);
        return { events, last_event_id: cursor, has_more: more };
      }),
    );
  });

  api.route("/", createSafetyRoutes(safety));
  if (media) {
    api.route("/", createMediaRoutes(media));
  } else {
    api.on(["POST", "GET"], ["/uploads", "/attachments/:id"], () => {
      throw new ChatError(ErrorCode.storageUnavailable, 503, "photos are off on this instance: STORAGE is not set");
    });
  }

  return api;
}

/** A JSON body that is already text (written by PostgreSQL): sent as it is, not parsed and encoded again. */
function jsonText(c: Context, body: string) {
  return c.body(body, 200, { "content-type": "application/json" });
}
