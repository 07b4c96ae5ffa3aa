import { DevDefaults } from "@listings-chat/shared";
import {
  ConfigError,
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
import { parsePublicKey } from "./auth/public-key.ts";
import { BASE_PATH_PATTERN } from "./http/base-path.ts";
import { normalizeOrigin } from "./http/cors.ts";
import { parseUpstreamSource } from "./proxy/upstream-discovery.ts";

/**
 * `CHAT_UPSTREAMS`: comma-separated, at least one; each an http(s) base URL (trailing slashes dropped) or
 * `dns+http(s)://<name>:<port>`, a name whose addresses are the instances (proxy/upstream-discovery.ts).
 */
const upstreams = z.string().transform((value, ctx) => {
  const entries = value
    .split(",")
    .map((entry) => entry.trim())
    .filter(Boolean);
  if (entries.length === 0) {
    ctx.addIssue({ code: "custom", message: "needs at least one http:// or https:// URL" });
    return z.NEVER;
  }
  const urls: string[] = [];
  for (const entry of entries) {
    const source = parseUpstreamSource(entry);
    if (!source) {
      ctx.addIssue({
        code: "custom",
        message: `"${entry}" is neither an http:// or https:// base URL nor dns+http://<name>:<port>`,
      });
      return z.NEVER;
    }
    urls.push(source.kind === "fixed" ? source.base : entry);
  }
  return urls;
});

/** A PEM public key; `\n` escapes are accepted so that it fits in one environment line. */
const pem = z
  .string()
  .transform((v) => v.replace(/\\n/g, "\n"))
  .refine(
    (v) => parsePublicKey(v) !== undefined,
    "must be a PEM public key (-----BEGIN PUBLIC KEY-----) of an RSA key (RS256) or a P-256 EC key (ES256)",
  );

/** More workers than this is a typo: a host runs one event loop per core (GATEWAY_WORKERS). */
export const MAX_GATEWAY_WORKERS = 256;

const schema = z.object({
  NODE_ENV: z.enum(["development", "test", "production"]).default("development"),
  GATEWAY_PORT: portNumber.default(3000),
  // Processes serving GATEWAY_PORT together (workers/supervisor.ts); 1: this process serves it alone.
  GATEWAY_WORKERS: wholeNumber(1, MAX_GATEWAY_WORKERS).default(1),
  // No default here: with DEV_AUTH=1 it is 127.0.0.1, else 0.0.0.0 (loadGatewayConfig).
  GATEWAY_HOST: z.string().min(1).optional(),
  CHAT_UPSTREAMS: upstreams.default(["http://127.0.0.1:8086"]),
  CHAT_UPSTREAMS_DNS_REFRESH_MS: wholeNumber(100, 600_000).default(5_000),
  INTERNAL_TOKEN: z.string().min(1).optional(),
  // A mounted Secret: each secret variable not set otherwise is read from the file of its name there, if any.
  SECRETS_DIR: z.string().min(1).optional(),
  JWT_SECRET: z.string().min(1).optional(),
  JWT_PUBLIC_KEY: pem.optional(),
  // The monolith's JSON Web Key Set (RS256 / ES256 keys chosen by the token's kid): keys rotate without a redeploy.
  JWT_JWKS_URL: urlWithProtocol(["https:", "http:"]).optional(),
  JWT_ISSUER: z.string().min(1).optional(),
  JWT_AUDIENCE: z.string().min(1).optional(),
  // 30 days at most: a token meant to live longer is a refresh token, which the gateway never sees.
  JWT_MAX_AGE_SECONDS: wholeNumber(60, 2_592_000).default(86_400),
  WS_TOKEN_SECRET: z.string().min(1).optional(),
  WS_TOKEN_TTL_SECONDS: wholeNumber(5, 3600).default(60),
  REDIS_URL: redisUrlList.optional(),
  REDIS_KEY_PREFIX: z.string().default("listings-chat:"),
  MAX_SOCKETS_PER_USER: wholeNumber(1, 1000).default(10),
  UPSTREAM_CONNECT_TIMEOUT_MS: wholeNumber(50, 60_000).default(2_000),
  UPSTREAM_REQUEST_TIMEOUT_MS: wholeNumber(100, 120_000).default(10_000),
  UPSTREAM_UPGRADES_IN_FLIGHT: wholeNumber(1, 10_000).default(32),
  UPSTREAM_UPGRADE_QUEUE_MAX: wholeNumber(0, 100_000).default(2_048),
  UPSTREAM_UPGRADE_QUEUE_WAIT_MS: wholeNumber(0, 60_000).default(3_000),
  BODY_TIMEOUT_MS: wholeNumber(100, 60_000).default(10_000),
  MAX_REQUESTS_PER_USER: wholeNumber(1, 1000).default(16),
  // Below run-service's hard exit at 9.5 s, so that SIGTERM still ends in exit 0 within 10 s.
  SHUTDOWN_DRAIN_MS: wholeNumber(0, 9_000).default(8_000),
  // Origins of pages on other sites that may call the API (http/commas, e.g. https://www.example.com).
  CORS_ORIGINS: z
    .string()
    .default("")
    .transform((value, ctx) => {
      const origins: string[] = [];
      for (const entry of value
        .split(",")
        .map((e) => e.trim())
        .filter(Boolean)) {
        const origin = normalizeOrigin(entry);
        if (!origin) {
          ctx.addIssue({
            code: "custom",
            message: `"${entry}" is not an origin: write scheme://host[:port], no path, no wildcard`,
          });
          return z.NEVER;
        }
        origins.push(origin);
      }
      return origins;
    }),
  // Every public path under this prefix (`/chat`: /chat/api/v1/chats, /chat/ws/chat …); unset: at the root.
  BASE_PATH: z
    .string()
    .regex(
      BASE_PATH_PATTERN,
      "must be a path prefix like /chat: a leading slash, no trailing slash, segments of letters, digits and . _ ~ - (not . or ..)",
    )
    .optional(),
  DEV_AUTH: z.enum(["0", "1"]).default("0"),
  // How long a dev token lives (DEV_AUTH=1): short ones show a page's token refresh at work.
  DEV_TOKEN_TTL_S: wholeNumber(1, 43_200).default(43_200),
  LOG_LEVEL: z.enum(["fatal", "error", "warn", "info", "debug", "trace", "silent"]).default("info"),
  // OpenTelemetry's own variable names: tracing is off without an endpoint (shared/src/node/tracing.ts).
  OTEL_EXPORTER_OTLP_ENDPOINT: urlWithProtocol(["http:", "https:"]).optional(),
  OTEL_SERVICE_NAME: z.string().min(1).default("gateway"),
});

/** How access tokens from the monolith are verified: exactly one of a shared secret, a public key or a key set. */
export type AccessTokenKey =
  | { kind: "secret"; secret: string }
  | { kind: "public-key"; pem: string }
  | { kind: "jwks"; url: string };

export interface GatewayConfig {
  production: boolean;
  port: number;
  host: string;
  /**
   * GATEWAY_WORKERS: processes serving `port` together, each listening with SO_REUSEPORT when more than 1
   * (workers/supervisor.ts starts them); 1 when not given.
   */
  workers?: number;
  /** The chat instances: base URLs without a trailing slash, or `dns+http(s)://<name>:<port>` to look up. */
  chatUpstreams: string[];
  /** How often `dns+` names are looked up again (CHAT_UPSTREAMS_DNS_REFRESH_MS); 5,000 ms when not given. */
  upstreamDnsRefreshMs?: number;
  internalToken: string;
  /**
   * How the monolith's access tokens are checked: the key, `iss`/`aud` when set (one of them is required in
   * production), and the oldest token accepted, counted from its `iat` (JWT_MAX_AGE_SECONDS).
   */
  accessTokens: { key: AccessTokenKey; issuer?: string; audience?: string; maxAgeSeconds: number };
  wsTokens: { secret: string; ttlSeconds: number };
  redis?: { url: string; keyPrefix: string };
  maxSocketsPerUser: number;
  upstreamConnectTimeoutMs: number;
  /** The whole of a forwarded REST request, pool wait included (504 after). */
  upstreamRequestTimeoutMs: number;
  /**
   * UPSTREAM_UPGRADES_IN_FLIGHT, UPSTREAM_UPGRADE_QUEUE_MAX and UPSTREAM_UPGRADE_QUEUE_WAIT_MS
   * (proxy/upgrade-admission.ts): upgrades at one instance at a time, until it greets them; upgrades
   * waiting for one of those slots; the longest expected wait still worth queueing for. 32, 2,048 and
   * 3,000 ms when not given. With several workers, each has its share of the first two (the instance
   * sees the same number of upgrades at once as from one process).
   */
  upstreamUpgrades?: { inFlightMax: number; queueMax: number; maxWaitMs: number };
  /** How long a client may take to send a request body (408 after). */
  bodyTimeoutMs: number;
  /** REST requests in flight per user at one gateway process (a worker; 429 over it). */
  maxRequestsPerUser: number;
  shutdownDrainMs: number;
  devAuth: boolean;
  /** CORS_ORIGINS: origins of pages on other sites allowed to call the API (http/cors.ts); none by default. */
  corsOrigins: string[];
  /** BASE_PATH: the prefix of every public path (http/base-path.ts); "": the root. */
  basePath: string;
  /** DEV_TOKEN_TTL_S: the lifetime of a dev token (never longer than JWT_MAX_AGE_SECONDS). */
  devTokenTtlSeconds: number;
  logLevel: z.infer<typeof schema>["LOG_LEVEL"];
  /** OTEL_EXPORTER_OTLP_ENDPOINT and OTEL_SERVICE_NAME; tracing is off without an endpoint. */
  tracing?: TracingOptions;
  /** Sentences to print loudly at start-up (development defaults in use). */
  warnings: string[];
}

export { ConfigError };

/** Every variable this service reads (deployment files are checked against it). */
export const GATEWAY_VARIABLES: readonly string[] = Object.keys(schema.shape);

/** Variables that may come from a file instead (`<NAME>_FILE`, shared/src/node/config.ts). */
export const GATEWAY_SECRET_VARIABLES = [
  "INTERNAL_TOKEN",
  "JWT_SECRET",
  "JWT_PUBLIC_KEY",
  // Not a secret, but read like one: the Secret alone then decides how tokens are verified (one of the three).
  "JWT_JWKS_URL",
  "WS_TOKEN_SECRET",
  "REDIS_URL",
] as const;

/** Reads and checks the gateway's variables once; the only reader of the environment. */
export function loadGatewayConfig(env: Record<string, string | undefined>): GatewayConfig {
  const v = parseEnv(schema, withSecretFiles(env, GATEWAY_SECRET_VARIABLES));
  const production = v.NODE_ENV === "production";
  const warnings: string[] = [];
  const keyVariables = (["JWT_SECRET", "JWT_PUBLIC_KEY", "JWT_JWKS_URL"] as const).filter((name) => v[name]);
  if (keyVariables.length > 1) {
    throw new ConfigError(
      `set one of JWT_SECRET, JWT_PUBLIC_KEY and JWT_JWKS_URL, not ${keyVariables.join(" and ")}: the algorithms are pinned by which one is set`,
    );
  }
  // A key set fetched in the clear could be swapped on the way: anyone could then sign in as anyone.
  if (production && v.JWT_JWKS_URL?.startsWith("http:")) {
    throw new ConfigError("JWT_JWKS_URL must be an https:// URL in production: the keys decide who is signed in");
  }
  if (production && v.DEV_AUTH === "1") throw new ConfigError("DEV_AUTH=1 is refused when NODE_ENV=production");
  const secret = (name: string, value: string | undefined, devDefault: string) =>
    requireSecret({ name, value, devDefault, production, warnings });
  const internalToken = secret("INTERNAL_TOKEN", v.INTERNAL_TOKEN, DevDefaults.internalToken);
  if (production && keyVariables.length === 0) {
    throw new ConfigError("JWT_SECRET, JWT_PUBLIC_KEY or JWT_JWKS_URL is required in production");
  }
  // Without either, any token the monolith signs with the same key (a password reset, an e-mail check)
  // would pass for an access token.
  if (production && !v.JWT_AUDIENCE && !v.JWT_ISSUER) {
    throw new ConfigError(
      "JWT_AUDIENCE or JWT_ISSUER is required in production: set it to the aud or iss the monolith puts in its access tokens",
    );
  }
  const jwtSecret =
    v.JWT_PUBLIC_KEY || v.JWT_JWKS_URL ? undefined : secret("JWT_SECRET", v.JWT_SECRET, DevDefaults.jwtSecret);
  const workers = v.GATEWAY_WORKERS;
  // In memory, each worker would count only its own sockets: a user could open workers × the cap.
  if (workers > 1 && !v.REDIS_URL) {
    throw new ConfigError(
      `GATEWAY_WORKERS=${workers} needs REDIS_URL: the workers share each user's socket cap (MAX_SOCKETS_PER_USER) and the used ws-tokens through Redis; set REDIS_URL, or GATEWAY_WORKERS=1`,
    );
  }
  const wsSecret = secret("WS_TOKEN_SECRET", v.WS_TOKEN_SECRET, DevDefaults.wsTokenSecret);
  const key: AccessTokenKey = v.JWT_PUBLIC_KEY
    ? { kind: "public-key", pem: v.JWT_PUBLIC_KEY }
    : v.JWT_JWKS_URL
      ? { kind: "jwks", url: v.JWT_JWKS_URL }
      : { kind: "secret", secret: jwtSecret ?? DevDefaults.jwtSecret };
  if (key.kind === "secret" && key.secret === wsSecret) {
    throw new ConfigError(
      "WS_TOKEN_SECRET must differ from JWT_SECRET: a ws-token must never pass for an access token",
    );
  }
  if (v.DEV_AUTH === "1" && key.kind !== "secret") {
    throw new ConfigError(
      "DEV_AUTH=1 needs JWT_SECRET: dev tokens are signed with it (unset JWT_PUBLIC_KEY and JWT_JWKS_URL in development)",
    );
  }
  return {
    production,
    port: v.GATEWAY_PORT,
    workers,
    // Dev tokens sign in as anyone: a gateway that hands them out is reachable from this machine only, unless told.
    host: v.GATEWAY_HOST ?? (v.DEV_AUTH === "1" ? "127.0.0.1" : "0.0.0.0"),
    chatUpstreams: v.CHAT_UPSTREAMS,
    upstreamDnsRefreshMs: v.CHAT_UPSTREAMS_DNS_REFRESH_MS,
    internalToken,
    accessTokens: { key, issuer: v.JWT_ISSUER, audience: v.JWT_AUDIENCE, maxAgeSeconds: v.JWT_MAX_AGE_SECONDS },
    wsTokens: { secret: wsSecret, ttlSeconds: v.WS_TOKEN_TTL_SECONDS },
    redis: v.REDIS_URL ? { url: v.REDIS_URL, keyPrefix: v.REDIS_KEY_PREFIX } : undefined,
    maxSocketsPerUser: v.MAX_SOCKETS_PER_USER,
    upstreamConnectTimeoutMs: v.UPSTREAM_CONNECT_TIMEOUT_MS,
    upstreamRequestTimeoutMs: v.UPSTREAM_REQUEST_TIMEOUT_MS,
    // The kernel spreads connections evenly over the workers; each admits its share, so an instance is not
    // sent workers × UPSTREAM_UPGRADES_IN_FLIGHT upgrades at once.
    upstreamUpgrades: {
      inFlightMax: Math.ceil(v.UPSTREAM_UPGRADES_IN_FLIGHT / workers),
      queueMax: Math.ceil(v.UPSTREAM_UPGRADE_QUEUE_MAX / workers),
      maxWaitMs: v.UPSTREAM_UPGRADE_QUEUE_WAIT_MS,
    },
    bodyTimeoutMs: v.BODY_TIMEOUT_MS,
    maxRequestsPerUser: v.MAX_REQUESTS_PER_USER,
    shutdownDrainMs: v.SHUTDOWN_DRAIN_MS,
    devAuth: v.DEV_AUTH === "1",
    corsOrigins: v.CORS_ORIGINS,
    basePath: v.BASE_PATH ?? "",
    devTokenTtlSeconds: v.DEV_TOKEN_TTL_S,
    logLevel: v.LOG_LEVEL,
    tracing: { endpoint: v.OTEL_EXPORTER_OTLP_ENDPOINT, serviceName: v.OTEL_SERVICE_NAME },
    warnings,
  };
}
