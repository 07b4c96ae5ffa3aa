/**
 * BASE_PATH: every public path of the gateway under one prefix (`/chat/api/v1/chats`, `/chat/ws/chat` …), so
 * that a monolith's existing edge can route one prefix here. The gateway takes the prefix off at its door and
 * works on the paths of the contract inside; answers that name a path (the ws-token's `ws_url`, the OpenAPI
 * document's `servers`) put it back. The probes and `/metrics` stay at the root as well, where Kubernetes and
 * Prometheus ask for them.
 */
import { ErrorCode, errorBody } from "@listings-chat/shared";

/** A prefix of path segments, without a trailing slash: `/chat`, `/marketplace/chat`; no `.` or `..` segment. */
export const BASE_PATH_PATTERN = /^(\/(?!\.+(?:\/|$))[A-Za-z0-9._~-]+)+$/;

/** Paths answered at the root whatever BASE_PATH is: what the platform's own probes and scrapers ask. */
const ROOT_PATHS = new Set(["/health", "/ready", "/metrics"]);

/**
 * The request as the app sees it: with `basePath` taken off its path. A request outside the prefix gets a 404
 * naming it (a probe at the root passes as it is); `basePath` alone redirects to `basePath/` (the demo page's
 * relative links need the slash).
 */
export function enterBasePath(request: Request, basePath: string): Request | Response {
  if (!basePath) return request;
  const url = new URL(request.url);
  const path = url.pathname;
  if (path === basePath && (request.method === "GET" || request.method === "HEAD")) {
    return new Response(null, { status: 308, headers: { location: `${basePath}/${url.search}` } });
  }
  if (!path.startsWith(`${basePath}/`)) {
    if (ROOT_PATHS.has(path)) return request;
    return Response.json(
      errorBody(ErrorCode.notFound, `no route for ${request.method} ${path}: this gateway serves under ${basePath}/`),
      { status: 404 },
    );
  }
  url.pathname = path.slice(basePath.length);
  return new Request(url, {
    method: request.method,
    headers: request.headers,
    body: request.body,
    signal: request.signal,
    // A streamed body (the request's own) needs it; REST bodies are read whole later, within their limits.
    duplex: "half",
  } as RequestInit);
}
