import { randomUUID } from "node:crypto";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { getRequestListener } from "@hono/node-server";
import {
  createInternalTokenCheck,
  createRedisClient,
  createStartup,
  listen,
  succeedsWithin,
} from "@listings-chat/shared/node";
import type { Logger } from "pino";
import { Registry } from "prom-client";
import { createGatewayApp } from "./app.ts";
import { createAccessTokenVerifier } from "./auth/access-token.ts";
import { createMemoryReplayStore, createRedisReplayStore } from "./auth/replay-store.ts";
import { createWsTokens } from "./auth/ws-token.ts";
import { answerUnbuildableRequest, answerUnreadableRequestsAsJson } from "./client-errors.ts";
import { createDevTokenSigner } from "./dev/dev-token.ts";
import type { GatewayConfig } from "./env.ts";
import { enterBasePath } from "./http/base-path.ts";
import { createGatewayMetrics, createGatewayTelemetry } from "./metrics.ts";
import { createRestForwarder } from "./proxy/rest-forward.ts";
import { createMemorySocketCaps, createRedisSocketCaps } from "./proxy/socket-caps.ts";
import { parseUpstreamSource, startUpstreamDiscovery } from "./proxy/upstream-discovery.ts";
import { createUpstreams } from "./proxy/upstreams.ts";
import { createWsUpgrade } from "./proxy/ws-upgrade.ts";
import type { SupervisorLink } from "./workers/worker.ts";

export interface Gateway {
  port: number;
  server: Server;
  /** Open pipes, for drains and leak checks. */
  openPipes(): number;
  /** Stops taking upgrades and requests, lets pipes drain up to the deadline, then closes everything. */
  stop(): Promise<void>;
}

/**
 * Builds the gateway from its configuration and starts listening. `signal` (a stop signal during start-up)
 * stops it between or during its steps, closes what they opened, and the port stays shut.
 */
