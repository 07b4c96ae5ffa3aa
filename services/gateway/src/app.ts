import { ErrorCode, errorBody } from "@listings-chat/shared";
import { presentedInternalToken, type RequestScopeOptions, requestScope } from "@listings-chat/shared/node";
import { type Context, Hono } from "hono";
import type { Logger } from "pino";
import { type AccessTokenVerifier, presentedAccessToken } from "./auth/access-token.ts";
import { AuthError, KeySetUnavailableError } from "./auth/errors.ts";
import type { WsTokens } from "./auth/ws-token.ts";
import { createDemoPageRoutes } from "./dev/demo-page.ts";
import { devTokenBody } from "./dev/dev-token.ts";
import { createAsyncApiRoutes } from "./docs/asyncapi.ts";
import { createDocsRoutes } from "./docs/openapi.ts";
import { GatewayErrorCode } from "./error-codes.ts";
import { createCors } from "./http/cors.ts";
import type { MetricsSource } from "./metrics.ts";
import { WS_PATH } from "./proxy/ws-upgrade.ts";

export interface GatewayAppParts {
  /** The instances' base URLs (for `/ready`), or a function that gives the current ones (they change with DNS). */
  chatUpstreams: readonly string[] | (() => readonly string[]);
  /** Told of every answered request (REST latency per route, metrics.ts). */
  observeRequest?: RequestScopeOptions["observe"];
  verifyAccessToken: AccessTokenVerifier;
  wsTokens: WsTokens;
  /** Forwards a chat REST request as the given user; answers every failure, never throws. */
  forward: (request: Request, userId: number) => Promise<Response>;
  /**
   * Forwards a development storage URL (`/files/…`, STORAGE=fs; CONTRACT §11), whose signature is its only
   * credential. Given outside production only: a production gateway never passes photo bytes.
   */
  forwardDevelopmentFile?: (request: Request) => Promise<Response>;
  /** The internal token, sent to instances by `/ready`: an instance that refuses it makes the gateway unready. */
  internalToken: string;
  /** Whether Redis answers, when the gateway uses one (`/ready` is false without it). */
  redisReady?: () => Promise<boolean>;
  /** Present only with DEV_AUTH=1. */
  signDevToken?: (userId: number) => string;
  /** What `/metrics` answers (all workers' sum in a worker, metrics.ts). */
  metrics: MetricsSource;
  checkInternalToken: (presented: string | undefined) => boolean;
  log?: Logger;
  /** How long `/ready` waits for an instance's readiness and Redis (default 1 s). */
  readyTimeoutMs?: number;
  /** True once SIGTERM arrived: `/ready` answers 503 so that balancers stop sending traffic. */
  isShuttingDown?: () => boolean;
  /** CORS_ORIGINS: pages on these origins may call `/api/…` (http/cors.ts). */
  corsOrigins?: readonly string[];
  /**
   * BASE_PATH (http/base-path.ts): the app sees paths without it (server.ts takes it off); answers that name a
   * public path (the ws-token's `ws_url`, the OpenAPI `servers`) put it back.
   */
  basePath?: string;
}

type GatewayEnv = { Variables: { userId: number } };

/** Where the gateway asks an instance whether it is ready; the path needs the internal token. */
export const INSTANCE_READY_PATH = "/internal/chat/ready";

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

/**
 * Guards the `access_token` cookie against cross-site request forgery: the browser attaches a cookie to
 * requests other sites trigger, so a change (not GET/HEAD) authenticated by it must not come from another
 * site (Sec-Fetch-Site) and must carry a JSON body, which a plain HTML form cannot send. Applied whenever
 * the token came from the cookie, whatever else the request carries (a browser adds `Authorization: Basic`
 * by itself on sites behind basic auth).
 */
function sameSiteCookieRequest(request: Request): boolean {
  if (request.method === "GET" || request.method === "HEAD") return true;
  const site = request.headers.get("sec-fetch-site");
  if (site !== null && site !== "same-origin" && site !== "same-site" && site !== "none") return false;
  const hasBody = request.headers.has("transfer-encoding") || Number(request.headers.get("content-length") ?? 0) > 0;
  return !hasBody || /^application\/json\s*(;|$)/i.test(request.headers.get("content-type") ?? "");
}

