/**
 * The OpenAPI 3.1 document of the gateway's PUBLIC HTTP API (CONTRACT §2–§4, §10, and §8's archive and the
 * shapes it adds; never §8's `/internal/chat/…` routes, which the gateway refuses), generated from the zod
 * schemas the code validates with (request bodies, `shared/src/protocol.ts`) and the response schemas of
 * `shared/src/api-schemas.ts`. Served as JSON at `GET /api/docs`.
 *
 * No `extendZodWithOpenApi`: names and extra keywords travel in zod's own `.meta()`, which the generator
 * reads, so the zod prototype of the process is left alone.
 */
import { OpenAPIRegistry, OpenApiGeneratorV31, type ResponseConfig } from "@asteasolutions/zod-to-openapi";
import {
  attachmentLinkSchema,
  blocksListSchema,
  chatSchema,
  chatsListSchema,
  createChatBody,
  devTokenRequestSchema,
  devTokenResponseSchema,
  editMessageBody,
  errorBodySchema,
  eventsPageSchema,
  Limits,
  markReadBody,
  messageSchema,
  messagesPageSchema,
  readResultSchema,
  reportCreatedSchema,
  reportReasons,
  sendMessageFields,
  unreadSchema,
  uploadContentTypes,
  uploadTicketSchema,
  wsTokenResponseSchema,
} from "@listings-chat/shared";
import { Hono } from "hono";
import { z } from "zod";
import gatewayPackage from "../../package.json" with { type: "json" };
import { documentedContent, documentedSend } from "./documented-content.ts";

export interface OpenApiOptions {
  /**
   * Whether the gateway serves `POST /api/dev/token` (DEV_AUTH=1 with an HS256 secret: the condition under
   * which `server.ts` passes `signDevToken`).
   */
  devAuth: boolean;
  /** BASE_PATH: the prefix of every path (the document's `servers`); "" or absent: the root. */
  basePath?: string;
}

/** Where the README describes the WebSocket frames (server → client and client → server). */
const WS_FRAMES_DOC =
  "the AsyncAPI 3 document at `GET /api/docs/websocket` (generated from the same schemas), and CONTRACT §5";

const createChatRequest = createChatBody.meta({ id: "CreateChatBody" });
const sendMessageRequest = documentedSend(sendMessageFields, { text: "SendTextBody", photos: "SendPhotosBody" }).meta({
  id: "SendMessageBody",
  description: "`client_msg_id` (1–64 characters) makes a retry safe.",
});
const editMessageRequest = editMessageBody.extend({ content: documentedContent }).meta({ id: "EditMessageBody" });
const markReadRequest = markReadBody.meta({ id: "MarkReadBody" });
/**
 * `reportBody` (shared/src/protocol.ts) checks its note and its single target with refinements; the same
 * rules as keywords: a note of at most `Limits.reportNoteChars` code points, and exactly one target (`oneOf`
 * of the three `required`: a body with two targets matches two of them and fails).
 */
const reportRequest = z
  .object({
    reason: z.enum(reportReasons),
    note: z
      .string()
      .max(Limits.reportNoteChars)
      .nullish()
      .meta({ description: `optional, at most ${Limits.reportNoteChars} characters (code points)` }),
    message_id: z.number().int().positive().optional().meta({ description: "a message of a chat you take part in" }),
    chat_id: z.number().int().positive().optional().meta({ description: "a chat you take part in" }),
    user_id: z.number().int().positive().optional().meta({ description: "a user you share a chat with" }),
  })
  .meta({
    id: "ReportBody",
    description: "Exactly one of `message_id`, `chat_id` and `user_id`: what you report.",
    oneOf: [{ required: ["message_id"] }, { required: ["chat_id"] }, { required: ["user_id"] }],
  });

const healthSchema = z.object({ status: z.literal("ok") }).meta({ id: "Health" });
const readySchema = z
  .object({
    status: z.literal("ready"),
    upstreams: z.object({ reachable: z.number().int().positive(), total: z.number().int().positive() }),
  })
  .meta({ id: "Ready" });

