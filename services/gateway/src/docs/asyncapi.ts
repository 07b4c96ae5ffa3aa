/**
 * The AsyncAPI 3 document of the WebSocket (CONTRACT §5): the frames the gateway's socket carries both ways,
 * generated from the zod schemas the services validate with and the OpenAPI document is built from
 * (`@listings-chat/shared`), so that neither document can drift from the code. Served at `GET /api/docs/websocket`.
 */
import {
  ackFrameSchema,
  chatCreatedEventSchema,
  chatUpdatedEventSchema,
  clientFrameSchema,
  connectedFrameSchema,
  errorFrameSchema,
  Limits,
  messageDeletedEventSchema,
  messageEditedEventSchema,
  messageReadEventSchema,
  newMessageEventSchema,
  pongFrameSchema,
  presenceFrameSchema,
  sendMessageFrameFields,
  typingFrameSchema,
  userBlockedEventSchema,
  userUnblockedEventSchema,
} from "@listings-chat/shared";
import { Hono } from "hono";
import { z } from "zod";
import gatewayPackage from "../../package.json" with { type: "json" };
import { WS_PATH } from "../proxy/ws-upgrade.ts";
import { documentedSend } from "./documented-content.ts";

export interface AsyncApiOptions {
  /** BASE_PATH: the prefix of the socket's path (the server's `pathname`); "" or absent: the root. */
  basePath?: string;
}

type ClientFrameType = z.infer<typeof clientFrameSchema>["type"];

/** A client frame's schema as the services validate it, by its `type`. */
function clientFrame(type: ClientFrameType) {
  const schema = clientFrameSchema.options.find((option) => option.shape.type.value === type);
  if (!schema) throw new Error(`clientFrameSchema has no "${type}" frame`);
  return schema;
}

/**
 * What the client sends (CONTRACT §5), each named by its key (its name among the components), the content rule
 * spelled out as keywords.
 */
const CLIENT_FRAMES = {
  PingFrame: clientFrame("ping").meta({ description: "Is the socket alive? A `pong` answers." }),
  TypingClientFrame: clientFrame("typing").meta({
    description: `I am typing, or stopped; a repeated "typing" at most every ${Limits.typingIntervalMs / 1000} s per chat.`,
  }),
  MarkReadFrame: clientFrame("mark_read").meta({ description: "I have read up to this message." }),
  SendMessageFrame: documentedSend(sendMessageFrameFields, { text: "SendTextFrame", photos: "SendPhotosFrame" }).meta({
    description:
      "Send a message: an `ack` with the stored message answers (or an `error` with the same `ref`); the " +
      "`client_msg_id` makes a retry (over the socket or REST) store it once.",
  }),
  ResumeFrame: clientFrame("resume").meta({
    description: `Replay the events after \`after\`, at most once per ${Limits.resumeIntervalMs / 1000} s.`,
  }),
} as const;

/** What the server sends: stored events (the same objects as `GET /api/v1/events`) and the socket's own frames. */
const SERVER_FRAMES = {
  NewMessageEvent: newMessageEventSchema,
  MessageEditedEvent: messageEditedEventSchema,
  MessageDeletedEvent: messageDeletedEventSchema,
  MessageReadEvent: messageReadEventSchema,
  ChatCreatedEvent: chatCreatedEventSchema,
  ChatUpdatedEvent: chatUpdatedEventSchema,
  UserBlockedEvent: userBlockedEventSchema,
  UserUnblockedEvent: userUnblockedEventSchema,
  ConnectedFrame: connectedFrameSchema,
  PongFrame: pongFrameSchema,
  TypingFrame: typingFrameSchema,
  PresenceFrame: presenceFrameSchema,
  AckFrame: ackFrameSchema,
  ErrorFrame: errorFrameSchema,
} as const;

type JsonSchema = Record<string, unknown>;

