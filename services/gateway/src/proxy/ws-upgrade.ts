import type { IncomingMessage } from "node:http";
import type { Socket } from "node:net";
import type { Duplex } from "node:stream";
import { ErrorCode } from "@listings-chat/shared";
import { redactUrl, refuseUpgrade } from "@listings-chat/shared/node";
import httpProxy from "http-proxy";
import type { Logger } from "pino";
import { AuthError } from "../auth/errors.ts";
import type { WsTokens } from "../auth/ws-token.ts";
import type { SocketCaps } from "./socket-caps.ts";
import type { Upstream, Upstreams } from "./upstreams.ts";

export const WS_PATH = "/ws/chat";

/** Headers a client may send but only the gateway may set on the internal hop (CONTRACT §2). */
const IDENTITY_HEADERS = ["x-user-id", "x-internal-token", "x-forwarded-user", "authorization", "cookie"];
const EMPTY = Buffer.alloc(0);

export interface WsUpgradeOptions {
  wsTokens: WsTokens;
  upstreams: Upstreams;
  internalToken: string;
  /** Per-user cap of open pipes (in memory, or shared through Redis). */
  caps: SocketCaps;
  maxSocketsPerUser: number;
  connectTimeoutMs: number;
  isDraining: () => boolean;
  log: Logger;
}

export interface WsCounters {
  accepted: number;
  refused: Record<number, number>;
}

/**
 * The gateway's `upgrade` listener, as ordered passes: path → draining → ws-token (single use) →
 * cursor → per-user cap → instance → pipe. Every refusal is a plain HTTP answer written before any
 * 101; an accepted upgrade becomes a raw two-way pipe (http-proxy, `ws: true`) with no frame parsing.
 */
