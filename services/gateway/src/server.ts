import type { Server } from "node:http";
import type { AddressInfo } from "node:net";
import { serve } from "@hono/node-server";
import { createInternalTokenCheck } from "@listings-chat/shared/node";
import { Redis } from "ioredis";
import type { Logger } from "pino";
import { createGatewayApp } from "./app.ts";
import { createAccessTokenVerifier } from "./auth/access-token.ts";
import { createMemoryReplayStore, createRedisReplayStore } from "./auth/replay-store.ts";
import { createWsTokens } from "./auth/ws-token.ts";
import { createDevTokenSigner } from "./dev/dev-token.ts";
import type { GatewayConfig } from "./env.ts";
import { createGatewayMetrics } from "./metrics.ts";
import { createRestForwarder } from "./proxy/rest-forward.ts";
import { createMemorySocketCaps, createRedisSocketCaps } from "./proxy/socket-caps.ts";
import { createUpstreams } from "./proxy/upstreams.ts";
import { createWsUpgrade } from "./proxy/ws-upgrade.ts";

export interface Gateway {
  port: number;
  server: Server;
  /** Open pipes, for drains and leak checks. */
  openPipes(): number;
  /** Stops taking upgrades and requests, lets pipes drain up to the deadline, then closes everything. */
  stop(): Promise<void>;
}

/** Builds the gateway from its configuration and starts listening. */
export async function startGateway(config: GatewayConfig, log: Logger): Promise<Gateway> {
  const redis = config.redis ? new Redis(config.redis.url, { maxRetriesPerRequest: 2 }) : undefined;
  redis?.on("error", (error) => log.warn({ err: error }, "redis connection error"));
  const replay =
    redis && config.redis ? createRedisReplayStore(redis, config.redis.keyPrefix) : createMemoryReplayStore();
  const wsTokens = createWsTokens({ ...config.wsTokens, replay });
  const upstreams = createUpstreams({
    urls: config.chatUpstreams,
    connectTimeoutMs: config.upstreamConnectTimeoutMs,
    requestTimeoutMs: config.upstreamRequestTimeoutMs,
  });
  let draining = false;
  const ws = createWsUpgrade({
    wsTokens,
    upstreams,
    internalToken: config.internalToken,
    caps:
      redis && config.redis
        ? createRedisSocketCaps({ redis, keyPrefix: config.redis.keyPrefix, maxPerUser: config.maxSocketsPerUser })
        : createMemorySocketCaps(config.maxSocketsPerUser),
    maxSocketsPerUser: config.maxSocketsPerUser,
    connectTimeoutMs: config.upstreamConnectTimeoutMs,
    isDraining: () => draining,
    log,
  });
  const { key, issuer, audience } = config.accessTokens;
  const app = createGatewayApp({
    chatUpstreams: config.chatUpstreams,
    verifyAccessToken: createAccessTokenVerifier(config.accessTokens),
    wsTokens,
    forward: createRestForwarder({ upstreams, internalToken: config.internalToken, log }),
    signDevToken:
      config.devAuth && key.kind === "secret"
        ? createDevTokenSigner({ secret: key.secret, issuer, audience })
        : undefined,
    metrics: createGatewayMetrics(ws.counters, ws.openPipes),
    checkInternalToken: createInternalTokenCheck(config.internalToken),
    log,
    isShuttingDown: () => draining,
  });

  const server = await new Promise<Server>((resolve, reject) => {
    const s = serve({ fetch: app.fetch, port: config.port, hostname: config.host }, () => resolve(s as Server));
    s.once("error", reject);
  });
  server.on("upgrade", ws.listener);
  const port = (server.address() as AddressInfo).port;
  log.info({ port, upstreams: config.chatUpstreams, replay: redis ? "redis" : "memory" }, "gateway listening");

  return {
    port,
    server,
    openPipes: ws.openPipes,
    async stop() {
      // Still listening while pipes drain: new upgrades get 503 and /ready says 503, so balancers move on.
      draining = true;
      await ws.drain(config.shutdownDrainMs);
      const closed = new Promise<void>((resolve) => server.close(() => resolve()));
      server.closeAllConnections();
      await closed;
      await upstreams.close();
      await redis?.quit().catch(() => {});
    },
  };
}