export async function startGateway(
  config: GatewayConfig,
  log: Logger,
  signal?: AbortSignal,
  /** The supervisor, when this process is one of GATEWAY_WORKERS: /metrics then answers for all of them. */
  supervisor?: SupervisorLink,
): Promise<Gateway> {
  const startup = createStartup(signal);
  const redis = config.redis ? createRedisClient(config.redis.url) : undefined;
  redis?.on("error", (error) => log.warn({ err: error }, "redis connection error"));
  if (redis) startup.opened(() => redis.disconnect());
  const replay =
    redis && config.redis ? createRedisReplayStore(redis, config.redis.keyPrefix) : createMemoryReplayStore();
  const wsTokens = createWsTokens({ ...config.wsTokens, replay });
  const upstreams = createUpstreams({
    urls: [],
    connectTimeoutMs: config.upstreamConnectTimeoutMs,
    requestTimeoutMs: config.upstreamRequestTimeoutMs,
    upgradeAdmission: config.upstreamUpgrades ?? { inFlightMax: 32, queueMax: 2_048, maxWaitMs: 3_000 },
  });
  startup.opened(() => upstreams.close());
  // The instances: the fixed URLs, and the addresses of dns+ names, looked up again while the gateway runs.
  const discovery = await startup.step(
    "upstream discovery",
    startUpstreamDiscovery({
      sources: config.chatUpstreams.map((entry) => {
        const source = parseUpstreamSource(entry);
        if (!source) throw new Error(`not a chat upstream: ${entry}`);
        return source;
      }),
      refreshMs: config.upstreamDnsRefreshMs ?? 5_000,
      onChange: (bases) => {
        upstreams.replace(bases);
        log.info({ upstreams: bases }, "chat instances");
      },
      log,
    }),
    (started) => started.stop(),
  );
  let draining = false;
  const gatewayId = randomUUID();
  const registry = new Registry();
  const telemetry = createGatewayTelemetry(registry);
  const { basePath } = config;
  const ws = createWsUpgrade({
    basePath,
    wsTokens,
    upstreams,
    internalToken: config.internalToken,
    gatewayId,
    caps:
      redis && config.redis
        ? createRedisSocketCaps({ redis, keyPrefix: config.redis.keyPrefix, maxPerUser: config.maxSocketsPerUser })
        : createMemorySocketCaps(config.maxSocketsPerUser),
    maxSocketsPerUser: config.maxSocketsPerUser,
    connectTimeoutMs: config.upstreamConnectTimeoutMs,
    isDraining: () => draining,
    observeUpgrade: telemetry.observeUpgrade,
    log,
  });
  const { key, issuer, audience } = config.accessTokens;
  const rest = createRestForwarder({
    upstreams,
    internalToken: config.internalToken,
    log,
    requestTimeoutMs: config.upstreamRequestTimeoutMs,
    bodyTimeoutMs: config.bodyTimeoutMs,
    maxRequestsPerUser: config.maxRequestsPerUser,
    onUpstreamFailure: telemetry.countRestFailure,
  });
  const app = createGatewayApp({
    chatUpstreams: discovery.current,
    internalToken: config.internalToken,
    redisReady: redis ? () => succeedsWithin(() => redis.ping(), 1_000) : undefined,
    verifyAccessToken: createAccessTokenVerifier({ ...config.accessTokens, warn: (message) => log.warn(message) }),
    wsTokens,
    forward: rest.handle,
    forwardDevelopmentFile: config.production ? undefined : rest.handleDevelopmentFile,
    corsOrigins: config.corsOrigins,
    basePath,
    signDevToken:
      config.devAuth && key.kind === "secret"
        ? createDevTokenSigner({
            secret: key.secret,
            issuer,
            audience,
            // Never longer than the gateway accepts a token for.
            ttlSeconds: Math.min(config.devTokenTtlSeconds, config.accessTokens.maxAgeSeconds),
          })
        : undefined,
    metrics: createGatewayMetrics(registry, ws.counters, ws.openPipes, () => upstreams.all, supervisor),
    observeRequest: telemetry.observeRequest,
    checkInternalToken: createInternalTokenCheck(config.internalToken),
    log,
    isShuttingDown: () => draining,
  });

  const fetch = async (request: Request, env: unknown) => {
    const entered = enterBasePath(request, basePath);
    const response = entered instanceof Response ? entered : await app.fetch(entered, env);
    // While draining, each answer closes its connection, so keep-alive does not hold clients here.
    if (draining) {
      try {
        response.headers.set("Connection", "close");
      } catch {
        // An immutable Response (a redirect): its connection simply stays open until the server closes.
      }
    }
    return response;
  };
  // createAdaptorServer without its option-less error handler: what cannot become a Request is answered in JSON.
  const server = createServer(getRequestListener(fetch, { errorHandler: answerUnbuildableRequest }));
  await startup.beforeListen();
  await listen(server, config.port, config.host, { reusePort: (config.workers ?? 1) > 1 });
  startup.done();
  // A request head must arrive within 10 s and a whole request within 30 s (slow-loris); idle keep-alive
  // connections are kept longer than the 60 s of the nginx in front, so the gateway never closes one that
  // nginx is about to reuse (the POST 502 race).
  server.headersTimeout = 10_000;
  server.requestTimeout = 30_000;
  server.keepAliveTimeout = 75_000;
  answerUnreadableRequestsAsJson(server);
  // Every request is counted until its answer has been written out, so that a drain answers what it accepted.
  let requestsInFlight = 0;
  server.on("request", (_req, res) => {
    requestsInFlight += 1;
    res.once("close", () => {
      requestsInFlight -= 1;
    });
  });
  server.on("upgrade", ws.listener);
  const port = (server.address() as AddressInfo).port;
  log.info(
    { host: config.host, port, upstreams: config.chatUpstreams, replay: redis ? "redis" : "memory" },
    "gateway listening",
  );

  return {
    port,
    server,
    openPipes: ws.openPipes,
    async stop() {
      // Still listening while pipes drain: new upgrades get 503 and /ready says 503, so balancers move on.
      draining = true;
      const stopping = Date.now();
      const deadline = stopping + config.shutdownDrainMs;
      await ws.drain(config.shutdownDrainMs);
      const closed = new Promise<void>((resolve) => server.close(() => resolve()));
      server.closeIdleConnections();
      // Requests already accepted are answered (their connections close after the answer); at least 500 ms
      // for those that came last, within 9 s of the signal (the process exits hard at 9.5 s).
      const answeredBy = Math.min(Math.max(deadline, Date.now() + 500), stopping + 9_000);
      while (requestsInFlight > 0 && Date.now() < answeredBy) await new Promise((r) => setTimeout(r, 10));
      server.closeAllConnections();
      await closed;
      discovery.stop();
      await upstreams.close();
      await redis?.quit().catch(() => {});
    },
  };
}
