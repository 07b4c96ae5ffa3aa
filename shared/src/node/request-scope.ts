import type { IncomingMessage } from "node:http";
import type { Context, MiddlewareHandler } from "hono";
import { matchedRoutes } from "hono/route";
import type { Logger } from "pino";
import { REQUEST_ID_HEADER, requestIdFrom, withRequestId } from "./request-id.ts";
import { flatHeaders, inSpan, SpanKind } from "./tracing.ts";

export interface RequestScopeOptions {
  log?: Logger;
  /**
   * Called once a request is answered, with its route's pattern (`/api/v1/chats/:id/messages`, never the
   * path itself, so that metrics keep a bounded set of labels), method, status and duration.
   */
  observe?: (answered: { route: string; method: string; status: number; seconds: number }) => void;
}

/** Asked every few seconds by probes and Prometheus: their lines are debug. */
const QUIET_PATHS = new Set(["/health", "/ready", "/metrics", "/internal/chat/ready"]);

/** The pattern of the route that answered (the last one matched that is not a catch-all middleware). */
function routePattern(c: Context): string {
  const routes = matchedRoutes(c);
  for (let i = routes.length - 1; i >= 0; i--) {
    const path = routes[i]?.path;
    if (path && path !== "/*" && path !== "*") return path;
  }
  return "unmatched";
}

/**
 * The first middleware of both services' apps: the request's id (taken or made, answered in
 * `X-Request-Id`, and in every log line written while it is handled), its duration, and its log line.
 */
export function requestScope({ log, observe }: RequestScopeOptions): MiddlewareHandler {
  return async (c, next) => {
    const id = requestIdFrom(c.req.header(REQUEST_ID_HEADER));
    const started = performance.now();
    // A server span, the child of the caller's (the gateway's traceparent) when there is one.
    const headers: Record<string, string> = {};
    c.req.raw.headers.forEach((value, name) => {
      headers[name] = value;
    });
    await withRequestId(id, () =>
      inSpan(
        c.req.method,
        { kind: SpanKind.SERVER, headers, attributes: { "http.request.method": c.req.method } },
        async (span) => {
          await next();
          const route = routePattern(c);
          span.updateName(`${c.req.method} ${route}`);
          span.setAttributes({ "http.route": route, "http.response.status_code": c.res.status, "request.id": id });
        },
      ),
    );
    try {
      c.res.headers.set("X-Request-Id", id);
    } catch {
      // An immutable Response (a redirect): it goes out without the header.
    }
    const seconds = (performance.now() - started) / 1_000;
    observe?.({ route: routePattern(c), method: c.req.method, status: c.res.status, seconds });
    // An access log line per request, at info; probes and scrapes at debug, or they would drown it.
    // c.req.path carries no query string: nothing secret reaches the log.
    const level = QUIET_PATHS.has(c.req.path) ? "debug" : "info";
    withRequestId(id, () =>
      log?.[level](
        { method: c.req.method, path: c.req.path, status: c.res.status, ms: Math.round(seconds * 1_000) },
        "request",
      ),
    );
  };
}

/**
 * What `requestScope` is to a request, for an upgrade (not seen by the app): `work` runs with the
 * upgrade's id (taken or made, in every log line written meanwhile) and in a server span, the child of the
 * caller's `traceparent` when there is one.
 */
export function upgradeScope<T>(req: IncomingMessage, work: (id: string) => Promise<T>): Promise<T> {
  const id = requestIdFrom(req.headers[REQUEST_ID_HEADER]);
  return withRequestId(id, () =>
    inSpan("WS upgrade", { kind: SpanKind.SERVER, headers: flatHeaders(req), attributes: { "request.id": id } }, () =>
      work(id),
    ),
  );
}
