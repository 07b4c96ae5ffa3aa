import { type ErrorBody, ErrorCode } from "@listings-chat/shared";
import { Hono } from "hono";
import type { Logger } from "pino";

/**
 * PLACEHOLDER gateway. It answers probes and refuses everything else with 501 until the real gateway
 * (JWT check, ws-tokens, WebSocket pipe, REST forwarding) arrives with its own issue. It forwards nothing.
 */
export interface GatewayAppOptions {
  /** Base URLs of the chat instances, without a trailing slash. */
  chatUpstreams: string[];
  log?: Logger;
  /** How long `/ready` waits for an upstream's `/health` (default 1 s). */
  readyTimeoutMs?: number;
  /** True once SIGTERM arrived: `/ready` answers 503 so that balancers stop sending traffic. */
  isShuttingDown?: () => boolean;
}

export const GatewayErrorCode = {
  notImplemented: "not_implemented",
  upstreamUnavailable: "upstream_unavailable",
} as const;

const errorBody = (code: string, message: string): ErrorBody => ({ error: { code, message } });

/**
 * True for `/internal` and anything below it, however the client spells it (percent-encoding, repeated
 * slashes, upper case), so that no spelling ever gets past the gateway to an ops endpoint.
 */
export function isInternalPath(path: string): boolean {
  let decoded = path;
  try {
    decoded = decodeURIComponent(path);
  } catch {
    // Malformed percent-encoding: judge the raw path.
  }
  const normalized = decoded.replace(/[/\\]+/g, "/").toLowerCase();
  return normalized === "/internal" || normalized.startsWith("/internal/");
}

/** Whether `baseUrl/health` answers 2xx within `timeoutMs`. */
async function answersHealth(baseUrl: string, timeoutMs: number): Promise<boolean> {
  try {
    const res = await fetch(`${baseUrl}/health`, { signal: AbortSignal.timeout(timeoutMs), redirect: "manual" });
    await res.body?.cancel().catch(() => {});
    return res.ok;
  } catch {
    return false;
  }
}

export function createGatewayApp({
  chatUpstreams,
  log,
  readyTimeoutMs = 1_000,
  isShuttingDown = () => false,
}: GatewayAppOptions) {
  const app = new Hono();

  app.use(async (c, next) => {
    const started = performance.now();
    await next();
    // c.req.path has no query string, so no token is ever logged.
    log?.debug(
      { method: c.req.method, path: c.req.path, status: c.res.status, ms: Math.round(performance.now() - started) },
      "request",
    );
  });

  // Ops endpoints live on the chat port only; the public entry never exposes them.
  app.use(async (c, next) => {
    if (isInternalPath(c.req.path)) return c.json(errorBody(ErrorCode.notFound, "not found"), 404);
    await next();
  });

  app.get("/health", (c) => c.json({ status: "ok" }));

  app.get("/ready", async (c) => {
    if (isShuttingDown()) return c.json(errorBody(ErrorCode.shuttingDown, "the gateway is shutting down"), 503);
    const answers = await Promise.all(chatUpstreams.map((url) => answersHealth(url, readyTimeoutMs)));
    const reachable = answers.filter(Boolean).length;
    if (reachable > 0) return c.json({ status: "ready", upstreams: { reachable, total: chatUpstreams.length } });
    return c.json(
      errorBody(
        GatewayErrorCode.upstreamUnavailable,
        `no chat instance answered /health within ${readyTimeoutMs} ms (${chatUpstreams.length} configured)`,
      ),
      503,
    );
  });

  app.notFound((c) =>
    c.json(
      errorBody(
        GatewayErrorCode.notImplemented,
        `${c.req.method} ${c.req.path} is not implemented: the gateway (JWT check, ws-tokens, WebSocket and REST forwarding) ` +
          "arrives with its own issue; meanwhile call listings-chat directly with X-Internal-Token and X-User-Id",
      ),
      501,
    ),
  );

  app.onError((error, c) => {
    log?.error({ err: error, method: c.req.method, path: c.req.path }, "unhandled error");
    return c.json(errorBody(ErrorCode.internal, "internal error: the request was not completed, retry later"), 500);
  });

  return app;
}