export function createWsUpgrade(options: WsUpgradeOptions) {
  const { wsTokens, upstreams, log, caps } = options;
  /** Client sockets with a live pipe, for draining and for leak checks. */
  const pipes = new Set<Duplex>();
  const counters: WsCounters = { accepted: 0, refused: {} };
  const proxy = httpProxy.createProxyServer({ ws: true, xfwd: false });
  // Every error also reaches the per-call callback below; this listener only keeps the proxy from throwing.
  proxy.on("error", () => {});

  // Per request: whether its 101 went out, so a later error tears the pipe down instead of retrying.
  const upgraded = new WeakSet<IncomingMessage>();
  proxy.on("proxyReqWs", (proxyReq, req, socket) => {
    const timer = setTimeout(
      () => proxyReq.destroy(new Error(`no answer from the chat instance within ${options.connectTimeoutMs} ms`)),
      options.connectTimeoutMs,
    );
    // A client that leaves before the instance answers must not leave the upstream request behind.
    const abandon = () => proxyReq.destroy();
    socket.once("close", abandon);
    proxyReq.once("response", () => clearTimeout(timer));
    proxyReq.once("error", () => {
      clearTimeout(timer);
      socket.off("close", abandon);
    });
    proxyReq.once("upgrade", (_res, proxySocket: Socket) => {
      clearTimeout(timer);
      socket.off("close", abandon);
      upgraded.add(req);
      counters.accepted += 1;
      proxySocket.on("error", () => {});
      if (socket.destroyed) {
        proxySocket.destroy();
        return;
      }
      // When either side ends, the other is closed; errors tear both down (node-http-proxy #559, #1439).
      proxySocket.once("close", () => socket.destroy());
      socket.once("close", () => proxySocket.destroy());
    });
  });

  function refuse(socket: Duplex, status: number, code: string, message: string, headers?: Record<string, string>) {
    counters.refused[status] = (counters.refused[status] ?? 0) + 1;
    refuseUpgrade(socket, status, code, message, headers);
  }

  function pipeTo(req: IncomingMessage, socket: Duplex, head: Buffer, order: Upstream[], attempt: number) {
    const upstream = order[attempt];
    if (!upstream) {
      refuse(socket, 503, "upstream_unavailable", "no chat instance is reachable: retry shortly", {
        "Retry-After": "2",
      });
      return;
    }
    proxy.ws(req, socket, attempt === 0 ? head : EMPTY, { target: upstream.base }, (error) => {
      if (upgraded.has(req) || socket.destroyed) {
        socket.destroy();
        return;
      }
      upstreams.markDown(upstream);
      log.warn({ err: error, upstream: upstream.base }, "chat instance failed the upgrade");
      if (!order[attempt + 1]) {
        pipeTo(req, socket, head, order, attempt + 1); // answers the 503
        return;
      }
      // http-proxy calls socket.end() right after this callback, but nothing was written to the client
      // yet: the socket is still ours to hand to the next instance, so that one end() is swallowed.
      const end = socket.end;
      socket.end = (() => socket) as typeof socket.end;
      process.nextTick(() => {
        socket.end = end;
      });
      pipeTo(req, socket, head, order, attempt + 1);
    });
  }

  async function handle(req: IncomingMessage, socket: Duplex, head: Buffer) {
    const url = new URL(req.url ?? "/", "http://gateway.invalid");
    if (url.pathname !== WS_PATH)
      return refuse(socket, 404, ErrorCode.notFound, `no WebSocket endpoint here: use ${WS_PATH}`);
    if (options.isDraining()) {
      return refuse(socket, 503, ErrorCode.shuttingDown, "this gateway is shutting down: connect again", {
        "Retry-After": "1",
      });
    }
    const token = url.searchParams.get("token");
    if (!token) return refuse(socket, 401, ErrorCode.unauthorized, "missing ws-token: get one from /api/v2/ws-token");
    const after = url.searchParams.get("after");
    if (after !== null && !/^\d{1,16}$/.test(after)) {
      return refuse(socket, 400, ErrorCode.validationFailed, "after must be a non-negative integer event id");
    }
    let userId: number;
    try {
      userId = await wsTokens.redeem(token);
    } catch (error) {
      if (error instanceof AuthError) return refuse(socket, 401, error.code, error.message);
      log.error({ err: error }, "could not check a ws-token");
      return refuse(socket, 503, "token_store_unavailable", "could not check the ws-token: retry shortly");
    }
    if (socket.destroyed) return;
    let release: (() => void) | undefined;
    try {
      release = await caps.tryAcquire(userId);
    } catch (error) {
      log.error({ err: error }, "could not check the per-user socket cap");
      return refuse(socket, 503, "cap_store_unavailable", "could not count open connections: retry shortly");
    }
    if (!release) {
      return refuse(
        socket,
        429,
        ErrorCode.rateLimited,
        `too many open connections for this user (${options.maxSocketsPerUser})`,
      );
    }
    // The client may have left while the cap was checked (a Redis round trip): give the slot back.
    if (socket.destroyed) return release();
    const giveBack = release;
    pipes.add(socket);
    socket.once("close", () => {
      giveBack();
      pipes.delete(socket);
    });

    // The internal hop: the cursor goes on, the token does not; identity comes from the gateway alone.
    req.url = after === null ? WS_PATH : `${WS_PATH}?after=${after}`;
    for (const name of IDENTITY_HEADERS) delete req.headers[name];
    req.headers["x-user-id"] = String(userId);
    req.headers["x-internal-token"] = options.internalToken;
    pipeTo(req, socket, head, upstreams.order(), 0);
  }

  return {
    listener(req: IncomingMessage, socket: Duplex, head: Buffer) {
      // First, so that a client that vanishes mid-handshake cannot crash the process.
      socket.on("error", (error) => log.debug({ err: error, url: redactUrl(req.url) }, "client socket error"));
      handle(req, socket, head).catch((error) => {
        log.error({ err: error, url: redactUrl(req.url) }, "upgrade failed");
        socket.destroy();
      });
    },
    counters,
    openPipes: () => pipes.size,
    /** Resolves when every pipe has closed, or destroys the rest after `deadlineMs`. */
    async drain(deadlineMs: number) {
      const deadline = Date.now() + deadlineMs;
      while (pipes.size > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
      // Wait for the 'close' of what we destroy: a socket's 'close' (which releases its pipe and cap slot)
      // comes after the server's own 'close', so without this stop() resolved with pipes still counted open.
      const remaining = [...pipes].map((socket) => new Promise<void>((resolve) => socket.once("close", resolve)));
      for (const socket of pipes) socket.destroy();
      await Promise.all(remaining);
      proxy.close();
      caps.close();
    },
  };
}
