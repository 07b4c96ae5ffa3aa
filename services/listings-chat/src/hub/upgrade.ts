import type { IncomingMessage } from "node:http";
import type { Duplex } from "node:stream";
import { CloseCode, ErrorCode, parseUserId } from "@listings-chat/shared";
import { presentedInternalToken, redactUrl, refuseUpgrade as refuse, upgradeScope } from "@listings-chat/shared/node";
import type { Logger } from "pino";
import type { WebSocketServer } from "ws";
import type { Hub } from "./hub.ts";
import { createUsedWsTokens, type UsedWsTokens } from "./used-ws-tokens.ts";

export const WS_PATH = "/ws/chat";

export interface UpgradeDeps {
  wss: WebSocketServer;
  hub: Hub;
  checkInternalToken: (presented: string | undefined) => boolean;
  isShuttingDown: () => boolean;
  /** At most this many accepted sockets waiting for their greeting; past it, upgrades are refused at once. */
  connectQueueMax: number;
  /** Counts an admission refusal. */
  onBusy?: () => void;
  log: Logger;
  random?: () => number;
  /** The ws-tokens sockets were opened with (the gateway's `X-Ws-Token-Id`); one of its own when not given. */
  usedWsTokens?: UsedWsTokens;
  /**
   * Whether the platform suspends the user (CONTRACT §8): at once for almost everyone, a promise when it has to
   * be asked (platform/suspensions.ts, checkConnect); nobody is, when not given.
   */
  isSuspended?: (userId: number) => boolean | Promise<boolean>;
}

/** A ws-token's id as the gateway makes it (a UUID), with room to spare. */
const TOKEN_ID = /^[A-Za-z0-9_-]{1,128}$/;

/**
 * The `upgrade` listener of the chat port: checks the internal hop (token, user, cursor) before
 * any 101, then hands the socket to the hub.
 */
export function createUpgradeHandler({
  wss,
  hub,
  checkInternalToken,
  isShuttingDown,
  connectQueueMax,
  onBusy,
  log,
  random = Math.random,
  usedWsTokens = createUsedWsTokens(),
  isSuspended = () => false,
}: UpgradeDeps) {
  return (req: IncomingMessage, socket: Duplex, head: Buffer) =>
    // The gateway's id for this upgrade, in every line logged while it is handled.
    upgradeScope(req, async () => handleUpgrade(req, socket, head));

  function handleUpgrade(req: IncomingMessage, socket: Duplex, head: Buffer) {
    // First, so that a client that vanishes mid-handshake cannot crash the process.
    socket.on("error", (error) => log.debug({ err: error }, "upgrade socket error"));
    const url = new URL(req.url ?? "/", "http://chat.internal");
    if (url.pathname !== WS_PATH)
      return refuse(socket, 404, ErrorCode.notFound, `no WebSocket endpoint at this path: use ${WS_PATH}`);
    if (!checkInternalToken(presentedInternalToken(req.headers))) {
      log.warn({ url: redactUrl(req.url) }, "upgrade without the internal token refused");
      return refuse(socket, 401, ErrorCode.unauthorized, "missing or wrong X-Internal-Token");
    }
    const userId = parseUserId(req.headers["x-user-id"]);
    if (userId === undefined)
      return refuse(socket, 401, ErrorCode.unauthorized, "X-User-Id is missing or not a positive integer");
    const afterRaw = url.searchParams.get("after");
    if (afterRaw !== null && !/^\d{1,16}$/.test(afterRaw)) {
      return refuse(socket, 400, ErrorCode.validationFailed, "after must be a non-negative integer event id");
    }
    // The ws-token the gateway opens this socket with (absent on other internal callers): its id, and its
    // expiry in epoch seconds.
    const tokenId = req.headers["x-ws-token-id"];
    const tokenExpires = req.headers["x-ws-token-expires"];
    if (tokenId !== undefined || tokenExpires !== undefined) {
      if (typeof tokenId !== "string" || !TOKEN_ID.test(tokenId)) {
        return refuse(socket, 400, ErrorCode.validationFailed, "X-Ws-Token-Id must be the ws-token's id (jti)");
      }
      if (typeof tokenExpires !== "string" || !/^\d{1,12}$/.test(tokenExpires)) {
        return refuse(socket, 400, ErrorCode.validationFailed, "X-Ws-Token-Expires must be the ws-token's exp");
      }
    }
    if (isShuttingDown())
      return refuse(socket, 503, ErrorCode.shuttingDown, "this instance is shutting down: connect again");
    if (hub.opening() >= connectQueueMax) {
      // Alive but behind: a quick answer the client can act on, not a handshake that times out somewhere.
      // Spread over 1–3 s, so that the refused do not all come back at once.
      const retryAfter = String(1 + Math.floor(random() * 3));
      onBusy?.();
      return refuse(socket, 503, ErrorCode.instanceBusy, "this instance is busy opening connections: retry shortly", {
        "Retry-After": retryAfter,
      });
    }
    // Claimed last, when nothing else refuses: a refusal the client may retry (503) leaves the token usable.
    if (typeof tokenId === "string" && !usedWsTokens.claim(tokenId, Number(tokenExpires) * 1_000)) {
      // 409, not 401 (which a gateway takes for another INTERNAL_TOKEN): the gateway answers its client 401.
      return refuse(socket, 409, ErrorCode.conflict, "this ws-token was already used: a ws-token opens one socket");
    }
    const gatewayId = req.headers["x-gateway-id"];
    const accept = (suspended: boolean) =>
      wss.handleUpgrade(req, socket, head, (ws) => {
        // Accepted, then closed with 4003 (CONTRACT §8), which tells the client why: before any greeting, and
        // before their contacts hear them come online.
        if (suspended) return ws.close(CloseCode.suspended, "suspended by the platform");
        hub.attach(ws, userId, afterRaw === null ? undefined : Number(afterRaw), {
          gatewayId: typeof gatewayId === "string" ? gatewayId : undefined,
        });
      });
    const suspended = isSuspended(userId);
    if (typeof suspended === "boolean") return accept(suspended);
    suspended.then(accept, (error: unknown) => {
      // Writes are refused by the write functions anyway: a socket for reads is no harm.
      log.warn({ err: error }, "could not check whether the user is still suspended; the socket is accepted");
      accept(false);
    });
  }
}