/** Every schema a frame refers to, as JSON Schema (draft-07, AsyncAPI's own), refs pointing into components. */
function componentSchemas(): Record<string, JsonSchema> {
  const registry = z.registry<{ id: string }>();
  for (const [id, schema] of Object.entries({ ...CLIENT_FRAMES, ...SERVER_FRAMES })) {
    registry.add(schema as z.ZodType, { id });
  }
  const { schemas } = z.toJSONSchema(registry, {
    target: "draft-7",
    uri: (id) => `#/components/schemas/${id}`,
    // Message, Chat and the rest keep the ids the OpenAPI document gives them: one name each, referred to.
    metadata: z.globalRegistry,
  }) as { schemas: Record<string, JsonSchema> };
  // Schemas that several frames share (Message, Chat …) come in one `__shared` entry's definitions: each gets an
  // entry of its own, under the name the OpenAPI document gives it too.
  const { __shared: shared, ...own } = schemas;
  const named: Record<string, JsonSchema> = { ...(shared?.definitions as Record<string, JsonSchema>), ...own };
  const text = JSON.stringify(named).replaceAll("#/components/schemas/__shared#/definitions/", "#/components/schemas/");
  const result = JSON.parse(text) as Record<string, JsonSchema>;
  for (const schema of Object.values(result)) delete schema.$schema;
  return result;
}

/** The document; built once per gateway. */
export function buildAsyncApiDocument(options: AsyncApiOptions = {}): JsonSchema {
  const basePath = options.basePath ?? "";
  const schemas = componentSchemas();
  const messages: Record<string, JsonSchema> = {};
  const describe = (id: string) => (schemas[id]?.description as string | undefined) ?? undefined;
  for (const id of [...Object.keys(SERVER_FRAMES), ...Object.keys(CLIENT_FRAMES)]) {
    messages[id] = {
      name: id,
      title: id.replace(/(?<=[a-z])(?=[A-Z])/g, " "),
      ...(describe(id) ? { summary: describe(id) } : {}),
      contentType: "application/json",
      payload: { $ref: `#/components/schemas/${id}` },
    };
  }
  const channelMessages = Object.fromEntries(
    Object.keys(messages).map((id) => [id, { $ref: `#/components/messages/${id}` }]),
  );
  const refs = (ids: string[]) => ids.map((id) => ({ $ref: `#/channels/chat/messages/${id}` }));
  return {
    asyncapi: "3.0.0",
    info: {
      title: "listings-chat WebSocket",
      version: gatewayPackage.version,
      description:
        "The frames of `GET /ws/chat` (CONTRACT §5): one JSON object per text frame, told apart by `type`. Get a " +
        "single-use ws-token from `POST /api/v2/ws-token` (the OpenAPI document at `/api/docs`), open the socket " +
        "with it, and keep the `event_id` of the last event handled: `after=` (or a `resume` frame) replays what " +
        "came after it. Events are the same objects, in the same order, as `GET /api/v1/events` returns.",
    },
    defaultContentType: "application/json",
    servers: {
      gateway: {
        host: "{host}",
        protocol: "wss",
        ...(basePath ? { pathname: basePath } : {}),
        description: "the gateway (ws:// on a development machine)",
        variables: { host: { default: "localhost:3000", description: "the gateway's host and port" } },
      },
    },
    channels: {
      chat: {
        address: WS_PATH,
        title: "The user's chat socket",
        description:
          "One per tab and user, on the gateway; piped to a chat instance. The server greets with `connected` " +
          "(after replaying the events after `after=`), pings every 25 s, and closes with 1001 when it goes away, " +
          "1008 for a policy breach, 1009 for a frame over 64 KiB, 1013 when the socket does not keep up, and " +
          "4003 when the platform suspended the user.",
        messages: channelMessages,
        bindings: {
          ws: {
            method: "GET",
            query: {
              type: "object",
              required: ["token"],
              properties: {
                token: { type: "string", description: "a ws-token from /api/v2/ws-token (single use, 60 s)" },
                after: { type: "integer", minimum: 0, description: "replay the events after this event_id first" },
              },
            },
            bindingVersion: "0.1.0",
          },
        },
      },
    },
    operations: {
      sendServerFrames: {
        action: "send",
        channel: { $ref: "#/channels/chat" },
        title: "What the server sends",
        messages: refs(Object.keys(SERVER_FRAMES)),
      },
      receiveClientFrames: {
        action: "receive",
        channel: { $ref: "#/channels/chat" },
        title: "What the client sends",
        messages: refs(Object.keys(CLIENT_FRAMES)),
      },
    },
    components: { schemas, messages },
  };
}

/** The ids of the frames the server sends, and the client, for tests and readers. */
export const SERVER_FRAME_IDS = Object.keys(SERVER_FRAMES);
export const CLIENT_FRAME_IDS = Object.keys(CLIENT_FRAMES);

/** `GET /api/docs/websocket` → the document as JSON; built once, here. */
export function createAsyncApiRoutes(options: AsyncApiOptions) {
  const document = buildAsyncApiDocument(options);
  return new Hono().get("/api/docs/websocket", (c) => c.json(document));
}
