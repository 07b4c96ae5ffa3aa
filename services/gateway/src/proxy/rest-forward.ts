import { Readable } from "node:stream";
import { errorBody } from "@listings-chat/shared";
import type { Logger } from "pino";
import { errors as undiciErrors } from "undici";
import type { Upstreams } from "./upstreams.ts";

/** Request headers worth passing to the chat service; identity and cookies never are. */
const FORWARDED_REQUEST_HEADERS = ["content-type", "content-length", "accept", "accept-language", "x-request-id"];
/** Hop-by-hop headers of the instance's answer, which belong to that connection only. */
const HOP_BY_HOP = new Set([
  "connection",
  "keep-alive",
  "transfer-encoding",
  "upgrade",
  "proxy-connection",
  "te",
  "trailer",
]);

const errorResponse = (status: number, code: string, message: string) =>
  Response.json(errorBody(code, message), { status });

/** Failures where nothing reached the instance, so another instance may take the request. */
function failedBeforeSending(error: unknown): boolean {
  const code = (error as { code?: string }).code;
  return (
    error instanceof undiciErrors.ConnectTimeoutError ||
    code === "ECONNREFUSED" ||
    code === "EHOSTUNREACH" ||
    code === "ENOTFOUND" ||
    code === "EAI_AGAIN"
  );
}

const timedOut = (error: unknown) =>
  error instanceof undiciErrors.HeadersTimeoutError ||
  error instanceof undiciErrors.BodyTimeoutError ||
  error instanceof undiciErrors.ConnectTimeoutError;

export interface RestForwardOptions {
  upstreams: Upstreams;
  internalToken: string;
  log: Logger;
}

/**
 * Forwards a chat REST request to an instance with undici (a keep-alive Pool per instance), body
 * streamed both ways, as `userId` on the internal hop. Instance failures become 502, time-outs 504.
 */
export function createRestForwarder({ upstreams, internalToken, log }: RestForwardOptions) {
  return async (request: Request, userId: number): Promise<Response> => {
    const url = new URL(request.url);
    const headers: Record<string, string> = { "x-user-id": String(userId), "x-internal-token": internalToken };
    for (const name of FORWARDED_REQUEST_HEADERS) {
      const value = request.headers.get(name);
      if (value !== null) headers[name] = value;
    }
    const source = request.body;
    let bodyTouched = false;
    // Wrapped so that we know whether any byte left: only an untouched body may go to another instance.
    const body = () =>
      source
        ? Readable.from(
            (async function* () {
              bodyTouched = true;
              yield* source as unknown as AsyncIterable<Uint8Array>;
            })(),
          )
        : undefined;

    let lastError: unknown;
    for (const upstream of upstreams.order()) {
      try {
        const answer = await upstream.pool.request({
          method: request.method as "GET",
          path: url.pathname + url.search,
          headers,
          body: body(),
        });
        upstreams.markUp(upstream);
        const responseHeaders = new Headers();
        for (const [name, value] of Object.entries(answer.headers)) {
          if (value === undefined || HOP_BY_HOP.has(name)) continue;
          for (const v of Array.isArray(value) ? value : [value]) responseHeaders.append(name, v);
        }
        const stream = answer.statusCode === 204 || answer.statusCode === 304 ? null : Readable.toWeb(answer.body);
        return new Response(stream as ReadableStream | null, { status: answer.statusCode, headers: responseHeaders });
      } catch (error) {
        lastError = error;
        if (failedBeforeSending(error) && !bodyTouched) {
          upstreams.markDown(upstream);
          continue;
        }
        log.warn(
          { err: error, upstream: upstream.base, path: url.pathname },
          "chat instance failed a forwarded request",
        );
        if (timedOut(error))
          return errorResponse(504, "upstream_timeout", "the chat service did not answer in time: retry");
        return errorResponse(502, "upstream_failed", "the chat service failed to answer: retry");
      }
    }
    log.warn({ err: lastError, path: url.pathname }, "no chat instance reachable for a forwarded request");
    if (timedOut(lastError)) return errorResponse(504, "upstream_timeout", "no chat instance answered in time: retry");
    return errorResponse(502, "upstream_unavailable", "no chat instance is reachable: retry shortly");
  };
}
