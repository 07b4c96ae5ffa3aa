/**
 * End-to-end helpers: a real listings-chat instance and a real gateway on 127.0.0.1, talked to over
 * real sockets (HTTP with undici, WebSocket with `ws`), exactly as a browser would reach them.
 */
import { randomBytes, randomUUID } from "node:crypto";
import type { IncomingHttpHeaders } from "node:http";
import { type AddressInfo, createServer, connect as netConnect } from "node:net";
import { FrameSocket as E2ESocket } from "@listings-chat/shared/testing";
import jwt from "jsonwebtoken";
import { pino } from "pino";
import { Pool } from "undici";
import WebSocket from "ws";
import type { DatabaseOptions } from "../../../listings-chat/src/db/client.ts";
import type { ChatConfig } from "../../../listings-chat/src/env.ts";
import { type ChatServer, type ChatServerOverrides, startChatServer } from "../../../listings-chat/src/server.ts";
import { WS_TOKEN_AUDIENCE, WS_TOKEN_ISSUER, WS_TOKEN_USE } from "../../src/auth/ws-token.ts";
import { type GatewayConfig, loadGatewayConfig } from "../../src/env.ts";
import { type Gateway, startGateway } from "../../src/server.ts";

const testLog = () => pino({ level: process.env.TEST_LOG_LEVEL ?? "silent" });

export const randomSecret = () => randomBytes(32).toString("hex");

/** A TCP port that was free a moment ago (listen on 0, read the number, close). */
export async function freePort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(0, "127.0.0.1", resolve);
  });
  const { port } = server.address() as AddressInfo;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

export const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** Runs `jobs` with at most `width` at a time. */
export async function inWaves<T>(jobs: Array<() => Promise<T>>, width: number): Promise<T[]> {
  const results: T[] = [];
  for (let i = 0; i < jobs.length; i += width)
    results.push(...(await Promise.all(jobs.slice(i, i + width).map((job) => job()))));
  return results;
}

/** Polls `check` until it returns true or `timeoutMs` passes; returns the last answer. */
export async function pollUntil(check: () => boolean | Promise<boolean>, timeoutMs = 10_000, everyMs = 25) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (await check()) return true;
    if (Date.now() >= deadline) return false;
    await sleep(everyMs);
  }
}

// ---------------------------------------------------------------------------------------------------
// HTTP

export interface HttpAnswer {
  status: number;
  headers: IncomingHttpHeaders;
  text: string;
  /** The parsed JSON body, or undefined when the body is not JSON. */
  body: any;
}

const parseJson = (text: string) => {
  try {
    return text ? JSON.parse(text) : undefined;
  } catch {
    return undefined;
  }
};

/**
 * A raw HTTP request with undici (no URL normalization of `path`, so spellings like `/%69nternal` or
 * `//internal` reach the server as written). A fresh connection closed afterwards, so that no
 * keep-alive connection lingers on the server (the leak test counts them).
 */
export async function http(
  base: string,
  method: string,
  path: string,
  options: { headers?: Record<string, string>; body?: unknown } = {},
): Promise<HttpAnswer> {
  const pool = new Pool(base, { connections: 1, pipelining: 0 });
  try {
    const { body, headers = {} } = options;
    const payload = body === undefined ? undefined : typeof body === "string" ? body : JSON.stringify(body);
    const answer = await pool.request({
      method: method as "GET",
      path,
      headers: { ...(payload === undefined ? {} : { "content-type": "application/json" }), ...headers },
      body: payload,
    });
    const text = await answer.body.text();
    return { status: answer.statusCode, headers: answer.headers as IncomingHttpHeaders, text, body: parseJson(text) };
  } finally {
    await pool.destroy();
  }
}

// ---------------------------------------------------------------------------------------------------
// The chat instance

export interface E2EChat {
  server: ChatServer;
  port: number;
  baseUrl: string;
  internalToken: string;
  /** `GET /internal/chat/ws/stats` on the chat port, with the internal token. */
  stats(): Promise<Record<string, any>>;
  stop(): Promise<void>;
}

