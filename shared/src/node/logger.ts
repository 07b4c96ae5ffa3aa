import { type DestinationStream, type Logger, type LoggerOptions as PinoOptions, pino } from "pino";
import { currentRequestId } from "./request-id.ts";

export interface LoggerOptions {
  name: string;
  level: string;
  /** Human-readable lines for development; JSON lines otherwise. */
  pretty: boolean;
  /** Where JSON lines go instead of stdout (tests read them). */
  destination?: DestinationStream;
}

/** Paths that may carry secrets; pino prints "[redacted]" instead. */
const REDACT = [
  "req.headers.authorization",
  "req.headers.cookie",
  'req.headers["x-internal-token"]',
  "token",
  "access_token",
];

/**
 * A pino logger for a service. Log URLs with `redactUrl` so that no query string (and no token) is ever
 * written. A line written while a request is handled carries its id (`req_id`, request-id.ts).
 */
export function createLogger({ name, level, pretty, destination }: LoggerOptions): Logger {
  const options: PinoOptions<never> = {
    name,
    level,
    mixin() {
      const id = currentRequestId();
      return id === undefined ? {} : { req_id: id };
    },
    redact: { paths: REDACT, censor: "[redacted]" },
    ...(pretty
      ? { transport: { target: "pino-pretty", options: { colorize: true, translateTime: "HH:MM:ss.l" } } }
      : {}),
  };
  return destination && !pretty ? pino(options, destination) : pino(options);
}

/** The path of a request URL without its query string, which may carry a ws-token. */
export function redactUrl(url: string | undefined): string {
  if (!url) return "";
  const q = url.indexOf("?");
  return q === -1 ? url : `${url.slice(0, q)}?[redacted]`;
}

export type { Logger };
