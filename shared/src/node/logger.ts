import { type Logger, pino } from "pino";

export interface LoggerOptions {
  name: string;
  level: string;
  /** Human-readable lines for development; JSON lines otherwise. */
  pretty: boolean;
}

/** Paths that may carry secrets; pino prints "[redacted]" instead. */
const REDACT = [
  "req.headers.authorization",
  "req.headers.cookie",
  'req.headers["x-internal-token"]',
  "token",
  "access_token",
];

/** A pino logger for a service. Log URLs with `redactUrl` so that no query string (and no token) is ever written. */
export function createLogger({ name, level, pretty }: LoggerOptions): Logger {
  return pino({
    name,
    level,
    redact: { paths: REDACT, censor: "[redacted]" },
    ...(pretty
      ? { transport: { target: "pino-pretty", options: { colorize: true, translateTime: "HH:MM:ss.l" } } }
      : {}),
  });
}

/** The path of a request URL without its query string, which may carry a ws-token. */
export function redactUrl(url: string | undefined): string {
  if (!url) return "";
  const q = url.indexOf("?");
  return q === -1 ? url : `${url.slice(0, q)}?[redacted]`;
}

export type { Logger };
