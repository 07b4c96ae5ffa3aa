import { randomBytes } from "node:crypto";
import { createServer } from "node:net";
import { FrameSocket as TestSocket } from "@listings-chat/shared/testing";
import { pino } from "pino";
import WebSocket from "ws";
import type { DatabaseOptions } from "../../src/db/client.ts";
import type { ChatConfig } from "../../src/env.ts";
import type { StorageConfig } from "../../src/media/open-storage.ts";
import type { ContentRulesOptions } from "../../src/safety/content-rules.ts";
import { type ChatServer, type ChatServerOverrides, startChatServer } from "../../src/server.ts";

export interface TestChat {
  server: ChatServer;
  baseUrl: string;
  wsUrl: string;
  internalToken: string;
  /** A REST call as `userId`, through the internal hop the gateway would use. */
  api(
    userId: number,
    method: string,
    path: string,
    body?: unknown,
  ): Promise<{ status: number; body: any; headers: Headers }>;
  stop(): Promise<void>;
}

export interface TestChatOptions {
  database: DatabaseOptions;
  redis?: { url: string; keyPrefix: string };
  internalToken?: string;
  instanceId?: string;
  overrides?: ChatServerOverrides;
  /** Content rules of the test's own; the shipped ones when not given. */
  contentRules?: ContentRulesOptions;
  /** LISTINGS_REQUIRED=1 (CONTRACT §8); off, as in development, when not given. */
  listingsRequired?: boolean;
  /** Photos (CONTRACT §11): off when not given. */
  storage?: StorageConfig;
  photos?: ChatConfig["photos"];
  /** Webhooks (CONTRACT §9): off (nothing recorded) when not given. */
  webhooks?: ChatConfig["webhooks"];
  /** MESSAGE_RETENTION_DAYS (CONTRACT §12): messages kept forever when not given. */
  messageRetentionDays?: number;
}

/** A real chat instance on 127.0.0.1, port 0. */
export async function startTestChat(options: TestChatOptions): Promise<TestChat> {
  const internalToken = options.internalToken ?? randomBytes(24).toString("hex");
  const config: ChatConfig = {
    production: false,
    port: 0,
    host: "127.0.0.1",
    database: options.database,
    redis: options.redis,
    internalToken,
    logLevel: "silent",
    instanceId: options.instanceId ?? `test-${randomBytes(3).toString("hex")}`,
    shutdownTimeoutMs: 2_000,
    contentRules: options.contentRules,
    listingsRequired: options.listingsRequired,
    storage: options.storage,
    photos: options.photos,
    messageRetentionDays: options.messageRetentionDays,
    webhooks: options.webhooks,
    warnings: [],
  };
  const server = await startChatServer(
    config,
    pino({ level: process.env.TEST_LOG_LEVEL ?? "silent" }),
    options.overrides,
  );
  const baseUrl = `http://127.0.0.1:${server.port}`;
  return {
    server,
    baseUrl,
    wsUrl: `ws://127.0.0.1:${server.port}/ws/chat`,
    internalToken,
    async api(userId, method, path, body) {
      const res = await fetch(`${baseUrl}${path}`, {
        method,
        headers: {
          "x-internal-token": internalToken,
          "x-user-id": String(userId),
          ...(body === undefined ? {} : { "content-type": "application/json" }),
        },
        body: body === undefined ? undefined : typeof body === "string" ? body : JSON.stringify(body),
      });
      const text = await res.text();
      return { status: res.status, body: text ? JSON.parse(text) : undefined, headers: res.headers };
    },
    stop: () => server.stop(),
  };
}

export { TestSocket };

/** Opens a socket as `userId` with the internal headers the gateway would set. */
export async function connect(chat: TestChat, userId: number, after?: number): Promise<TestSocket> {
  const url = after === undefined ? chat.wsUrl : `${chat.wsUrl}?after=${after}`;
  const socket = new TestSocket(
    new WebSocket(url, { headers: { "x-internal-token": chat.internalToken, "x-user-id": String(userId) } }),
  );
  await socket.opened;
  await socket.waitFor((f) => f.type === "connected");
  return socket;
}

/**
 * Opens the chat of (listing, buyer, seller) and has both write in it, so that they are contacts: presence
 * and typing pass only between two people who have both written in a chat they share (CONTRACT §10).
 */
export async function openAsContacts(chat: TestChat, buyer: number, seller: number, listingId = 1): Promise<number> {
  const opened = await chat.api(buyer, "POST", "/api/v1/chats", { listing_id: listingId, seller_id: seller });
  if (opened.status !== 201 && opened.status !== 200) throw new Error(`could not open the chat: ${opened.status}`);
  const chatId = opened.body.id as number;
  for (const [sender, content] of [
    [buyer, "hello"],
    [seller, "hi"],
  ] as const) {
    const sent = await chat.api(sender, "POST", `/api/v1/chats/${chatId}/messages`, { content });
    if (sent.status !== 201) throw new Error(`could not write in chat ${chatId}: ${sent.status}`);
  }
  return chatId;
}

/** A TCP port on 127.0.0.1 that was free a moment ago (listen on 0, read the number, close). */
export function freePort(): Promise<number> {
  return new Promise((resolve) => {
    const server = createServer().listen(0, "127.0.0.1", () => {
      const { port } = server.address() as { port: number };
      server.close(() => resolve(port));
    });
  });
}