type InstanceReadiness = "ready" | "not_ready" | "misconfigured";

/** What `baseUrl` says about its readiness when asked with the internal token, within `timeoutMs`. */
async function instanceReadiness(
  baseUrl: string,
  internalToken: string,
  timeoutMs: number,
): Promise<InstanceReadiness> {
  try {
    const res = await fetch(`${baseUrl}${INSTANCE_READY_PATH}`, {
      headers: { "x-internal-token": internalToken },
      signal: AbortSignal.timeout(timeoutMs),
      redirect: "manual",
    });
    await res.body?.cancel().catch(() => {});
    if (res.status === 401) return "misconfigured";
    return res.ok ? "ready" : "not_ready";
  } catch {
    return "not_ready";
  }
}

/** The gateway's HTTP routes (CONTRACT §3), wired from their parts; upgrades are handled beside it. */
export function createGatewayApp(parts: GatewayAppParts) {
  const { log, readyTimeoutMs = 1_000, isShuttingDown = () => false, basePath = "" } = parts;
  const app = new Hono<GatewayEnv>();

  app.use(requestScope({ log, observe: parts.observeRequest }));

  // Every API answer (errors and the instances' answers too) is private and typed: no cache keeps it, and no
  // browser sniffs it into something it is not (CONTRACT §10).
  app.use(async (c, next) => {
    await next();
    if (!c.req.path.startsWith("/api/")) return;
    c.header("X-Content-Type-Options", "nosniff");
    c.header("Cache-Control", "no-store");
  });

  // Pages on the listed origins (CORS_ORIGINS): answered before authentication, which preflights do not carry.
  const crossOrigin = createCors(parts.corsOrigins ?? []);
  if (crossOrigin) app.use("/api/*", crossOrigin);
  // A development upload is PUT from the page, as it would be to S3 (whose bucket has CORS rules of its own).
  if (crossOrigin && parts.forwardDevelopmentFile) app.use("/files/*", crossOrigin);

  // Ops endpoints live on the chat port only; the public entry never exposes them.
  app.use(async (c, next) => {
    if (isInternalPath(c.req.path)) return c.json(errorBody(ErrorCode.notFound, "not found"), 404);
    await next();
  });

  app.get("/health", (c) => c.json({ status: "ok" }));

  app.get("/ready", async (c) => {
    if (isShuttingDown()) return c.json(errorBody(ErrorCode.shuttingDown, "the gateway is shutting down"), 503);
    const bases = typeof parts.chatUpstreams === "function" ? parts.chatUpstreams() : parts.chatUpstreams;
    const [answers, redisReady] = await Promise.all([
      Promise.all(bases.map((url) => instanceReadiness(url, parts.internalToken, readyTimeoutMs))),
      parts.redisReady ? parts.redisReady() : Promise.resolve(true),
    ]);
    const total = bases.length;
    if (!redisReady) {
      return c.json(
        errorBody(GatewayErrorCode.redisUnavailable, `Redis did not answer within ${readyTimeoutMs} ms`),
        503,
      );
    }
    const reachable = answers.filter((a) => a === "ready").length;
    if (reachable > 0) return c.json({ status: "ready", upstreams: { reachable, total } });
    if (answers.includes("misconfigured")) {
      log?.error("chat instances refuse the internal token: INTERNAL_TOKEN differs between gateway and chat");
      return c.json(
        errorBody(
          GatewayErrorCode.upstreamMisconfigured,
          "the chat instances refuse this gateway's INTERNAL_TOKEN: it must be the same on both services",
        ),
        503,
      );
    }
    return c.json(
      errorBody(
        GatewayErrorCode.upstreamUnavailable,
        `no chat instance answered ${INSTANCE_READY_PATH} as ready within ${readyTimeoutMs} ms (${total} configured)`,
      ),
      503,
    );
  });

  app.get("/metrics", async (c) => {
    const presented = presentedInternalToken({
      "x-internal-token": c.req.header("x-internal-token"),
      authorization: c.req.header("authorization"),
    });
    if (!parts.checkInternalToken(presented)) {
      return c.json(errorBody(ErrorCode.unauthorized, "missing or wrong X-Internal-Token"), 401);
    }
    c.header("Content-Type", parts.metrics.contentType);
    return c.body(await parts.metrics.metrics());
  });

  /** The caller's access token, verified: Bearer header or `access_token` cookie. */
  const authenticated = async (c: Context<GatewayEnv>, next: () => Promise<void>) => {
    const presented = presentedAccessToken(c.req.header("authorization"), c.req.header("cookie"));
    if (!presented) {
      return c.json(errorBody(ErrorCode.unauthorized, "sign in: send Authorization: Bearer <access token>"), 401);
    }
    if (presented.fromCookie && !sameSiteCookieRequest(c.req.raw)) {
      return c.json(
        errorBody(
          ErrorCode.forbidden,
          "a cookie-authenticated change must come from this site with a JSON body: or send Authorization: Bearer",
        ),
        403,
      );
    }
    try {
      c.set("userId", await parts.verifyAccessToken(presented.token));
    } catch (error) {
      if (error instanceof AuthError) return c.json(errorBody(error.code, error.message), 401);
      if (error instanceof KeySetUnavailableError) {
        c.header("Retry-After", String(error.retryAfterSeconds));
        return c.json(errorBody(error.code, error.message), 503);
      }
      throw error;
    }
    await next();
  };

  const issueWsToken = (c: Context<GatewayEnv>) => {
    const { token, expiresIn } = parts.wsTokens.issue(c.get("userId"));
    c.header("Cache-Control", "no-store");
    return c.json({ token, expires_in: expiresIn, ws_url: `${basePath}${WS_PATH}` });
  };
  app.post("/api/v2/ws-token", authenticated, issueWsToken);
  app.get("/api/v2/ws-token", authenticated, issueWsToken);

  const forward = (c: Context<GatewayEnv>) => parts.forward(c.req.raw, c.get("userId"));
  for (const path of [
    "/api/v1/chats",
    "/api/v1/chats/*",
    "/api/v1/messages/*",
    "/api/v1/events",
    // Blocks and reports (CONTRACT §10).
    "/api/v1/users/:id/block",
    "/api/v1/blocks",
    "/api/v1/reports",
    // Photos (CONTRACT §11).
    "/api/v1/uploads",
  ]) {
    app.all(path, authenticated, forward);
  }
  // A photo's 302: a development link is a path on this gateway, which the browser must be sent to below
  // BASE_PATH (an S3 link is absolute and passes as it is).
  app.get("/api/v1/attachments/:id", authenticated, async (c) => {
    const answer = await forward(c);
    const location = answer.headers.get("location");
    if (!location?.startsWith("/") || !basePath) return answer;
    const headers = new Headers(answer.headers);
    headers.set("location", `${basePath}${location}`);
    return new Response(answer.body, { status: answer.status, headers });
  });
  if (parts.forwardDevelopmentFile) {
    const forwardFile = parts.forwardDevelopmentFile;
    app.on(["GET", "HEAD", "PUT"], "/files/*", (c) => forwardFile(c.req.raw));
  }

  if (parts.signDevToken) {
    const sign = parts.signDevToken;
    app.post("/api/dev/token", async (c) => {
      const parsed = devTokenBody.safeParse(await c.req.json().catch(() => undefined));
      if (!parsed.success) {
        return c.json(errorBody(ErrorCode.validationFailed, 'send {"user_id": <positive integer>}'), 400);
      }
      c.header("Cache-Control", "no-store");
      return c.json({ access_token: sign(parsed.data.user_id) });
    });
  }

  // The API description is public: no access token needed to read it.
  app.route("/", createDocsRoutes({ devAuth: parts.signDevToken !== undefined, basePath }));
  app.route("/", createAsyncApiRoutes({ basePath }));

  // The demo chat page, like the dev token: development with DEV_AUTH=1 only.
  if (parts.signDevToken) app.route("/", createDemoPageRoutes());

  app.notFound((c) => c.json(errorBody(ErrorCode.notFound, `no route for ${c.req.method} ${c.req.path}`), 404));

  app.onError((error, c) => {
    log?.error({ err: error, method: c.req.method, path: c.req.path }, "unhandled error");
    return c.json(errorBody(ErrorCode.internal, "internal error: the request was not completed, retry later"), 500);
  });

  return app;
}