const positiveId = (description: string) => z.number().int().positive().meta({ description });
const idParams = (what: string) => z.object({ id: positiveId(`${what} id`) });
const pageLimit = (fallback: number, max: number) =>
  z
    .number()
    .int()
    .min(1)
    .max(max)
    .default(fallback)
    .meta({ description: `page size, default ${fallback}, at most ${max} (larger values are lowered to ${max})` });

const json = (schema: z.ZodType) => ({ "application/json": { schema } });
const error = (description: string): ResponseConfig => ({ description, content: json(errorBodySchema) });
const ok = (description: string, schema: z.ZodType): ResponseConfig => ({ description, content: json(schema) });

/** Answers every forwarded `/api/v1` route may give besides its own. */
const forwardedErrors: Record<string, ResponseConfig> = {
  401: error("no valid access token (code `unauthorized`)"),
  502: error("the chat instance failed or none is reachable (`upstream_failed`, `upstream_unavailable`)"),
  504: error("the chat instance did not answer in time (`upstream_timeout`)"),
};
const badRequest = error("validation failed (`validation_failed`, `bad_json`)");
const notParticipant = error("not found, or the caller is not a participant (`not_found`: the two are not told apart)");
const storageUnavailable = error("the message store is unavailable (`storage_unavailable`); retry shortly");
const contentRejected = error("a content rule with the action `reject` matched (`content_rejected`, naming the rule)");
/** CONTRACT §8: the platform's suspension refuses a user's sends, edits and chat opens (reads go on). */
const suspended = "the platform suspended you (`user_suspended`; reads go on)";
const erasing = "the platform is erasing your data, or has (`user_suspended`)";
const blockedOrSuspended = error(`either of the two users blocks the other (\`blocked\`), or ${suspended}`);

/** Either credential of CONTRACT §2 will do. */
const accessTokenSecurity: Record<string, string[]>[] = [{ bearerAuth: [] }, { cookieAuth: [] }];

