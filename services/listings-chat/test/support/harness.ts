import { randomBytes } from "node:crypto";
import type { ServerFrame } from "@listings-chat/shared";
import { pino } from "pino";
import WebSocket from "ws";
import type { DatabaseOptions } from "../../src/db/client.ts";
import type { ChatConfig } from "../../src/env.ts";
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

/** A WebSocket client for tests: every frame it receives, in order, and ways to wait for them. */
export class TestSocket {
  readonly frames: ServerFrame[] = [];
  readonly opened: Promise<void>;
  readonly closed: Promise<{ code: number; reason: string }>;
  private waiters: Array<() => void> = [];

  constructor(readonly ws: WebSocket) {
    ws.on("message", (data) => {
      this.frames.push(JSON.parse(data.toString()) as ServerFrame);
      for (const wake of this.waiters.splice(0)) wake();
    });
    this.opened = new Promise((resolve, reject) => {
      ws.once("open", () => resolve());
      ws.once("unexpected-response", (_req, res) => reject(new Error(`upgrade refused with ${res.statusCode}`)));
      ws.once("error", reject);
    });
    this.closed = new Promise((resolve) =>
      ws.once("close", (code, reason) => resolve({ code, reason: reason.toString() })),
    );
    ws.on("error", () => {});
  }

  send(frame: unknown): void {
    this.ws.send(typeof frame === "string" ? frame : JSON.stringify(frame));
  }

  /** Frames of one type, in arrival order. */
  ofType<T extends ServerFrame["type"]>(type: T): Extract<ServerFrame, { type: T }>[] {
    return this.frames.filter((f): f is Extract<ServerFrame, { type: T }> => f.type === type);
  }

  /** Event ids received, in arrival order. */
  eventIds(): number[] {
    return this.frames.flatMap((f) => ("event_id" in f ? [f.event_id] : []));
  }

  /** Resolves with the first frame, from `from` on, that matches; rejects after `timeoutMs`. */
  async waitFor<T extends ServerFrame>(
    match: (f: ServerFrame) => f is T,
    timeoutMs?: number,
    from?: number,
  ): Promise<T>;
  async waitFor(match: (f: ServerFrame) => boolean, timeoutMs?: number, from?: number): Promise<ServerFrame>;
  async waitFor(match: (f: ServerFrame) => boolean, timeoutMs = 5_000, from = 0): Promise<ServerFrame> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const found = this.frames.slice(from).find(match);
      if (found) return found;
      const left = deadline - Date.now();
      if (left <= 0)
        throw new Error(`no matching frame within ${timeoutMs} ms; got ${JSON.stringify(this.frames.slice(-5))}`);
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, left);
        this.waiters.push(() => {
          clearTimeout(timer);
          resolve();
        });
      });
    }
  }

  /** Waits until `done()` holds, re-checking on every frame. */
  async until(done: () => boolean, timeoutMs = 10_000): Promise<void> {
    await this.waitFor(() => done(), timeoutMs).catch((error) => {
      if (!done()) throw error;
    });
  }

  close(): Promise<{ code: number; reason: string }> {
    this.ws.close();
    return this.closed;
  }
}

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
