import { hostname } from "node:os";
import { DevDefaults } from "@listings-chat/shared";
import {
  parseEnv,
  portNumber,
  redisUrlList,
  requireSecret,
  type TracingOptions,
  urlWithProtocol,
  wholeNumber,
  withSecretFiles,
} from "@listings-chat/shared/node";
import { z } from "zod";
import type { DatabaseOptions } from "./db/client.ts";
import type { StorageConfig } from "./media/open-storage.ts";
import type { GroupCommitOptions } from "./messages/group-commit.ts";
import { isPhoneRegion, normalizeSiteDomain } from "./safety/content-detectors.ts";
import type { ContentRulesOptions } from "./safety/content-rules.ts";
import { loadContentRulesFile } from "./safety/content-rules-file.ts";
import { isWebhookSecret, type WebhookOptions } from "./webhooks/options.ts";

const schema = z.object({
  NODE_ENV: z.enum(["development", "test", "production"]).default("development"),
  CHAT_PORT: portNumber.default(8086),
  CHAT_HOST: z.string().min(1).optional(),
  DATABASE_URL: urlWithProtocol(["postgres:", "postgresql:"]).optional(),
  // Where migrations run, when not DATABASE_URL: a session-mode connection (straight to PostgreSQL, or a
  // pooler in session mode), never a transaction pooler, which breaks the advisory lock and session settings.
  MIGRATION_DATABASE_URL: urlWithProtocol(["postgres:", "postgresql:"]).optional(),
  DATA_DIR: z.string().min(1).default("./.data"),
  REDIS_URL: redisUrlList.optional(),
  REDIS_KEY_PREFIX: z.string().default("listings-chat:"),
  INTERNAL_TOKEN: z.string().min(1).optional(),
  // A mounted Secret: each secret variable not set otherwise is read from the file of its name there, if any.
  SECRETS_DIR: z.string().min(1).optional(),
  LOG_LEVEL: z.enum(["fatal", "error", "warn", "info", "debug", "trace", "silent"]).default("info"),
  // OpenTelemetry's own variable names: tracing is off without an endpoint (shared/src/node/tracing.ts).
  OTEL_EXPORTER_OTLP_ENDPOINT: urlWithProtocol(["http:", "https:"]).optional(),
  OTEL_SERVICE_NAME: z.string().min(1).default("listings-chat"),
  INSTANCE_ID: z.string().min(1).default(`${hostname()}-${process.pid}`),
  // Below run-service's hard exit at 9.5 s, so that SIGTERM still ends in exit 0 within 10 s.
  SHUTDOWN_TIMEOUT_MS: wholeNumber(0, 9_000).default(8_000),
  SEND_LIMIT_PER_MINUTE: wholeNumber(1, 1_000_000).default(60),
  // The other writes' limits per user (CONTRACT §10); raised only by benchmarks and tests.
  EDIT_LIMIT_PER_MINUTE: wholeNumber(1, 1_000_000).default(30),
  CHAT_OPEN_LIMIT_PER_HOUR: wholeNumber(1, 1_000_000).default(20),
  REPORT_LIMIT_PER_HOUR: wholeNumber(1, 1_000_000).default(10),
  UPLOAD_LIMIT_PER_HOUR: wholeNumber(1, 1_000_000).default(30),
  DATABASE_POOL_SIZE: wholeNumber(1, 500).default(10),
  // Page reads are short and CPU-bound: a few connections keep PostgreSQL's cores busy, and more only make
  // the sends' backends wait behind them (bench:big, 2 cores: a send under 20 parallel reads p99 43 ms
  // with 2, 78 ms with 5).
  DATABASE_READ_POOL_SIZE: wholeNumber(1, 500).default(2),
  DATABASE_READ_TIMEOUT_MS: wholeNumber(100, 60_000).default(5_000),
  SEND_BATCH_WAIT_MS: wholeNumber(0, 50).default(0),
  SEND_BATCH_MAX: wholeNumber(1, 1_000).default(64),
  // Accepted sockets waiting for their greeting (~1 ms of work each here): past this, upgrades get a quick
  // 503 with Retry-After instead of queueing behind work the gateway would time out on.
  CONNECT_QUEUE_MAX: wholeNumber(1, 100_000).default(256),
  // CONTRACT §8: chats only on listings the platform registered; by default on in production, off elsewhere.
  LISTINGS_REQUIRED: z.enum(["0", "1"], { error: "must be 0 or 1" }).optional(),
  // Content rules (CONTRACT §10, safety/content-rules.ts): the rules file (read and checked below), the
  // country whose national form of phone numbers the `phone` rule knows, and our own site's hosts.
  CONTENT_RULES_FILE: z.string().min(1).optional(),
  DEFAULT_PHONE_REGION: z
    .string()
    .transform((region) => region.trim().toUpperCase())
    .refine(isPhoneRegion, "must be a country code that libphonenumber knows (ISO 3166-1 alpha-2: US, GB, DE)")
    .default("US"),
  // No default site: the service cannot guess the platform's domain, and a flag is never shown to users, so
  // until it is set every link is flagged rather than none.
  SITE_DOMAINS: z
    .string()
    .default("")
    .transform((list, ctx) => {
      const domains: string[] = [];
      for (const entry of list.split(",").filter((e) => e.trim())) {
        const domain = normalizeSiteDomain(entry);
        if (!domain) {
          ctx.addIssue({
            code: "custom",
            message: `${JSON.stringify(entry.trim())} is not a host name (e.g. example.com)`,
          });
          return z.NEVER;
        }
        domains.push(domain);
      }
      return domains;
    }),
  // Webhooks (CONTRACT §9): off without a URL. The rest tunes the sender (webhooks/options.ts).
  WEBHOOK_URL: urlWithProtocol(["http:", "https:"]).optional(),
  WEBHOOK_SECRET: z
    .string()
    .trim()
    .refine(isWebhookSecret, "must be whsec_ followed by a base64 key of 24 to 64 bytes (Standard Webhooks)")
    .optional(),
  WEBHOOK_TIMEOUT_MS: wholeNumber(100, 60_000).default(5_000),
  WEBHOOK_MAX_AGE_S: wholeNumber(1, 30 * 86_400).default(86_400),
  NOTIFY_UNREAD_AFTER_S: wholeNumber(1, 30 * 86_400).default(60),
  WEBHOOK_CONCURRENCY: wholeNumber(1, 256).default(16),
  WEBHOOK_RETRY_MIN_MS: wholeNumber(10, 3_600_000).default(5_000),
  WEBHOOK_RETRY_MAX_MS: wholeNumber(10, 86_400_000).default(3_600_000),
  WEBHOOK_POLL_MS: wholeNumber(20, 60_000).default(500),
  WEBHOOK_KEEP_DELIVERED_S: wholeNumber(0, 30 * 86_400).default(86_400),
  WEBHOOK_YIELD_MAX_S: wholeNumber(0, 3_600).default(30),
  // Photos (CONTRACT §11): `fs` (development default, under DATA_DIR) or `s3` (any S3-compatible store).
  STORAGE: z.enum(["fs", "s3"], { error: "must be fs or s3" }).optional(),
  S3_ENDPOINT: urlWithProtocol(["http:", "https:"]).optional(),
  // Where browsers reach the store when it is not S3_ENDPOINT (compose: the service's name inside, a published
  // port outside); presigned URLs are signed for it.
  S3_PUBLIC_ENDPOINT: urlWithProtocol(["http:", "https:"]).optional(),
  S3_BUCKET: z.string().min(1).optional(),
  S3_REGION: z.string().min(1).default("us-east-1"),
  S3_ACCESS_KEY_ID: z.string().min(1).optional(),
  S3_SECRET_ACCESS_KEY: z.string().min(1).optional(),
  S3_FORCE_PATH_STYLE: z.enum(["0", "1"], { error: "must be 0 or 1" }).default("0"),
  UPLOAD_MAX_BYTES: wholeNumber(1, 100 * 1024 * 1024).default(10 * 1024 * 1024),
  // Images decoded at once by one instance (media/images.ts): each holds its decoded pixels in memory.
  PHOTO_CONCURRENCY: wholeNumber(1, 64).default(2),
  // CONTRACT §12: messages, their events and photos older than this many days are deleted (personal-data/
  // retention.ts). Unset, or set empty (compose's `${MESSAGE_RETENTION_DAYS:-}`): kept forever.
  MESSAGE_RETENTION_DAYS: z.preprocess(
    (value) => (typeof value === "string" && value.trim() === "" ? undefined : value),
    wholeNumber(1, 36_500, "a whole number of days from 1 to 36500 (unset: messages are kept forever)").optional(),
  ),
});

