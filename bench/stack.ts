/**
 * What `npm run bench` measures, started once: listings-chat (production mode, PostgreSQL of DATABASE_URL in
 * a fresh database, Redis of REDIS_URL), the gateway in front of it, and Debian's nginx (one worker) in front
 * of the same instance as the baseline; and the three ways a client gets a socket to the instance:
 * - `direct`: to the instance itself, with the internal hop's headers (what the gateway sends);
 * - `gateway`: as a browser does: an access token, a ws-token (on keep-alive connections), the upgrade;
 * - `nginx`: the direct handshake, through nginx.
 * Sockets are raw (raw-client.ts), so that the load generator, which shares the cores, spends little.
 */
import { createSecretKey, type KeyObject } from "node:crypto";
import type { Socket } from "node:net";
import jwt from "jsonwebtoken";
import type { Attempt } from "./connect-all.ts";
import { collectGarbage, inspectorEnv, type MemoryUsage } from "./inspector.ts";
import { type Nginx, startNginx } from "./nginx.ts";
import { type RawAnswer, RawHttpPool, type RawUpgrade, rawUpgrade } from "./raw-client.ts";
import {
  freePort,
  jwtAudience,
  serviceCpuSeconds,
  serviceRssKiB,
  startChat,
  startGateway,
  stopChats,
  token,
} from "./support.ts";

export type PathName = "direct" | "gateway" | "nginx";
export const PATHS: readonly PathName[] = ["direct", "gateway", "nginx"];

const jwtSecret = "bench-suite-access-token-secret-0123456789abcdef";
const wsTokenSecret = "bench-suite-ws-token-secret-fedcba9876543210";
const connectTimeoutMs = 10_000;

export interface Service {
  port: number;
  pid: number;
  cpuSeconds(): number;
  rssKiB(): number;
}

export interface Stack {
  chat: Service;
  gateway: Service;
  nginx: Nginx;
  /** The monolith's access token of `userId`, signed beforehand as a browser holds it. */
  accessToken(userId: number): string;
  /** Fetches a ws-token of `userId` from the gateway and drops it; resolves to the answer's status. */
  wsToken(userId: number): Promise<number>;
  /**
   * One attempt to open a socket of `userId` by `path`, until its `connected` greeting; `onText` hears the
   * frames after it. Through the gateway it fetches a ws-token first, as a browser does.
   */
  attempt(path: PathName, userId: number, onText?: (payload: Buffer) => void): Promise<Attempt>;
  /** The process that proxies on `path` (none for `direct`). */
  proxyPid(path: PathName): number | undefined;
  /** A full garbage collection in both services, then their memory (needs `inspect`). */
  collectGarbage(): Promise<{ chat: MemoryUsage; gateway: MemoryUsage }>;
  /** CPU seconds of the process that proxies on `path` (none for `direct`). */
  proxyCpuSeconds(path: PathName): number | undefined;
  stop(): Promise<void>;
}

function service(port: number, pid: number): Service {
  // With the processes it started: a gateway with GATEWAY_WORKERS is a supervisor and its workers.
  return { port, pid, cpuSeconds: () => serviceCpuSeconds(pid), rssKiB: () => serviceRssKiB(pid) };
}

function retryAfterMs(header: string | undefined): number {
  const seconds = Number(header);
  return Number.isFinite(seconds) && seconds > 0 ? seconds * 1_000 : 1_000;
}

/** The `error.code` of a JSON error body, or "". */
function errorCode(body: string): string {
  try {
    return (JSON.parse(body) as { error?: { code?: string } }).error?.code ?? "";
  } catch {
    return "";
  }
}

function refusal(answer: RawAnswer, what = ""): Attempt {
  const code = errorCode(answer.body);
  return {
    kind: "refused",
    why: `${what}${answer.status}${code ? ` ${code}` : ""}`,
    retryAfterMs: retryAfterMs(answer.headers.get("retry-after")),
  };
}

function outcomeOf(upgrade: RawUpgrade): Attempt {
  if (upgrade.kind === "open") return { kind: "connected", socket: upgrade.socket };
  if (upgrade.kind === "timeout") return { kind: "refused", why: "timeout", retryAfterMs: 0 };
  if (upgrade.kind === "error") return { kind: "refused", why: `error ${upgrade.error.message}`, retryAfterMs: 1_000 };
  return refusal(upgrade.answer);
}

/**
 * Starts the three on the database at `databaseUrl`; `gatewayEnv` adds or overrides the gateway's variables.
 * `inspect` opens both services' inspectors on loopback, for `collectGarbage` (the memory measurements).
 */
