import { ErrorCode, errorBody, Limits } from "@listings-chat/shared";
import { presentedInternalToken, type RequestScopeOptions, requestScope } from "@listings-chat/shared/node";
import { Hono } from "hono";
import { bodyLimit } from "hono/body-limit";
import type { Logger } from "pino";
import { ChatError, RateLimitedError } from "./errors.ts";

export interface AppParts {
  log: Logger;
  checkInternalToken: (presented: string | undefined) => boolean;
  /** Open to probes without the token: `/health`, `/ready`. */
  probes: Hono;
  /** Behind the internal token. */
  ops: Hono;
  /** The platform's /internal routes (CONTRACT §8), behind the internal token. */
  platform: Hono;
  /** A person's data (CONTRACT §12): export and erasure, behind the internal token. */
  personalData: Hono;
  /** The dead webhook deliveries (CONTRACT §9), behind the internal token. */
  webhooks: Hono;
  api: Hono<any>;
  /** The development storage's signed URLs (STORAGE=fs, media/file-routes.ts), forwarded by the gateway. */
  files?: Hono;
  onRateLimited: () => void;
  /** Told of every answered request (REST latency per route, ops/metrics.ts). */
  observeRequest?: RequestScopeOptions["observe"];
}

/** Routes of the chat port, wired from their parts, with one place that turns errors into answers. */
export function createApp({
  log,
  checkInternalToken,
  probes,
  ops,
  platform,
  personalData,
  webhooks,
  api,
  files,
  onRateLimited,
  observeRequest,
}: AppParts) {
  const app = new Hono();

  app.use(requestScope({ log, observe: observeRequest }));
  app.route("/", probes);
  app.use(async (c, next) => {
    const presented = presentedInternalToken({
      "x-internal-token": c.req.header("x-internal-token"),
      authorization: c.req.header("authorization"),
    });
    if (!checkInternalToken(presented)) {
      return c.json(errorBody(ErrorCode.unauthorized, "missing or wrong X-Internal-Token"), 401);
    }
    await next();
  });
  app.route("/", ops);
  // The gateway refuses big bodies first; this keeps the instance safe from anything else on its port.
  const limitBody = bodyLimit({
    maxSize: Limits.maxRequestBodyBytes,
    onError: (c) =>
      c.json(errorBody(ErrorCode.payloadTooLarge, `the request body is over ${Limits.maxRequestBodyBytes} bytes`), 413),
  });
  app.use("/internal/chat/*", limitBody);
  app.route("/", platform);
  app.route("/", personalData);
  app.route("/", webhooks);
  app.use("/api/v1/*", limitBody);
  app.route("/api/v1", api);
  // Bodies up to UPLOAD_MAX_BYTES, checked by the route against the size its URL signs.
  if (files) app.route("/", files);

  app.notFound((c) => c.json(errorBody(ErrorCode.notFound, `no route for ${c.req.method} ${c.req.path}`), 404));
  app.onError((error, c) => {
    if (error instanceof RateLimitedError) {
      onRateLimited();
      c.header("Retry-After", String(Math.ceil(error.retryAfterMs / 1000)));
    }
    if (error instanceof ChatError) {
      if (error.status === 503) log.error({ err: error.cause }, "storage unavailable");
      return c.json(errorBody(error.code, error.message), error.status);
    }
    log.error({ err: error, method: c.req.method, path: c.req.path }, "unhandled error");
    return c.json(errorBody(ErrorCode.internal, "internal error: the request was not completed, retry later"), 500);
  });
  return app;
}
