import type { Server } from "node:http";
import type { AddressInfo } from "node:net";
import { createAdaptorServer } from "@hono/node-server";
import { Limits } from "@listings-chat/shared";
import {
  createInternalTokenCheck,
  createRedisClient,
  createStartup,
  listen,
  succeedsWithin,
} from "@listings-chat/shared/node";
import type { Logger } from "pino";
import { WebSocketServer } from "ws";
import { createApp } from "./app.ts";
import type { Bus } from "./bus/bus.ts";
import { createMemoryBus } from "./bus/memory.ts";
import { createRedisBus } from "./bus/redis.ts";
import { createChatService } from "./chats/service.ts";
import { type DatabaseHandle, openDatabase } from "./db/client.ts";
import { ensureEventPartitions, maintainEventPartitions } from "./db/event-partitions.ts";
import { registerInstance } from "./db/instance-registry.ts";
import type { ChatConfig } from "./env.ts";
import { storing } from "./errors.ts";
import { createBusPublisher, publishSuspension } from "./events/publisher.ts";
import { createApiRoutes } from "./http/api-routes.ts";
import { createHub } from "./hub/hub.ts";
import { createUpgradeHandler } from "./hub/upgrade.ts";
import { createRateLimiter } from "./limits/rate-limiter.ts";
import { createMemoryTypingGate, createRedisTypingGate } from "./limits/typing-gate.ts";
import { createFileRoutes } from "./media/file-routes.ts";
import { createImageProcessor, defaultImageLimits } from "./media/images.ts";
import { openStorage } from "./media/open-storage.ts";
import { PUT_WINDOW_MARGIN_S } from "./media/storage.ts";
import { createPhotoSweeper } from "./media/sweeper.ts";
import { createMediaService, defaultMediaOptions } from "./media/uploads.ts";
import { createMessageService } from "./messages/service.ts";
import { createMetrics } from "./ops/metrics.ts";
import { createOpsRoutes, createProbeRoutes } from "./ops/routes.ts";
import { createStats } from "./ops/stats.ts";
import { createTelemetry } from "./ops/telemetry.ts";
import { createErasures, readErasureStatus } from "./personal-data/erasure.ts";
import {
  createRetention,
  type RetentionOptions,
  type RetentionResult,
  readRetentionStatus,
} from "./personal-data/retention.ts";
import { createPersonalDataRoutes } from "./personal-data/routes.ts";
import { createListingFanout } from "./platform/listing-fanout.ts";
import { createPlatformRoutes } from "./platform/routes.ts";
import { createPlatformService } from "./platform/service.ts";
import { createSuspensionWatch } from "./platform/suspensions.ts";
import { createMemoryPresence, createRedisPresence } from "./presence/presence.ts";
import { createContentRules, defaultContentRulesOptions } from "./safety/content-rules.ts";
import { createSafetyService } from "./safety/service.ts";
import { createWebhookCounts } from "./webhooks/counts.ts";
import { createWebhookMetrics } from "./webhooks/metrics.ts";
import { createWebhookRoutes } from "./webhooks/routes.ts";
import { startWebhooks } from "./webhooks/webhooks.ts";

export interface ChatServer {
  port: number;
  database: DatabaseHandle;
  /** Removes the due photos now (media/sweeper.ts; 0 when photos are off): tests and operators. */
  sweepPhotos(): Promise<number>;
  /** The retention's run, when one is due and this instance takes it (personal-data/retention.ts): tests. */
  runRetention(): Promise<RetentionResult | undefined>;
  /** Stops accepting, closes sockets with 1001, then the bus and the database. */
  stop(): Promise<void>;
}

export interface ChatServerOverrides {
  /** Tests pass shorter heartbeats or a smaller slow-consumer limit. */
  heartbeatIntervalMs?: number;
  slowConsumerBytes?: number;
  sendsPerMinute?: number;
  /** A shorter typing interval than the contract's 2 s (a property test that types often). */
  typingIntervalMs?: number;
  /** A shorter (or no) grace before "offline" is announced (hub.ts, PRESENCE_LEAVE_GRACE_MS). */
  presenceLeaveGraceMs?: number;
  /** How often the suspensions in force are read again (platform/suspensions.ts; 5 s otherwise). */
  suspensionsRefreshMs?: number;
  /** Smaller replay pages (events, bytes), so that a replay spans many reads. */
  replayPage?: { maxEvents?: number; maxBytes?: number };
  /** A shorter replay-page timeout, resume interval or inbound queue (hub/connection.ts). */
  socketLimits?: { inboundQueueFrames?: number; replayPageTimeoutMs?: number; resumeIntervalMs?: number };
  /** How often the photo sweeper looks for due uploads (media/sweeper.ts; 30 s otherwise); links' lifetime. */
  photos?: { sweepIntervalMs?: number; linkTtlS?: number; uploadUrlTtlS?: number; maxWaitingPhotos?: number };
  /** A shorter margin past an upload URL's lifetime while its bytes may still land (media/sweeper.ts). */
  putWindowMarginS?: number;
  /** The retention's clock (set forward by tests), schedule, time bound and batches (personal-data/retention.ts). */
  retention?: Pick<RetentionOptions, "now" | "intervalMs" | "pollMs" | "maxRunMs" | "restRatio" | "batches" | "onRun">;
}