export async function startStack(
  databaseUrl: string,
  gatewayEnv: Record<string, string> = {},
  { inspect = false } = {},
): Promise<Stack> {
  const prefix = `lc-bench:${process.pid}:`;
  const inspectors = inspect ? { chat: await freePort(), gateway: await freePort() } : undefined;
  const chat = await startChat(databaseUrl, prefix, "bench", inspectors ? inspectorEnv(inspectors.chat) : {});
  const gateway = await startGateway(chat.port, {
    JWT_SECRET: jwtSecret,
    WS_TOKEN_SECRET: wsTokenSecret,
    REDIS_KEY_PREFIX: prefix,
    ...(inspectors ? inspectorEnv(inspectors.gateway) : {}),
    ...gatewayEnv,
  });
  const nginx = await startNginx(chat.port);
  console.error(
    `bench: started: chat ${chat.child.pid}, gateway ${gateway.child.pid}, nginx ${nginx.pid}, worker ${nginx.workerPid}`,
  );
  // A string secret makes jsonwebtoken try it as a private key first (~2 ms a token): a key made once.
  const key: KeyObject = createSecretKey(Buffer.from(jwtSecret));
  const pool = new RawHttpPool(gateway.port);
  const internal = (userId: number) => ({ "X-Internal-Token": token, "X-User-Id": String(userId) });
  // Kept, as a browser keeps its token: a reconnect storm's clients sign nothing on the way.
  const accessTokens = new Map<number, string>();
  const accessToken = (userId: number) => {
    let signed = accessTokens.get(userId);
    if (signed === undefined) {
      signed = jwt.sign({ sub: String(userId) }, key, { algorithm: "HS256", expiresIn: 3_600, audience: jwtAudience });
      accessTokens.set(userId, signed);
    }
    return signed;
  };
  /** A browser's ws-token request, on the pool's keep-alive connections. */
  const requestWsToken = (userId: number) =>
    pool.request("POST", "/api/v2/ws-token", { Authorization: `Bearer ${accessToken(userId)}` });
  const stack: Stack = {
    chat: service(chat.port, chat.child.pid ?? 0),
    gateway: service(gateway.port, gateway.child.pid ?? 0),
    nginx,
    accessToken,
    async wsToken(userId) {
      return (await requestWsToken(userId)).status;
    },
    async attempt(path, userId, onText) {
      if (path !== "gateway") {
        const port = path === "direct" ? chat.port : nginx.port;
        return outcomeOf(await rawUpgrade(port, "/ws/chat", connectTimeoutMs, { headers: internal(userId), onText }));
      }
      const t0 = performance.now();
      let answer: RawAnswer;
      try {
        answer = await requestWsToken(userId);
      } catch (error) {
        return { kind: "refused", why: `ws-token ${(error as Error).message}`, retryAfterMs: 1_000 };
      }
      if (answer.status !== 200) return refusal(answer, "ws-token ");
      const tokenMs = performance.now() - t0;
      const { token: wsToken } = JSON.parse(answer.body) as { token: string };
      const outcome = outcomeOf(
        await rawUpgrade(gateway.port, `/ws/chat?token=${wsToken}`, connectTimeoutMs, { onText }),
      );
      return outcome.kind === "connected" ? { ...outcome, tokenMs } : outcome;
    },
    async collectGarbage() {
      if (!inspectors) throw new Error("the stack was started without inspect");
      const [chatMemory, gatewayMemory] = await Promise.all([
        collectGarbage(inspectors.chat),
        collectGarbage(inspectors.gateway),
      ]);
      return { chat: chatMemory, gateway: gatewayMemory };
    },
    proxyPid(path) {
      if (path === "gateway") return stack.gateway.pid;
      if (path === "nginx") return nginx.workerPid;
      return undefined;
    },
    proxyCpuSeconds(path) {
      if (path === "gateway") return stack.gateway.cpuSeconds();
      if (path === "nginx") return nginx.cpuSeconds();
      return undefined;
    },
    async stop() {
      pool.close();
      await nginx.stop();
      await stopChats([gateway.child, chat.child]);
    },
  };
  return stack;
}

/** Opens a socket and throws unless it opened: for set-ups that must not go on with fewer sockets. */
export async function mustOpen(
  stack: Stack,
  path: PathName,
  userId: number,
  onText?: (payload: Buffer) => void,
): Promise<Socket> {
  const outcome = await stack.attempt(path, userId, onText);
  if (outcome.kind === "connected") return outcome.socket;
  throw new Error(`could not open a socket of user ${userId} by ${path}: ${outcome.why}`);
}
