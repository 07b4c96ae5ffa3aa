import { DevDefaults, MIN_SECRET_LENGTH } from "@listings-chat/shared";
import { z } from "zod";

/**
 * A TCP port, digits only: an empty value (`GATEWAY_PORT=` in an .env file) is refused instead of becoming
 * port 0, a random port nobody knows; `0x10` or `1e3` are refused too.
 */
const port = z
  .string()
  .trim()
  .regex(/^\d{1,5}$/, "must be a port number from 0 to 65535")
  .transform(Number)
  .refine((n) => n <= 65535, "must be a port number from 0 to 65535");

/** `CHAT_UPSTREAMS`: comma-separated http(s) base URLs, at least one; trailing slashes are dropped. */
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
    let parsed: URL | undefined;
    try {
      parsed = new URL(entry);
    } catch {
      parsed = undefined;
    }
    if (!parsed || !["http:", "https:"].includes(parsed.protocol) || parsed.search || parsed.hash) {
      ctx.addIssue({ code: "custom", message: `"${entry}" is not an http:// or https:// base URL` });
      return z.NEVER;
    }
    urls.push(entry.replace(/\/+$/, ""));
  }
  return urls;
});

const schema = z.object({
  NODE_ENV: z.enum(["development", "test", "production"]).default("development"),
  GATEWAY_PORT: port.default(3000),
  GATEWAY_HOST: z.string().min(1).default("0.0.0.0"),
  CHAT_UPSTREAMS: upstreams.default(["http://127.0.0.1:8086"]),
  INTERNAL_TOKEN: z.string().min(1).optional(),
  DEV_AUTH: z.enum(["0", "1"]).default("0"),
  LOG_LEVEL: z.enum(["fatal", "error", "warn", "info", "debug", "trace", "silent"]).default("info"),
});

export interface GatewayConfig {
  production: boolean;
  port: number;
  host: string;
  /** Base URLs of the chat instances, without a trailing slash. */
  chatUpstreams: string[];
  internalToken: string;
  devAuth: boolean;
  logLevel: z.infer<typeof schema>["LOG_LEVEL"];
  /** Sentences to print loudly at start-up (development defaults in use). */
  warnings: string[];
}

/** A variable that stops start-up; its message is the one line to print. */
export class ConfigError extends Error {
  override name = "ConfigError";
}

/** Reads and checks the gateway's variables once; the only reader of the environment. */
export function loadGatewayConfig(env: Record<string, string | undefined>): GatewayConfig {
  const parsed = schema.safeParse(env);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    throw new ConfigError(`invalid ${String(issue?.path[0] ?? "variable")}: ${issue?.message ?? "bad value"}`);
  }
  const v = parsed.data;
  const production = v.NODE_ENV === "production";
  const warnings: string[] = [];
  if (production) {
    if (!v.INTERNAL_TOKEN) throw new ConfigError("INTERNAL_TOKEN is required in production");
    if (v.INTERNAL_TOKEN.length < MIN_SECRET_LENGTH || v.INTERNAL_TOKEN === DevDefaults.internalToken) {
      throw new ConfigError(`INTERNAL_TOKEN is too weak: use at least ${MIN_SECRET_LENGTH} random characters`);
    }
    if (v.DEV_AUTH === "1") throw new ConfigError("DEV_AUTH=1 is refused when NODE_ENV=production");
  } else if (!v.INTERNAL_TOKEN) {
    warnings.push("INTERNAL_TOKEN is not set: using the development default. Never do this in production.");
  }
  return {
    production,
    port: v.GATEWAY_PORT,
    host: v.GATEWAY_HOST,
    chatUpstreams: v.CHAT_UPSTREAMS,
    internalToken: v.INTERNAL_TOKEN ?? DevDefaults.internalToken,
    devAuth: v.DEV_AUTH === "1",
    logLevel: v.LOG_LEVEL,
    warnings,
  };
}