export interface ChatConfig {
  production: boolean;
  port: number;
  host: string;
  database: DatabaseOptions;
  redis?: { url: string; keyPrefix: string };
  internalToken: string;
  logLevel: z.infer<typeof schema>["LOG_LEVEL"];
  /** OTEL_EXPORTER_OTLP_ENDPOINT and OTEL_SERVICE_NAME; tracing is off without an endpoint. */
  tracing?: TracingOptions;
  instanceId: string;
  shutdownTimeoutMs: number;
  /** Messages a user may send per minute, REST and WS together (CONTRACT §1; raised by benchmarks and tests). */
  sendLimitPerMinute?: number;
  /** EDIT_LIMIT_PER_MINUTE and the other writes' limits (limits/rate-limiter.ts); the contract's when not given. */
  writeLimits?: { editsPerMinute: number; chatOpensPerHour: number; reportsPerHour: number; uploadsPerHour: number };
  /** How sends are gathered into transactions (messages/group-commit.ts). */
  groupCommit?: GroupCommitOptions;
  /** CONNECT_QUEUE_MAX (hub/upgrade.ts); 256 when not given. */
  connectQueueMax?: number;
  /**
   * LISTINGS_REQUIRED (CONTRACT §8): a chat may be opened only on a listing the platform registered, with its
   * seller. Off when not given (development); `1` by default in production.
   */
  listingsRequired?: boolean;
  /** CONTENT_RULES_FILE (read and checked), DEFAULT_PHONE_REGION, SITE_DOMAINS; the shipped rules when not given. */
  contentRules?: ContentRulesOptions;
  /** WEBHOOK_URL and the sender's settings (CONTRACT §9); undefined: no webhooks, nothing recorded. */
  webhooks?: WebhookOptions;
  /** STORAGE and its settings (CONTRACT §11); undefined: photos are off (production without STORAGE). */
  storage?: StorageConfig;
  /** UPLOAD_MAX_BYTES, PHOTO_CONCURRENCY. */
  photos?: { uploadMaxBytes: number; concurrency: number };
  /** MESSAGE_RETENTION_DAYS (CONTRACT §12); undefined: messages are kept forever. */
  messageRetentionDays?: number;
  /** Sentences to print loudly at start-up (development defaults in use). */
  warnings: string[];
}

