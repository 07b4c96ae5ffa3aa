import { hostname } from "node:os";
import { DevDefaults, MIN_SECRET_LENGTH } from "@listings-chat/shared";
import { z } from "zod";
import type { DatabaseOptions } from "./db/client.ts";

/** A whole number written in digits: `z.coerce` would read an empty value as 0. */
const wholeNumber = (max: number, what: string) =>
  z
    .string()
    .trim()
    .regex(/^\d{1,9}$/, `must be ${what}`)
    .transform(Number)
    .pipe(z.number().max(max, `must be ${what}`));
const port = wholeNumber(65535, "a port number (0-65535)");
const url = (protocols: string[]) =>
  z.string().refine(
    (v) => {
      try {
        return protocols.includes(new URL(v).protocol);
      } catch {
        return false;
      }
    },
    `must be a ${protocols.join(" or ")}// URL`,
  );

const schema = z.object({
  NODE_ENV: z.enum(["development", "test", "production"]).default("development"),
  CHAT_PORT: port.default(8086),
  CHAT_HOST: z.string().min(1).default("0.0.0.0"),
  DATABASE_URL: url(["postgres:", "postgresql:"]).optional(),
  DATA_DIR: z.string().min(1).default("./.data"),
  REDIS_URL: url(["redis:", "rediss:"]).optional(),
  REDIS_KEY_PREFIX: z.string().default("listings-chat:"),
  INTERNAL_TOKEN: z.string().min(1).optional(),
  LOG_LEVEL: z.enum(["fatal", "error", "warn", "info", "debug", "trace", "silent"]).default("info"),
  INSTANCE_ID: z.string().min(1).default(`${hostname()}-${process.pid}`),
  SHUTDOWN_TIMEOUT_MS: wholeNumber(60_000, "milliseconds from 0 to 60000").default(8_000),
});

export interface ChatConfig {
  production: boolean;
  port: number;
  host: string;
  database: DatabaseOptions;
  redis?: { url: string; keyPrefix: string };
  internalToken: string;
  logLevel: z.infer<typeof schema>["LOG_LEVEL"];
  instanceId: string;
  shutdownTimeoutMs: number;
  /** Sentences to print loudly at start-up (development defaults in use). */
  warnings: string[];
}

/** A variable that stops start-up; its message is the one line to print. */
export class ConfigError extends Error {
  override name = "ConfigError";
}

/** Reads and checks the chat service's variables once; the only reader of the environment. */
export function loadChatConfig(env: Record<string, string | undefined>): ChatConfig {
  const parsed = schema.safeParse(env);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    throw new ConfigError(`invalid ${String(issue?.path[0] ?? "variable")}: ${issue?.message ?? "bad value"}`);
  }
  const v = parsed.data;
  const production = v.NODE_ENV === "production";
  const warnings: string[] = [];
  if (production) {
    if (!v.DATABASE_URL)
      throw new ConfigError("DATABASE_URL is required in production (PGlite serves development only)");
    if (!v.INTERNAL_TOKEN) throw new ConfigError("INTERNAL_TOKEN is required in production");
    if (v.INTERNAL_TOKEN.length < MIN_SECRET_LENGTH || v.INTERNAL_TOKEN === DevDefaults.internalToken) {
      throw new ConfigError(`INTERNAL_TOKEN is too weak: use at least ${MIN_SECRET_LENGTH} random characters`);
    }
  } else if (!v.INTERNAL_TOKEN) {
    warnings.push("INTERNAL_TOKEN is not set: using the development default. Never do this in production.");
  }
  return {
    production,
    port: v.CHAT_PORT,
    host: v.CHAT_HOST,
    database: v.DATABASE_URL ? { url: v.DATABASE_URL } : { dataDir: v.DATA_DIR },
    redis: v.REDIS_URL ? { url: v.REDIS_URL, keyPrefix: v.REDIS_KEY_PREFIX } : undefined,
    internalToken: v.INTERNAL_TOKEN ?? DevDefaults.internalToken,
    logLevel: v.LOG_LEVEL,
    instanceId: v.INSTANCE_ID,
    shutdownTimeoutMs: v.SHUTDOWN_TIMEOUT_MS,
    warnings,
  };
}