export interface E2EChatOptions {
  database: DatabaseOptions;
  internalToken: string;
  /** 0 (the default) for any free port; a fixed one to restart an instance where the gateway expects it. */
  port?: number;
  shutdownTimeoutMs?: number;
  overrides?: ChatServerOverrides;
  /** CONTENT_RULES_FILE's rules (the shipped ones when not given). */
  contentRules?: ChatConfig["contentRules"];
  /** STORAGE (CONTRACT §11): photos are off when not given. */
  storage?: ChatConfig["storage"];
}

/** A real listings-chat instance on 127.0.0.1. */
export async function startE2EChat(options: E2EChatOptions): Promise<E2EChat> {
  const config: ChatConfig = {
    production: false,
    port: options.port ?? 0,
    host: "127.0.0.1",
    database: options.database,
    internalToken: options.internalToken,
    logLevel: "silent",
    instanceId: `e2e-${randomBytes(3).toString("hex")}`,
    shutdownTimeoutMs: options.shutdownTimeoutMs ?? 2_000,
    contentRules: options.contentRules,
    storage: options.storage,
    warnings: [],
  };
  const server = await startChatServer(config, testLog(), options.overrides);
  const baseUrl = `http://127.0.0.1:${server.port}`;
  let stopped: Promise<void> | undefined;
  return {
    server,
    port: server.port,
    baseUrl,
    internalToken: options.internalToken,
    async stats() {
      const res = await http(baseUrl, "GET", "/internal/chat/ws/stats", {
        headers: { "x-internal-token": options.internalToken },
      });
      if (res.status !== 200) throw new Error(`chat stats answered ${res.status}: ${res.text}`);
      return res.body;
    },
    stop() {
      stopped ??= server.stop();
      return stopped;
    },
  };
}

// ---------------------------------------------------------------------------------------------------
// The gateway

export interface E2EGateway {
  gateway: Gateway;
  config: GatewayConfig;
  baseUrl: string;
  wsUrl: string;
  /** An access token as the monolith would sign it (HS256 with the gateway's JWT secret). */
  accessToken(userId: number, claims?: Record<string, unknown>, options?: jwt.SignOptions): string;
  /** A ws-token signed by hand with the gateway's ws secret, claims as the gateway writes them unless overridden. */
  forgeWsToken(userId: number, overrides?: { secret?: string; payload?: Record<string, unknown> }): string;
  /** `POST /api/dev/token` through the gateway. */
  devToken(userId: number): Promise<string>;
  /** `POST /api/v2/ws-token` with `Authorization: Bearer <accessToken>`. */
  wsToken(accessToken: string): Promise<string>;
  /** A REST call through the gateway with the given access token. */
  api(
    accessToken: string | undefined,
    method: string,
    path: string,
    body?: unknown,
    headers?: Record<string, string>,
  ): Promise<HttpAnswer>;
  /** Gets a dev access token and a ws-token for `userId` and opens `/ws/chat` (expects success). */
  connectAs(userId: number, options?: { after?: number; headers?: Record<string, string> }): Promise<E2ESocket>;
  stop(): Promise<void>;
}

export interface E2EGatewayOptions {
  chatUpstreams: string[];
  internalToken: string;
  config?: Partial<GatewayConfig>;
}

/** The gateway's configuration from an environment that sets nothing: its defaults. */
const gatewayDefaults = loadGatewayConfig({ NODE_ENV: "development" });