export function buildOpenApiDocument(options: OpenApiOptions): object {
  const registry = new OpenAPIRegistry();

  registry.registerComponent("securitySchemes", "bearerAuth", {
    type: "http",
    scheme: "bearer",
    bearerFormat: "JWT",
    description: "The monolith's access token; `sub` is the user id.",
  });
  registry.registerComponent("securitySchemes", "cookieAuth", {
    type: "apiKey",
    in: "cookie",
    name: "access_token",
    description: "The same access token, in the cookie `access_token`.",
  });

  for (const method of ["post", "get"] as const) {
    registry.registerPath({
      method,
      operationId: method === "post" ? "createWsToken" : "getWsToken",
      path: "/api/v2/ws-token",
      tags: ["websocket"],
      summary: "A short-lived, single-use ws-token for GET /ws/chat",
      security: accessTokenSecurity,
      responses: {
        200: {
          description: "the ws-token",
          headers: z.object({ "Cache-Control": z.literal("no-store") }),
          content: json(wsTokenResponseSchema),
        },
        401: error("no valid access token (code `unauthorized`)"),
      },
    });
  }

  registry.registerPath({
    method: "get",
    path: "/ws/chat",
    operationId: "openWebSocket",
    tags: ["websocket"],
    summary: "WebSocket upgrade: a two-way pipe to a chat instance",
    description:
      "Send `Connection: Upgrade` and `Upgrade: websocket`. JSON text frames follow the 101; their types and " +
      `fields are in ${WS_FRAMES_DOC}. Refusals are plain HTTP answers before any upgrade.`,
    security: [],
    request: {
      query: z.object({
        token: z.string().min(1).meta({ description: "a ws-token from /api/v2/ws-token (single use)" }),
        after: z
          .number()
          .int()
          .nonnegative()
          .optional()
          .meta({ description: "replay the events after this event_id, then go live" }),
      }),
    },
    responses: {
      101: { description: "Switching Protocols: the WebSocket is open" },
      400: error("`after` is not a non-negative integer (`validation_failed`)"),
      401: error("missing, bad, expired or already used ws-token (an access token is not a ws-token)"),
      429: error("too many open connections for this user (`rate_limited`)"),
      503: {
        description:
          "no chat instance reachable (`upstream_unavailable`), every instance busy opening other connections " +
          "(`upstream_busy`: retry after `Retry-After`, the ws-token is still usable), the gateway is shutting " +
          "down (`shutting_down`), or the ws-token could not be checked (`token_store_unavailable`)",
        headers: z.object({ "Retry-After": z.number().int().positive().optional().meta({ description: "seconds" }) }),
        content: json(errorBodySchema),
      },
    },
  });

  registry.registerPath({
    method: "post",
    path: "/api/v1/chats",
    operationId: "openChat",
    tags: ["chats"],
    summary: "Open the chat of (listing, buyer = caller, seller), or get the existing one",
    security: accessTokenSecurity,
    request: { body: { required: true, content: json(createChatRequest) } },
    responses: {
      200: ok("the existing chat", chatSchema),
      201: ok("a new chat", chatSchema),
      400: error("validation failed, or chatting with oneself (`self_chat`)"),
      403: blockedOrSuspended,
      404: error(
        "the listing is sold by another seller, or (LISTINGS_REQUIRED=1) the platform never registered it (`listing_not_found`)",
      ),
      409: error("the listing was removed: no new chats on it (`listing_closed`)"),
      ...forwardedErrors,
      503: storageUnavailable,
    },
  });

  registry.registerPath({
    method: "get",
    path: "/api/v1/chats",
    operationId: "listChats",
    tags: ["chats"],
    summary: "My chats, newest activity first, each with last_message and unread_count",
    description:
      "Each chat has `listing` (null while the platform has not registered it), `peer` (the other participant) " +
      "and `archived`. Archived chats are left out unless `archived=1`, which lists only them.",
    security: accessTokenSecurity,
    request: {
      query: z.object({
        limit: pageLimit(100, 500),
        archived: z
          .enum(["0", "1", "false", "true"])
          .optional()
          .meta({ description: "`1` (or `true`): only the chats I archived; absent, `0` or `false`: the others" }),
      }),
    },
    responses: {
      200: ok("my chats", chatsListSchema),
      400: badRequest,
      ...forwardedErrors,
      503: storageUnavailable,
    },
  });

  registry.registerPath({
    method: "get",
    path: "/api/v1/chats/unread",
    operationId: "getUnreadCounts",
    tags: ["chats"],
    summary: "Unread counts: the header badge",
    security: accessTokenSecurity,
    responses: {
      200: ok("the total and the count of each chat with something unread", unreadSchema),
      ...forwardedErrors,
      503: storageUnavailable,
    },
  });

  registry.registerPath({
    method: "get",
    path: "/api/v1/chats/{id}/messages",
    operationId: "listMessages",
    tags: ["messages"],
    summary: "A page of a chat's messages, newest first",
    security: accessTokenSecurity,
    request: {
      params: idParams("chat"),
      query: z.object({
        before: z.number().int().positive().optional().meta({ description: "only messages older than this id" }),
        limit: pageLimit(Limits.messagesPageDefault, Limits.messagesPageMax),
      }),
    },
    responses: {
      200: ok("the page", messagesPageSchema),
      400: badRequest,
      404: notParticipant,
      ...forwardedErrors,
      503: storageUnavailable,
    },
  });

  registry.registerPath({
    method: "post",
    path: "/api/v1/chats/{id}/messages",
    operationId: "sendMessage",
    tags: ["messages"],
    summary: "Send a message",
    description:
      "Stored, then delivered as `new_message` to every participant's sockets (it brings the chat back from " +
      "the other participant's archive). Sends are limited to " +
      `${Limits.sendsPerMinute} a minute per user, REST and WebSocket together. A user's message has \`kind: "text"\`; ` +
      '`kind: "system"` (`sender_id: null`, with `data`) comes from the platform only. With `attachments` (photos, ' +
      'CONTRACT §11) the message is `kind: "image"`: each upload is checked by its bytes, stripped of its metadata ' +
      "(EXIF, GPS, XMP; orientation applied first) and thumbnailed before the message is stored.",
    security: accessTokenSecurity,
    request: { params: idParams("chat"), body: { required: true, content: json(sendMessageRequest) } },
    responses: {
      200: ok("a repeated client_msg_id of the same sender: the same message again", messageSchema),
      201: ok("the stored message", messageSchema),
      400: error(
        `empty, only white space, or over ${Limits.maxContentChars} characters; or another bad field ` +
          "(`validation_failed`, `bad_json`)",
      ),
      403: blockedOrSuspended,
      404: notParticipant,
      409: error(
        "client_msg_id already used in another chat (`conflict`), or the chat's listing was removed (`listing_closed`)",
      ),
      422: error(
        "a content rule rejected the text (`content_rejected`, naming the rule), or a photo is not the sender's, " +
          "not complete, already sent, expired, or not the image it claims (`attachment_invalid`, naming the photo)",
      ),
      429: {
        description: "too many messages (`rate_limited`)",
        headers: z.object({ "Retry-After": z.number().int().positive().meta({ description: "seconds" }) }),
        content: json(errorBodySchema),
      },
      ...forwardedErrors,
      503: storageUnavailable,
    },
  });

  registry.registerPath({
    method: "post",
    path: "/api/v1/chats/{id}/read",
    operationId: "markRead",
    tags: ["chats"],
    summary: "Mark everything up to a message read for the caller (emits message_read)",
    security: accessTokenSecurity,
    request: { params: idParams("chat"), body: { required: true, content: json(markReadRequest) } },
    responses: {
      200: ok("the chat's unread count after the change", readResultSchema),
      400: badRequest,
      404: error("not a participant, or the message is not in this chat"),
      ...forwardedErrors,
      503: storageUnavailable,
    },
  });

  for (const [method, summary, description] of [
    [
      "post",
      "Archive a chat (for me only)",
      "Hides the chat from my `GET /api/v1/chats` (`archived=1` lists it) and from no one else's. A new " +
        "message in it from anyone but me (the other participant, or the platform) brings it back: that " +
        "`new_message` is the signal, no `chat_updated` follows. My own devices hear `chat_updated` with " +
        "`archived: true`. Archiving an archived chat changes nothing.",
    ],
    [
      "delete",
      "Restore an archived chat",
      "My own devices hear `chat_updated` with `archived: false`. Restoring a chat that is not archived changes nothing.",
    ],
  ] as const) {
    registry.registerPath({
      method,
      path: "/api/v1/chats/{id}/archive",
      operationId: method === "post" ? "archiveChat" : "unarchiveChat",
      tags: ["chats"],
      summary,
      description,
      security: accessTokenSecurity,
      request: { params: idParams("chat") },
      responses: {
        204: { description: "done (or nothing to do)" },
        400: badRequest,
        404: notParticipant,
        ...forwardedErrors,
        503: storageUnavailable,
      },
    });
  }

  registry.registerPath({
    method: "patch",
    path: "/api/v1/messages/{id}",
    operationId: "editMessage",
    tags: ["messages"],
    summary: "Edit a message (sender only; emits message_edited)",
    security: accessTokenSecurity,
    request: { params: idParams("message"), body: { required: true, content: json(editMessageRequest) } },
    responses: {
      200: ok("the edited message", messageSchema),
      400: badRequest,
      403: error(
        "the other participant's message or a system message (`forbidden`), either participant blocks the other " +
          `(\`blocked\`), or ${suspended}`,
      ),
      404: notParticipant,
      409: error("the message is deleted (`conflict`)"),
      422: contentRejected,
      ...forwardedErrors,
      503: storageUnavailable,
    },
  });

  registry.registerPath({
    method: "delete",
    path: "/api/v1/messages/{id}",
    operationId: "deleteMessage",
    tags: ["messages"],
    summary: "Delete a message (sender only; soft delete, emits message_deleted)",
    security: accessTokenSecurity,
    request: { params: idParams("message") },
    responses: {
      200: ok("the deleted message (empty content); deleting twice answers it again", messageSchema),
      400: badRequest,
      403: error("the other participant's message or a system message (`forbidden`)"),
      404: notParticipant,
      ...forwardedErrors,
      503: storageUnavailable,
    },
  });

  registry.registerPath({
    method: "get",
    path: "/api/v1/events",
    operationId: "listEvents",
    tags: ["events"],
    summary: "The polling fallback: the same events, in the same order, as the WebSocket delivers",
    description: "Without `after`: no events and the current `last_event_id`.",
    security: accessTokenSecurity,
    request: {
      query: z.object({
        after: z.number().int().nonnegative().optional().meta({ description: "the last event_id you have" }),
        limit: pageLimit(Limits.eventsPageDefault, Limits.eventsPageMax),
      }),
    },
    responses: {
      200: ok("the events after `after`, and the cursor for the next call", eventsPageSchema),
      400: badRequest,
      ...forwardedErrors,
      503: storageUnavailable,
    },
  });

  for (const [method, summary, description] of [
    [
      "post",
      "Block a user",
      "While either of two users blocks the other, neither can send to the other, edit a message in their " +
        "chats or open a chat with the other (403 `blocked`), nor see the other's typing and presence; their chats " +
        "stay readable. The blocker's own devices hear `user_blocked`; the blocked user is told nothing until they " +
        "send. Blocking a user one blocks already changes nothing.",
    ],
    ["delete", "Unblock a user", "The blocker's own devices hear `user_unblocked`. Unblocking twice changes nothing."],
  ] as const) {
    registry.registerPath({
      method,
      path: "/api/v1/users/{id}/block",
      operationId: method === "post" ? "blockUser" : "unblockUser",
      tags: ["safety"],
      summary,
      description,
      security: accessTokenSecurity,
      request: { params: idParams("user") },
      responses: {
        204: { description: "done (or nothing to do)" },
        400: error("a bad id, or yourself (`validation_failed`)"),
        ...(method === "post"
          ? {
              403: error(erasing),
              409: error("you block too many users already: unblock one first (`conflict`)"),
            }
          : {}),
        ...forwardedErrors,
        503: storageUnavailable,
      },
    });
  }

  registry.registerPath({
    method: "get",
    path: "/api/v1/blocks",
    operationId: "listBlocks",
    tags: ["safety"],
    summary: "Whom I block",
    security: accessTokenSecurity,
    responses: {
      200: ok("the users I block", blocksListSchema),
      ...forwardedErrors,
      503: storageUnavailable,
    },
  });

  registry.registerPath({
    method: "post",
    path: "/api/v1/reports",
    operationId: "report",
    tags: ["safety"],
    summary: "Report a message, a chat or a user to the platform",
    description:
      "The report keeps the reported message as it was when reported. Reports are limited per user per hour; " +
      "a repeated report of the same target answers 200 and does not count.",
    security: accessTokenSecurity,
    request: { body: { required: true, content: json(reportRequest) } },
    responses: {
      200: ok("you reported this target before: that report", reportCreatedSchema),
      201: ok("the new report", reportCreatedSchema),
      400: error("validation failed, or your own message or yourself (`validation_failed`, `bad_json`)"),
      403: error(erasing),
      404: error("a message or chat you take no part in, or a user who shares no chat with you"),
      429: {
        description: "too many reports (`rate_limited`)",
        headers: z.object({ "Retry-After": z.number().int().positive().meta({ description: "seconds" }) }),
        content: json(errorBodySchema),
      },
      ...forwardedErrors,
      503: storageUnavailable,
    },
  });

  registry.registerPath({
    method: "post",
    path: "/api/v1/uploads",
    operationId: "createUpload",
    tags: ["photos"],
    summary: "A presigned upload of one photo",
    description:
      "PUT the bytes to `url` with exactly `headers` and no credentials: straight to the storage, which refuses " +
      "another type or another size (both are signed). Then send a message naming `upload_id` in `attachments`. " +
      `Limited to ${Limits.uploadsPerHour} an hour per user. An upload not sent within 24 hours is deleted.`,
    security: accessTokenSecurity,
    request: {
      body: {
        required: true,
        content: json(
          z
            .object({
              content_type: z.enum(uploadContentTypes),
              size: z
                .number()
                .int()
                .min(0)
                .max(Limits.uploadMaxBytes)
                .meta({
                  description: `bytes, at most UPLOAD_MAX_BYTES (${Limits.uploadMaxBytes} by default)`,
                }),
            })
            .meta({ id: "CreateUploadBody" }),
        ),
      },
    },
    responses: {
      201: ok("where to send the bytes", uploadTicketSchema),
      400: error("another type, or a size over UPLOAD_MAX_BYTES (`validation_failed`, `bad_json`)"),
      403: error(suspended),
      429: {
        description: "too many uploads (`rate_limited`)",
        headers: z.object({ "Retry-After": z.number().int().positive().meta({ description: "seconds" }) }),
        content: json(errorBodySchema),
      },
      ...forwardedErrors,
      503: error("the message store or the photo storage is unavailable, or photos are off (`storage_unavailable`)"),
    },
  });

  registry.registerPath({
    method: "get",
    path: "/api/v1/attachments/{id}",
    operationId: "getAttachment",
    tags: ["photos"],
    summary: "A photo, or its thumbnail: 302 to a short-lived link",
    description:
      "For the chat's participants. The link needs no credentials (an `<img>` can follow the 302). With " +
      "`Accept: application/json` the link comes as JSON instead, for a page that sets an `<img>`'s `src`.",
    security: accessTokenSecurity,
    request: {
      params: z.object({ id: z.string().meta({ description: "the attachment's id" }) }),
      query: z.object({
        size: z.enum(["thumb"]).optional().meta({ description: "`thumb`: the thumbnail (at most 320 px)" }),
      }),
    },
    responses: {
      200: ok("with `Accept: application/json`: the link", attachmentLinkSchema),
      302: {
        description: "to the link",
        headers: z.object({ Location: z.string().meta({ description: "the short-lived link" }) }),
      },
      404: error("no such photo, its message was deleted, or the caller is not a participant (`not_found`)"),
      ...forwardedErrors,
      503: storageUnavailable,
    },
  });

  registry.registerPath({
    method: "get",
    path: "/health",
    operationId: "health",
    tags: ["ops"],
    summary: "Liveness",
    security: [],
    responses: { 200: ok("the process is alive", healthSchema) },
  });

  registry.registerPath({
    method: "get",
    path: "/ready",
    operationId: "ready",
    tags: ["ops"],
    summary: "Readiness: at least one chat instance answers",
    security: [],
    responses: {
      200: ok("ready", readySchema),
      503: error("no chat instance reachable, or shutting down"),
    },
  });

  registry.registerPath({
    method: "get",
    path: "/api/docs",
    operationId: "getOpenApiDocument",
    tags: ["ops"],
    summary: "This document (OpenAPI 3.1, JSON)",
    security: [],
    responses: { 200: { description: "the OpenAPI document", content: { "application/json": { schema: {} } } } },
  });

  if (options.devAuth) {
    registry.registerPath({
      method: "post",
      path: "/api/dev/token",
      operationId: "createDevToken",
      tags: ["development"],
      summary: "An access token for any user, without the monolith (only with DEV_AUTH=1)",
      security: [],
      request: { body: { required: true, content: json(devTokenRequestSchema) } },
      responses: {
        200: {
          description: "the access token",
          headers: z.object({ "Cache-Control": z.literal("no-store") }),
          content: json(devTokenResponseSchema),
        },
        400: error('not {"user_id": <positive integer>} (`validation_failed`)'),
      },
    });
  }

  const document = new OpenApiGeneratorV31(registry.definitions).generateDocument({
    openapi: "3.1.0",
    // Relative to where the document is read: the gateway's own origin, under BASE_PATH when it is set.
    servers: [{ url: options.basePath || "/", description: "this gateway" }],
    info: {
      title: "listings-chat gateway",
      version: gatewayPackage.version,
      description:
        "The public HTTP API of the gateway (CONTRACT §2–§4, §10). `/api/v1` is forwarded to a chat instance once " +
        'the access token is verified. Every error has the body `{"error": {"code", "message"}}`. ' +
        "`/internal/…` always answers 404: the platform's internal API (CONTRACT §8: listings, people, " +
        "platform-opened chats, system messages, platform deletes, suspensions) is on the chat port only, " +
        "behind `X-Internal-Token`, and is not part of this document (README, “The platform's voice”). " +
        `WebSocket frames: ${WS_FRAMES_DOC}.`,
    },
    tags: [
      { name: "websocket", description: "ws-tokens and the upgrade" },
      { name: "chats" },
      { name: "messages" },
      { name: "events" },
      { name: "safety", description: "blocks and reports (CONTRACT §10)" },
      { name: "ops" },
      ...(options.devAuth ? [{ name: "development", description: "only with DEV_AUTH=1" }] : []),
    ],
  });
  addGatewayAnswers(document as unknown as Parameters<typeof addGatewayAnswers>[0]);
  return document;
}

