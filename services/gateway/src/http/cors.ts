/**
 * Cross-origin use of the API (`CORS_ORIGINS`): a monolith's frontend on another origin than the gateway's.
 * hono's `cors` answers for the listed origins only, credentials included; any other origin gets no
 * `Access-Control-Allow-*` header at all, and its preflight a 403 that says why (a browser then refuses the
 * request, and the client reports it instead of polling forever). Preflights are answered before
 * authentication: browsers send them without credentials. The cookie rule of CONTRACT §2 is not loosened: a
 * cookie-authenticated change from another site is still refused, so a listed origin sends `Authorization`.
 */
import { ErrorCode, errorBody } from "@listings-chat/shared";
import type { MiddlewareHandler } from "hono";
import { cors } from "hono/cors";

/** What a page on a listed origin may send and read. */
const ALLOWED_HEADERS = ["Authorization", "Content-Type", "X-Request-Id"];
const EXPOSED_HEADERS = ["Retry-After", "X-Request-Id"];
const ALLOWED_METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"];
/** How long a browser may keep a preflight's answer. */
const PREFLIGHT_MAX_AGE_S = 600;

/** `scheme://host[:port]` exactly as a browser sends it in `Origin`, or undefined when `value` is not one. */
export function normalizeOrigin(value: string): string | undefined {
  let url: URL;
  try {
    url = new URL(value);
  } catch {
    return undefined;
  }
  if (url.protocol !== "http:" && url.protocol !== "https:") return undefined;
  // An origin has no path, query, fragment or credentials; "https://a.example/" is forgiven its slash.
  if ((url.pathname !== "/" && url.pathname !== "") || url.search || url.hash || url.username || url.password) {
    return undefined;
  }
  // One origin each: no wildcard (a browser never sends one, and "*" with credentials is refused by browsers).
  if (url.hostname.includes("*")) return undefined;
  return url.origin;
}

/** The middleware for `origins` (normalized), or undefined when none is listed (same origin only). */
export function createCors(origins: readonly string[]): MiddlewareHandler | undefined {
  if (origins.length === 0) return undefined;
  const listed = new Set(origins);
  const allow = cors({
    origin: (origin) => (listed.has(origin) ? origin : null),
    allowMethods: ALLOWED_METHODS,
    allowHeaders: ALLOWED_HEADERS,
    exposeHeaders: EXPOSED_HEADERS,
    credentials: true,
    maxAge: PREFLIGHT_MAX_AGE_S,
  });
  return async function corsForListedOrigins(c, next) {
    c.header("Vary", "Origin", { append: true });
    const origin = c.req.header("origin");
    if (origin !== undefined && listed.has(origin)) return allow(c, next);
    const preflight = c.req.method === "OPTIONS" && c.req.header("access-control-request-method") !== undefined;
    if (preflight) {
      return c.json(
        errorBody(ErrorCode.forbidden, `the origin ${origin ?? "(none)"} is not in CORS_ORIGINS of this gateway`),
        403,
      );
    }
    await next();
  };
}