/** A real gateway on 127.0.0.1, port 0, configured directly (no environment). */
export async function startE2EGateway(options: E2EGatewayOptions): Promise<E2EGateway> {
  const jwtSecret = randomSecret();
  const config: GatewayConfig = {
    production: false,
    port: 0,
    host: "127.0.0.1",
    chatUpstreams: options.chatUpstreams,
    internalToken: options.internalToken,
    accessTokens: { key: { kind: "secret", secret: jwtSecret }, maxAgeSeconds: 86_400 },
    wsTokens: { secret: randomSecret(), ttlSeconds: 60 },
    maxSocketsPerUser: 10,
    upstreamConnectTimeoutMs: 500,
    upstreamRequestTimeoutMs: 5_000,
    bodyTimeoutMs: 2_000,
    maxRequestsPerUser: 16,
    shutdownDrainMs: 500,
    devAuth: true,
    // Their defaults as the gateway reads them (they live once, in env.ts).
    devTokenTtlSeconds: gatewayDefaults.devTokenTtlSeconds,
    corsOrigins: gatewayDefaults.corsOrigins,
    basePath: gatewayDefaults.basePath,
    logLevel: "silent",
    warnings: [],
    ...options.config,
  };
  const gateway = await startGateway(config, testLog());
  const baseUrl = `http://127.0.0.1:${gateway.port}`;
  const wsUrl = `ws://127.0.0.1:${gateway.port}/ws/chat`;
  const accessKey = config.accessTokens.key;
  let stopped: Promise<void> | undefined;

  const self: E2EGateway = {
    gateway,
    config,
    baseUrl,
    wsUrl,
    accessToken(userId, claims = {}, signOptions = {}) {
      if (accessKey.kind !== "secret") throw new Error("e2e gateways use a JWT secret");
      return jwt.sign({ sub: String(userId), ...claims }, accessKey.secret, {
        algorithm: "HS256",
        expiresIn: 600,
        ...signOptions,
      });
    },
    forgeWsToken(userId, overrides = {}) {
      const now = Math.floor(Date.now() / 1000);
      return jwt.sign(
        {
          sub: String(userId),
          token_use: WS_TOKEN_USE,
          aud: WS_TOKEN_AUDIENCE,
          iss: WS_TOKEN_ISSUER,
          jti: randomUUID(),
          iat: now,
          exp: now + 60,
          ...overrides.payload,
        },
        overrides.secret ?? config.wsTokens.secret,
        { algorithm: "HS256" },
      );
    },
    async devToken(userId) {
      const res = await http(baseUrl, "POST", "/api/dev/token", { body: { user_id: userId } });
      if (res.status !== 200 || typeof res.body?.access_token !== "string") {
        throw new Error(`dev token answered ${res.status}: ${res.text}`);
      }
      return res.body.access_token;
    },
    async wsToken(accessToken) {
      const res = await http(baseUrl, "POST", "/api/v2/ws-token", {
        headers: { authorization: `Bearer ${accessToken}` },
      });
      if (res.status !== 200 || typeof res.body?.token !== "string") {
        throw new Error(`ws-token answered ${res.status}: ${res.text}`);
      }
      return res.body.token;
    },
    api(accessToken, method, path, body, headers = {}) {
      return http(baseUrl, method, path, {
        body,
        headers: { ...(accessToken ? { authorization: `Bearer ${accessToken}` } : {}), ...headers },
      });
    },
    async connectAs(userId, connectOptions = {}) {
      const token = await self.wsToken(await self.devToken(userId));
      const query = connectOptions.after === undefined ? "" : `&after=${connectOptions.after}`;
      const outcome = await tryUpgrade(`${wsUrl}?token=${encodeURIComponent(token)}${query}`, {
        headers: connectOptions.headers,
      });
      if (outcome.kind !== "open") throw new Error(`upgrade as ${userId} failed: ${describeOutcome(outcome)}`);
      await outcome.socket.waitFor((f) => f.type === "connected");
      return outcome.socket;
    },
    stop() {
      stopped ??= gateway.stop();
      return stopped;
    },
  };
  return self;
}

export interface E2EStack {
  chat: E2EChat;
  gw: E2EGateway;
  /** Stops the gateway, then the chat instance. */
  stop(): Promise<void>;
}

/** A chat instance (PGlite in memory) and a gateway in front of it, sharing a fresh internal token. */
export async function startE2EStack(
  gateway: Partial<GatewayConfig> = {},
  chatOptions: Pick<E2EChatOptions, "storage" | "overrides"> = {},
): Promise<E2EStack> {
  const internalToken = randomSecret();
  const chat = await startE2EChat({ database: { inMemory: true }, internalToken, ...chatOptions });
  try {
    const gw = await startE2EGateway({ chatUpstreams: [chat.baseUrl], internalToken, config: gateway });
    return {
      chat,
      gw,
      stop: async () => {
        await gw.stop();
        await chat.stop();
      },
    };
  } catch (error) {
    await chat.stop();
    throw error;
  }
}

// ---------------------------------------------------------------------------------------------------
// WebSocket

export { E2ESocket };

export type UpgradeOutcome =
  | { kind: "open"; socket: E2ESocket }
  | {
      kind: "refused";
      status: number;
      headers: IncomingHttpHeaders;
      text: string;
      body: any;
      /** Whether the client ever saw `open` (it must not, after a refusal). */
      opened: () => boolean;
    }
  | { kind: "error"; error: Error };