/**
 * Builds the whole chat instance from its configuration and starts listening. `signal` (a stop signal
 * during start-up) stops it between or during its steps, closes what they opened, and the port stays shut.
 */
export async function startChatServer(
  config: ChatConfig,
  log: Logger,
  overrides: ChatServerOverrides = {},
  signal?: AbortSignal,
): Promise<ChatServer> {
  const startedAt = Date.now();
  const startup = createStartup(signal);
  const telemetry = createTelemetry();
  const database = await startup.step(
    "database",
    openDatabase(config.database, (operation, seconds) => telemetry.dbQuerySeconds.observe({ operation }, seconds)),
    (opened) => opened.close(),
  );
  // Partitions of the event tables ahead of the ids in use (db/event-partitions.ts): now and every few minutes.
  // Not a reason to refuse to start: 0021 and every instance keep two widths of ids ahead, the timer below tries
  // again, and a write that finds no partition adds it. (It waits behind an ANALYZE of the event tables, for one.)
  await startup.step(
    "event partitions",
    ensureEventPartitions(database.db).catch((error: unknown) =>
      log.warn({ err: error }, "could not add event partitions at start; the maintenance tries again"),
    ),
    () => {},
  );
  const stopPartitionMaintenance = maintainEventPartitions(database.db, (error) =>
    log.warn({ err: error }, "could not add event partitions"),
  );
  startup.opened(stopPartitionMaintenance);
  for (const { name, reason } of database.migrations.heldBack)
    log.warn({ migration: name }, `migration held back: ${reason}`);
  // Contract migrations wait while this instance serves (instance-registry.ts): registered until it stops.
  const registration = await startup.step(
    "instance registration",
    registerInstance(database, {
      instanceId: config.instanceId,
      known: database.migrations.known,
      onRefreshError: (error) => log.warn({ err: error }, "could not refresh this instance's registration"),
      onRemoveError: (error) =>
        log.warn({ err: error }, "could not remove this instance's registration: contract migrations wait 90 s more"),
    }),
    (opened) => opened.stop(),
  );
  const redis = config.redis ? createRedisClient(config.redis.url) : undefined;
  redis?.on("error", (error) => log.warn({ err: error }, "redis connection error"));
  if (redis) startup.opened(() => redis.disconnect());
  const bus: Bus = config.redis
    ? await startup.step(
        "redis",
        createRedisBus({ url: config.redis.url, keyPrefix: config.redis.keyPrefix, log }),
        (opened) => opened.close(),
      )
    : createMemoryBus();
  const presence =
    redis && config.redis
      ? createRedisPresence({
          redis,
          keyPrefix: config.redis.keyPrefix,
          instanceId: config.instanceId,
          ttlMs: 3 * Limits.heartbeatIntervalMs,
        })
      : createMemoryPresence();
  const stats = createStats();
  const publish = createBusPublisher(bus, stats, log);
  let lastLimitWarning = 0;
  const limits = createRateLimiter({
    limits: {
      send: overrides.sendsPerMinute ?? config.sendLimitPerMinute,
      edit: config.writeLimits?.editsPerMinute,
      chat_open: config.writeLimits?.chatOpensPerHour,
      report: config.writeLimits?.reportsPerHour,
      upload: config.writeLimits?.uploadsPerHour,
    },
    redis,
    keyPrefix: config.redis?.keyPrefix,
    onRedisUnavailable: (error) => {
      stats.sendLimitLocalTotal += 1;
      // Once per 10 s, not once per write.
      if (Date.now() - lastLimitWarning < 10_000) return;
      lastLimitWarning = Date.now();
      log.warn({ err: error }, "Redis did not answer the rate limits: writes are counted per instance meanwhile");
    },
  });
  const chats = createChatService({
    db: database.db,
    reads: database.reads,
    publish,
    limits,
    listingsRequired: config.listingsRequired,
  });
  const { storage, developmentFiles } = config.storage
    ? openStorage(config.storage, config.internalToken)
    : { storage: undefined, developmentFiles: undefined };
  if (storage) startup.opened(() => storage.close());
  /** How long a presigned upload URL is valid; with a margin for clocks, how long its bytes may still land. */
  const uploadUrlTtlS = overrides.photos?.uploadUrlTtlS ?? defaultMediaOptions.uploadUrlTtlS;
  const putWindowS = uploadUrlTtlS + (overrides.putWindowMarginS ?? PUT_WINDOW_MARGIN_S);
  const media = storage
    ? createMediaService({
        db: database.db,
        storage,
        images: createImageProcessor({ ...defaultImageLimits, concurrency: config.photos?.concurrency ?? 2 }),
        limits,
        options: {
          uploadMaxBytes: config.photos?.uploadMaxBytes ?? defaultMediaOptions.uploadMaxBytes,
          uploadUrlTtlS,
          putWindowS,
          linkTtlS: overrides.photos?.linkTtlS ?? defaultMediaOptions.linkTtlS,
          maxWaitingPhotos: overrides.photos?.maxWaitingPhotos,
        },
      })
    : undefined;
  const photoSweeper = storage
    ? createPhotoSweeper({ db: database.db, storage, log, putWindowS, intervalMs: overrides.photos?.sweepIntervalMs })
    : undefined;
  photoSweeper?.start();
  if (photoSweeper) startup.opened(() => photoSweeper.stop());
  const messages = createMessageService({
    db: database.db,
    reads: database.reads,
    publish,
    limits,
    // Compiled once here: every send and edit then runs them without parsing anything.
    contentRules: createContentRules(config.contentRules ?? defaultContentRulesOptions),
    groupCommit: config.groupCommit,
    media,
    onMessageDeleted: () => photoSweeper?.soon(),
    // The hub exists by the time a send is stored (it is made below, before the port listens).
    onContacts: (userA, userB) => void hub.contactsChanged(userA, userB, true),
  });
  // The suspensions in force, for connects (no query each); the hub is made below, before a socket can come.
  const suspensions = createSuspensionWatch({
    db: database.db,
    log,
    onSuspended: (userId) => hub.closeSocketsOfSuspended(userId),
    refreshMs: overrides.suspensionsRefreshMs,
  });
  const hub = createHub({
    db: database.db,
    reads: database.reads,
    bus,
    presence,
    chats,
    messages,
    stats,
    log,
    heartbeatIntervalMs: overrides.heartbeatIntervalMs ?? Limits.heartbeatIntervalMs,
    typingGate:
      redis && config.redis
        ? createRedisTypingGate(redis, config.redis.keyPrefix, overrides.typingIntervalMs ?? Limits.typingIntervalMs)
        : createMemoryTypingGate(overrides.typingIntervalMs ?? Limits.typingIntervalMs),
    slowConsumerBytes: overrides.slowConsumerBytes ?? Limits.slowConsumerBytes,
    replayPage: overrides.replayPage,
    presenceLeaveGraceMs: overrides.presenceLeaveGraceMs,
    socketLimits: overrides.socketLimits,
    telemetry,
    onSuspension: suspensions.changed,
  });
  await startup.step("hub", hub.start());
  await startup.step("suspensions", suspensions.start());
  startup.opened(() => suspensions.stop());
  startup.opened(() => hub.shutdown(0));
  // Listing changes to their chats (chat_updated), here and for fan-outs another instance left unfinished.
  const listingFanout = createListingFanout({ db: database.db, publish, log });
  listingFanout.start();
  startup.opened(() => listingFanout.stop());
  /** A suspension stored here (or lifted): every instance is to know, and the user's sockets to close (4003). */
  const suspensionChanged = (userId: number, until: number | null | "lifted") => {
    suspensions.changed(userId, until);
    publishSuspension(bus, userId, until).catch((error) => {
      stats.errorsTotal += 1;
      log.warn(
        { err: error, user: userId },
        "could not publish a suspension's change: the other instances read it within 5 s",
      );
    });
  };
  // Erasures of people (CONTRACT §12): requested here, worked a batch at a time by any instance.
  const erasures = createErasures({
    db: database.db,
    publish,
    log,
    sweepPhotos: photoSweeper?.sweepNow,
    onSuspended: (userId) => suspensionChanged(userId, null),
    putWindowS,
  });
  erasures.start();
  startup.opened(() => erasures.stop());
  // MESSAGE_RETENTION_DAYS (CONTRACT §12): old messages, their events and photos, removed by one instance of many.
  const retention = config.messageRetentionDays
    ? createRetention({
        db: database.db,
        log,
        days: config.messageRetentionDays,
        onPhotosReleased: () => photoSweeper?.soon(),
        ...overrides.retention,
      })
    : undefined;
  retention?.start();
  if (retention) startup.opened(() => retention.stop());
  // Webhooks (CONTRACT §9): the queue's counts for stats and metrics always; the lease and the sender when
  // WEBHOOK_URL is set (writes record their webhooks from the lease on, here and on every instance).
  const webhookCounts = createWebhookCounts(database.db);
  const webhookMetrics = createWebhookMetrics(telemetry.registry, webhookCounts);
  const webhooks = config.webhooks
    ? await startup.step(
        "webhooks",
        startWebhooks({
          db: database.db,
          options: config.webhooks,
          log,
          metrics: webhookMetrics,
          // What the sender yields to while the CPU is short: users' frames, both ways, and their API requests.
          activity: () => stats.messagesReceivedTotal + stats.messagesSentTotal + stats.apiRequestsTotal,
        }),
        (started) => started.stop(),
      )
    : undefined;

  const redisReady = redis ? () => succeedsWithin(() => redis.ping(), 1_000) : undefined;
  let shuttingDown = false;
  const isShuttingDown = () => shuttingDown;
  const checkInternalToken = createInternalTokenCheck(config.internalToken);
  const app = createApp({
    log,
    checkInternalToken,
    probes: createProbeRoutes({ bus, database, isShuttingDown, redisReady }),
    ops: createOpsRoutes({
      instanceId: config.instanceId,
      startedAt,
      stats,
      snapshot: hub.snapshot,
      bus,
      database,
      metrics: createMetrics(telemetry.registry, stats, hub.snapshot),
      isShuttingDown,
      redisReady,
      closeGatewaySockets: hub.closeGatewaySockets,
      webhookCounts,
      erasures: readErasureStatus(database.db),
      retention: config.messageRetentionDays
        ? readRetentionStatus(database.db, config.messageRetentionDays)
        : undefined,
    }),
    platform: createPlatformRoutes(
      createPlatformService({
        db: database.db,
        publish,
        fanout: listingFanout,
        onMessageDeleted: () => photoSweeper?.soon(),
        onSuspensionChanged: suspensionChanged,
      }),
    ),
    personalData: createPersonalDataRoutes({
      reads: database.reads,
      requestErasure: (userId) => storing(() => erasures.request(userId)),
      log,
    }),
    webhooks: createWebhookRoutes(database.db),
    api: createApiRoutes({
      db: database.reads,
      chats,
      messages,
      media,
      safety: createSafetyService({
        db: database.db,
        reads: database.reads,
        publish,
        limits,
        // contactsChanged logs its own failures and never rejects.
        onBlockChanged: (blockerId, blockedId, blocked) => void hub.contactsChanged(blockerId, blockedId, !blocked),
      }),
    }),
    files: developmentFiles
      ? createFileRoutes(developmentFiles, config.photos?.uploadMaxBytes ?? defaultMediaOptions.uploadMaxBytes)
      : undefined,
    onRateLimited: () => {
      stats.rateLimitedTotal += 1;
    },
    observeRequest: (request) => {
      if (request.route.startsWith("/api/")) stats.apiRequestsTotal += 1;
      telemetry.observeRequest(request);
    },
  });

  const wss = new WebSocketServer({ noServer: true, maxPayload: Limits.maxFrameBytes, perMessageDeflate: false });
  const server = createAdaptorServer({ fetch: app.fetch }) as Server;
  await startup.beforeListen();
  await listen(server, config.port, config.host);
  startup.done();
  server.on(
    "upgrade",
    createUpgradeHandler({
      wss,
      hub,
      checkInternalToken,
      isShuttingDown,
      connectQueueMax: config.connectQueueMax ?? 256,
      onBusy: () => {
        stats.upgradesRefusedBusyTotal += 1;
      },
      log,
      isSuspended: suspensions.checkConnect,
    }),
  );
  const port = (server.address() as AddressInfo).port;
  log.info({ port, database: database.kind, bus: bus.kind, instance: config.instanceId }, "listings-chat listening");

  return {
    port,
    database,
    sweepPhotos: () => photoSweeper?.sweepNow() ?? Promise.resolve(0),
    runRetention: () => retention?.runNow() ?? Promise.resolve(undefined),
    async stop() {
      shuttingDown = true;
      const closed = new Promise<void>((resolve) => server.close(() => resolve()));
      // At once, beside the sockets' close: its ~2 s must not come after their 8 s.
      const webhooksStopped = webhooks?.stop();
      await hub.shutdown(config.shutdownTimeoutMs);
      await listingFanout.stop();
      await erasures.stop();
      await retention?.stop();
      await photoSweeper?.stop();
      storage?.close();
      await webhooksStopped;
      suspensions.stop();
      server.closeAllConnections();
      await closed;
      await bus.close();
      await redis?.quit().catch(() => {});
      await registration.stop();
      stopPartitionMaintenance();
      await database.close();
    },
  };
}