import { ConfigError } from "@listings-chat/shared/node";

export { ConfigError };

/** Every variable this service reads (deployment files are checked against it). */
export const CHAT_VARIABLES: readonly string[] = Object.keys(schema.shape);

/** Variables that may come from a file instead (`<NAME>_FILE`, shared/src/node/config.ts). */
export const CHAT_SECRET_VARIABLES = [
  "INTERNAL_TOKEN",
  "DATABASE_URL",
  "MIGRATION_DATABASE_URL",
  "REDIS_URL",
  "WEBHOOK_SECRET",
  // It may carry credentials (basic auth, a token in the query).
  "WEBHOOK_URL",
  "S3_ACCESS_KEY_ID",
  "S3_SECRET_ACCESS_KEY",
] as const;

/** Reads and checks the chat service's variables once; the only reader of the environment. */
export function loadChatConfig(env: Record<string, string | undefined>): ChatConfig {
  const v = parseEnv(schema, withSecretFiles(env, CHAT_SECRET_VARIABLES));
  const production = v.NODE_ENV === "production";
  const warnings: string[] = [];
  if (production && !v.DATABASE_URL) {
    throw new ConfigError("DATABASE_URL is required in production (PGlite serves development only)");
  }
  if (v.MIGRATION_DATABASE_URL && !v.DATABASE_URL) {
    throw new ConfigError(
      "MIGRATION_DATABASE_URL is set without DATABASE_URL: set DATABASE_URL too, or unset MIGRATION_DATABASE_URL (PGlite migrates itself)",
    );
  }
  const internalToken = requireSecret({
    name: "INTERNAL_TOKEN",
    value: v.INTERNAL_TOKEN,
    devDefault: DevDefaults.internalToken,
    production,
    warnings,
  });
  if (v.WEBHOOK_RETRY_MAX_MS < v.WEBHOOK_RETRY_MIN_MS) {
    throw new ConfigError(
      `WEBHOOK_RETRY_MAX_MS (${v.WEBHOOK_RETRY_MAX_MS}) is below WEBHOOK_RETRY_MIN_MS (${v.WEBHOOK_RETRY_MIN_MS}): raise it or lower the minimum`,
    );
  }
  let webhooks: WebhookOptions | undefined;
  if (v.WEBHOOK_URL) {
    if (production && !v.WEBHOOK_SECRET) {
      throw new ConfigError(
        "WEBHOOK_SECRET (or WEBHOOK_SECRET_FILE) is required in production when WEBHOOK_URL is set",
      );
    }
    if (production && v.WEBHOOK_SECRET === DevDefaults.webhookSecret) {
      throw new ConfigError(
        "WEBHOOK_SECRET is the development secret: generate one (whsec_ and 32 random bytes in base64)",
      );
    }
    if (!v.WEBHOOK_SECRET) {
      warnings.push(
        "WEBHOOK_SECRET is not set: webhooks are signed with the development secret. Never do this in production.",
      );
    }
    webhooks = {
      url: v.WEBHOOK_URL,
      secret: v.WEBHOOK_SECRET ?? DevDefaults.webhookSecret,
      timeoutMs: v.WEBHOOK_TIMEOUT_MS,
      maxAgeS: v.WEBHOOK_MAX_AGE_S,
      notifyUnreadAfterS: v.NOTIFY_UNREAD_AFTER_S,
      concurrency: v.WEBHOOK_CONCURRENCY,
      retryMinMs: v.WEBHOOK_RETRY_MIN_MS,
      retryMaxMs: v.WEBHOOK_RETRY_MAX_MS,
      pollMs: v.WEBHOOK_POLL_MS,
      keepDeliveredS: v.WEBHOOK_KEEP_DELIVERED_S,
      yieldMaxS: v.WEBHOOK_YIELD_MAX_S,
    };
  }
  return {
    production,
    storage: storageConfig(v, production, warnings),
    photos: { uploadMaxBytes: v.UPLOAD_MAX_BYTES, concurrency: v.PHOTO_CONCURRENCY },
    port: v.CHAT_PORT,
    // With the development token (public in this repository) the port stays on this machine unless asked.
    host: v.CHAT_HOST ?? (v.INTERNAL_TOKEN ? "0.0.0.0" : "127.0.0.1"),
    database: v.DATABASE_URL
      ? {
          url: v.DATABASE_URL,
          ...(v.MIGRATION_DATABASE_URL ? { migrationUrl: v.MIGRATION_DATABASE_URL } : {}),
          poolSize: v.DATABASE_POOL_SIZE,
          readPool: { size: v.DATABASE_READ_POOL_SIZE, statementMs: v.DATABASE_READ_TIMEOUT_MS },
        }
      : { dataDir: v.DATA_DIR },
    redis: v.REDIS_URL ? { url: v.REDIS_URL, keyPrefix: v.REDIS_KEY_PREFIX } : undefined,
    internalToken,
    logLevel: v.LOG_LEVEL,
    tracing: { endpoint: v.OTEL_EXPORTER_OTLP_ENDPOINT, serviceName: v.OTEL_SERVICE_NAME },
    instanceId: v.INSTANCE_ID,
    shutdownTimeoutMs: v.SHUTDOWN_TIMEOUT_MS,
    sendLimitPerMinute: v.SEND_LIMIT_PER_MINUTE,
    writeLimits: {
      editsPerMinute: v.EDIT_LIMIT_PER_MINUTE,
      chatOpensPerHour: v.CHAT_OPEN_LIMIT_PER_HOUR,
      reportsPerHour: v.REPORT_LIMIT_PER_HOUR,
      uploadsPerHour: v.UPLOAD_LIMIT_PER_HOUR,
    },
    groupCommit: { maxWaitMs: v.SEND_BATCH_WAIT_MS, maxBatch: v.SEND_BATCH_MAX },
    connectQueueMax: v.CONNECT_QUEUE_MAX,
    listingsRequired: (v.LISTINGS_REQUIRED ?? (production ? "1" : "0")) === "1",
    contentRules: {
      rules: loadContentRulesFile(v.CONTENT_RULES_FILE),
      phoneRegion: v.DEFAULT_PHONE_REGION as ContentRulesOptions["phoneRegion"],
      siteDomains: v.SITE_DOMAINS,
    },
    webhooks,
    messageRetentionDays: v.MESSAGE_RETENTION_DAYS,
    warnings,
  };
}