export function describeOutcome(outcome: UpgradeOutcome): string {
  if (outcome.kind === "open") return "opened";
  if (outcome.kind === "refused") return `refused with ${outcome.status}: ${outcome.text}`;
  return `error: ${outcome.error.message}`;
}

/**
 * Starts a WebSocket upgrade and reports how it ended: opened (with the socket, collecting frames),
 * refused with a plain HTTP answer (status, headers and body), or failed at the TCP level.
 */
export function tryUpgrade(url: string, options: { headers?: Record<string, string> } = {}): Promise<UpgradeOutcome> {
  const ws = new WebSocket(url, { headers: options.headers, perMessageDeflate: false });
  // Wrapped at once, so that no frame that follows the 101 in the same packet is missed.
  const socket = new E2ESocket(ws);
  let opened = false;
  return new Promise((resolve) => {
    ws.once("open", () => {
      opened = true;
      resolve({ kind: "open", socket });
    });
    ws.once("unexpected-response", (_req, res) => {
      const chunks: Buffer[] = [];
      res.on("data", (chunk: Buffer) => chunks.push(chunk));
      res.on("error", () => {});
      res.once("end", () => {
        const text = Buffer.concat(chunks).toString();
        resolve({
          kind: "refused",
          status: res.statusCode ?? 0,
          headers: res.headers,
          text,
          body: parseJson(text),
          opened: () => opened,
        });
        ws.terminate();
      });
    });
    ws.once("error", (error) => {
      if (!opened) resolve({ kind: "error", error });
    });
  });
}

// ---------------------------------------------------------------------------------------------------
// Raw TCP

export interface RawHttpAnswer {
  status: number;
  headers: Record<string, string>;
  body: any;
  text: string;
}

/**
 * A raw TCP connection to write an HTTP request piece by piece (to have a request in flight across
 * a gateway's stop()), and to read the one answer it gets.
 */
export async function rawConnection(port: number) {
  const socket = netConnect({ port, host: "127.0.0.1" });
  socket.on("error", () => {});
  await new Promise<void>((resolve, reject) => {
    socket.once("connect", () => resolve());
    socket.once("error", reject);
  });
  const chunks: Buffer[] = [];
  socket.on("data", (chunk: Buffer) => chunks.push(chunk));
  const ended = new Promise<void>((resolve) => socket.once("close", () => resolve()));
  return {
    socket,
    write: (text: string) => new Promise<void>((resolve) => socket.write(text, () => resolve())),
    /** The answer once the server closed the connection (refusals end with `Connection: close`). */
    async answer(timeoutMs = 5_000): Promise<RawHttpAnswer> {
      let timer: NodeJS.Timeout | undefined;
      await Promise.race([
        ended,
        new Promise<never>((_, reject) => {
          timer = setTimeout(() => reject(new Error(`no complete answer within ${timeoutMs} ms`)), timeoutMs);
        }),
      ]).finally(() => clearTimeout(timer));
      const raw = Buffer.concat(chunks).toString();
      const split = raw.indexOf("\r\n\r\n");
      const head = split === -1 ? raw : raw.slice(0, split);
      const text = split === -1 ? "" : raw.slice(split + 4);
      const [statusLine = "", ...lines] = head.split("\r\n");
      const headers: Record<string, string> = {};
      for (const line of lines) {
        const colon = line.indexOf(":");
        if (colon > 0) headers[line.slice(0, colon).trim().toLowerCase()] = line.slice(colon + 1).trim();
      }
      return { status: Number(statusLine.split(" ")[1] ?? 0), headers, text, body: parseJson(text) };
    },
  };
}

/** The request head of a WebSocket upgrade to `path`, without the final blank line. */
export function upgradeHead(path: string, headers: Record<string, string> = {}): string {
  const lines = [
    `GET ${path} HTTP/1.1`,
    "Host: 127.0.0.1",
    "Connection: Upgrade",
    "Upgrade: websocket",
    "Sec-WebSocket-Version: 13",
    `Sec-WebSocket-Key: ${randomBytes(16).toString("base64")}`,
    ...Object.entries(headers).map(([name, value]) => `${name}: ${value}`),
  ];
  return `${lines.join("\r\n")}\r\n`;
}