type Operation = { security?: unknown[]; requestBody?: unknown; responses: Record<string, ResponseObjectLike> };
type ResponseObjectLike = { description: string; headers?: Record<string, unknown>; content?: unknown };

const errorContent = { "application/json": { schema: { $ref: "#/components/schemas/ErrorBody" } } };
const retryAfter = { "Retry-After": { schema: { type: "integer", minimum: 1 }, description: "seconds" } };

/**
 * The answers the gateway itself gives on its way to an operation, added to every operation they apply to (a
 * code the operation documents already gets both sentences): 503 while the monolith's key set cannot be read,
 * for every authenticated operation; 403 for a cookie-authenticated change that is not from this site; and for
 * the forwarded API, 429 past MAX_REQUESTS_PER_USER in flight, and for a body, 413 and 408.
 */
function addGatewayAnswers(document: { paths?: Record<string, Record<string, Operation>> }): void {
  const add = (operation: Operation, status: string, answer: ResponseObjectLike) => {
    const own = operation.responses[status];
    operation.responses[status] = own
      ? {
          ...own,
          description: `${own.description}; or ${answer.description}`,
          headers: { ...answer.headers, ...own.headers },
        }
      : { ...answer, content: errorContent };
  };
  for (const [path, item] of Object.entries(document.paths ?? {})) {
    for (const [method, operation] of Object.entries(item)) {
      if (!operation.security?.length) continue;
      add(operation, "503", {
        description:
          "the monolith's key set (JWT_JWKS_URL) cannot be read (`key_set_unavailable`): retry after `Retry-After`",
        headers: retryAfter,
      });
      if (method !== "get") {
        add(operation, "403", {
          description:
            "authenticated by the `access_token` cookie, but not from this site, or a body that is not JSON (`forbidden`): send Authorization: Bearer",
        });
      }
      if (!path.startsWith("/api/v1/")) continue;
      add(operation, "429", {
        description:
          "too many requests of this user in flight at this gateway (`rate_limited`): retry after `Retry-After`",
        headers: retryAfter,
      });
      if (operation.requestBody) {
        add(operation, "413", {
          description: `a body over ${Limits.maxRequestBodyBytes} bytes (\`payload_too_large\`)`,
        });
        add(operation, "408", { description: "the body did not arrive within BODY_TIMEOUT_MS (`request_timeout`)" });
      }
    }
  }
}

/**
 * `GET /api/docs` → the document as JSON; built once, here. Pass it to the app as `extraRoutes`
 * (`startGateway(config, log, createDocsRoutes(...))`), or mount it with `app.route("/", createDocsRoutes(...))`.
 */
export function createDocsRoutes(options: OpenApiOptions) {
  const document = buildOpenApiDocument(options);
  return new Hono().get("/api/docs", (c) => c.json(document));
}