/**
 * STORAGE: `fs` by default in development; in production it must be `s3` (the development storage's bytes
 * pass through the gateway, which serves them in development only), and photos are off while it is unset.
 */
function storageConfig(v: z.infer<typeof schema>, production: boolean, warnings: string[]): StorageConfig | undefined {
  const kind = v.STORAGE ?? (production ? undefined : "fs");
  if (kind === undefined) {
    warnings.push("STORAGE is not set: photos are off (uploads get 503). Set STORAGE=s3 and the S3_ variables.");
    return undefined;
  }
  if (kind === "fs") {
    if (production) {
      throw new ConfigError(
        "STORAGE=fs serves development only (the gateway serves its files outside production): use s3",
      );
    }
    return { kind, dataDir: v.DATA_DIR };
  }
  const missing = (["S3_BUCKET", "S3_ACCESS_KEY_ID", "S3_SECRET_ACCESS_KEY"] as const).filter((name) => !v[name]);
  if (missing.length > 0) {
    throw new ConfigError(`STORAGE=s3 needs ${missing.join(", ")} (or their _FILE twins)`);
  }
  return {
    kind,
    endpoint: v.S3_ENDPOINT,
    publicEndpoint: v.S3_PUBLIC_ENDPOINT,
    bucket: v.S3_BUCKET!,
    region: v.S3_REGION,
    accessKeyId: v.S3_ACCESS_KEY_ID!,
    secretAccessKey: v.S3_SECRET_ACCESS_KEY!,
    forcePathStyle: v.S3_FORCE_PATH_STYLE === "1",
  };
}
