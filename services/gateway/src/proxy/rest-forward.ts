import { ErrorCode, errorBody, Limits } from "@listings-chat/shared";
import { currentRequestId, injectTraceContext, REQUEST_ID_HEADER, requestIdFrom } from "@listings-chat/shared/node";
import type { Logger } from "pino";
import { errors as undiciErrors } from "undici";
import { GatewayErrorCode, MISCONFIGURED_MESSAGE } from "../error-codes.ts";
import { BodyRejected, bodyTooLarge, readBody } from "./request-body.ts";
import type { Upstreams } from "./upstreams.ts";
import { createUserConcurrency } from "./user-concurrency.ts";

/** Request headers worth passing to the chat service; identity and cookies never are. */
const FORWARDED_REQUEST_HEADERS = ["content-type", "accept", "accept-language"];
/** Hop-by-hop headers of the instance's answer, which belong to that connection only (RFC 9110 §7.6.1). */
const HOP_BY_HOP = new Set([
  "connection",
  "keep-alive",
  "transfer-encoding",
  "upgrade",
  "proxy-connection",
  "proxy-authenticate",
  "proxy-authorization",
  "te",
  "trailer",
  // The body is handed on whole, so its length is the gateway's to write.
  "content-length",
]);
/** An instance's answer larger than this is a fault, not something to hold in memory. */
const MAX_RESPONSE_BYTES = 16 * 1024 * 1024;

/**
 * The only paths forwarded: the chat API's, in plain characters. Percent-encoding, dot segments and
 * backslashes have no place in them, and refusing them means no spelling can be read differently by the
 * instance than by the gateway.
 */
const FORWARDABLE_PATH = /^\/api\/v1(\/[A-Za-z0-9_-]+)*\/?$/;

/** The development storage's signed URLs (STORAGE=fs, CONTRACT §11): an object's kind and id, nothing else. */
const DEVELOPMENT_FILE_PATH = /^\/files\/(uploads|photos|thumbs)\/[A-Za-z0-9_-]{1,64}$/;
/** The largest development upload forwarded (the chat service checks the exact size its URL signs). */
const DEVELOPMENT_FILE_MAX_BYTES = 100 * 1024 * 1024;

const errorResponse = (status: number, code: string, message: string, headers: Record<string, string> = {}) =>
  Response.json(errorBody(code, message), { status, headers });

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

export interface RestForwardOptions {
  upstreams: Upstreams;
  internalToken: string;
  log: Logger;
  /** The whole forwarded request: waiting for a pool connection, the instance's answer and its body (504 after). */
  requestTimeoutMs: number;
  /** How long a client may take to send its body (408 after). */
  bodyTimeoutMs: number;
  /** Requests in flight per user at this gateway (429 over it). */
  maxRequestsPerUser: number;
  /** Told of each way an instance failed a forwarded request (metrics.ts counts them). */
  onUpstreamFailure?: (outcome: RestUpstreamFailure) => void;
}

/** How an instance failed a forwarded request: no answer in time, unreachable, a broken or oversized answer, another INTERNAL_TOKEN. */
export type RestUpstreamFailure = "timeout" | "unreachable" | "failed" | "too_large" | "misconfigured";

export type RestForwarder = ReturnType<typeof createRestForwarder>;

/**
 * 413 or 408. No `Connection: close`: Node would destroy the socket as soon as the answer is written, and a
 * client still sending would get a reset that can discard the answer before it reads it. Instead the server
 * reads and drops the rest of the body (at most 64 MiB, at most 500 ms: @hono/node-server's drain) and then
 * closes: the client reads its 413 first.
 */
function bodyRefused(error: BodyRejected): Response {
  const code = error.status === 413 ? ErrorCode.payloadTooLarge : ErrorCode.requestTimeout;
  return errorResponse(error.status, code, error.message);
}

/**
 * Forwards a chat REST request to an instance with undici (a keep-alive Pool per instance), as `userId` on
 * the internal hop. The request body is read whole first (64 KiB at most, within `bodyTimeoutMs`), so that
 * a slow or huge upload never holds a pool connection; the answer is read whole too, so that a client that
 * leaves cannot meet a half-written stream. The client's abort and the total deadline both cancel the
 * upstream request. Instance failures become 502, time-outs 504, and nothing a client or an instance does
 * can throw out of here.
 */
export function createRestForwarder(options: RestForwardOptions) {
  const { upstreams, internalToken, log } = options;
  const failed = (outcome: RestUpstreamFailure) => options.onUpstreamFailure?.(outcome);
  const concurrency = createUserConcurrency(options.maxRequestsPerUser);

  /** As `userId`; without one (a development file, whose URL's signature is its credential), as nobody. */
  async function forward(request: Request, userId: number | undefined, body: Buffer | undefined): Promise<Response> {
    const url = new URL(request.url);
    const headers: Record<string, string> = { "x-internal-token": internalToken };
    if (userId !== undefined) headers["x-user-id"] = String(userId);
    for (const name of FORWARDED_REQUEST_HEADERS) {
      const value = request.headers.get(name);
      if (value !== null) headers[name] = value;
    }
    // The id this gateway gave the request (the client's when it was sane), so that both logs tell one story.
    headers[REQUEST_ID_HEADER] = currentRequestId() ?? requestIdFrom(request.headers.get(REQUEST_ID_HEADER));
    injectTraceContext(headers);
    const deadline = AbortSignal.timeout(options.requestTimeoutMs);
    const signal = AbortSignal.any([request.signal, deadline]);
    const timedOut = () =>
      errorResponse(
        504,
        GatewayErrorCode.upstreamTimeout,
        `the chat service did not answer within ${options.requestTimeoutMs} ms: retry`,
      );

    let lastError: unknown;
    for (const upstream of upstreams.order()) {
      try {
        const answer = await upstream.pool.request({
          method: request.method as "GET",
          path: url.pathname + url.search,
          headers,
          body,
          signal,
        });
        upstreams.markUp(upstream);
        const chunks: Buffer[] = [];
        let size = 0;
        for await (const chunk of answer.body as AsyncIterable<Buffer>) {
          size += chunk.length;
          if (size > MAX_RESPONSE_BYTES) {
            answer.body.destroy();
            log.error({ upstream: upstream.base, path: url.pathname }, "chat instance answered more than 16 MiB");
            failed("too_large");
            return errorResponse(502, GatewayErrorCode.upstreamFailed, "the chat service's answer was too large");
          }
          chunks.push(chunk);
        }
        if (answer.statusCode === 401) {
          log.error(
            { upstream: upstream.base, path: url.pathname },
            "chat instance refused the internal token: INTERNAL_TOKEN differs between gateway and chat",
          );
          failed("misconfigured");
          return errorResponse(502, GatewayErrorCode.upstreamMisconfigured, MISCONFIGURED_MESSAGE);
        }
        const responseHeaders = new Headers();
        const connectionTokens = String(answer.headers.connection ?? "")
          .split(",")
          .map((t) => t.trim().toLowerCase());
        for (const [name, value] of Object.entries(answer.headers)) {
          if (value === undefined || HOP_BY_HOP.has(name) || connectionTokens.includes(name)) continue;
          for (const v of Array.isArray(value) ? value : [value]) responseHeaders.append(name, v);
        }
        const noBody = answer.statusCode === 204 || answer.statusCode === 304 || request.method === "HEAD";
        return new Response(noBody ? null : Buffer.concat(chunks), {
          status: answer.statusCode,
          headers: responseHeaders,
        });
      } catch (error) {
        lastError = error;
        if (request.signal.aborted && !deadline.aborted) {
          // The client left: nobody reads this answer; the upstream request was cancelled with it.
          return errorResponse(499, GatewayErrorCode.clientClosed, "the client closed the request");
        }
        if (deadline.aborted) {
          log.warn({ upstream: upstream.base, path: url.pathname }, "forwarded request timed out");
          failed("timeout");
          return timedOut();
        }
        if (failedBeforeSending(error)) {
          upstreams.markDown(upstream);
          failed("unreachable");
          continue;
        }
        log.warn(
          { err: error, upstream: upstream.base, path: url.pathname },
          "chat instance failed a forwarded request",
        );
        if (error instanceof undiciErrors.HeadersTimeoutError || error instanceof undiciErrors.BodyTimeoutError) {
          failed("timeout");
          return timedOut();
        }
        failed("failed");
        return errorResponse(502, GatewayErrorCode.upstreamFailed, "the chat service failed to answer: retry");
      }
    }
    log.warn({ err: lastError, path: url.pathname }, "no chat instance reachable for a forwarded request");
    return errorResponse(502, GatewayErrorCode.upstreamUnavailable, "no chat instance is reachable: retry shortly");
  }

  /**
   * Reads the body (at most `maxBytes`, within `bodyTimeoutMs`) and forwards it: an answer for every outcome, a
   * refused body (413, 408), a client that left while it was read (499), or anything unforeseen (502).
   */
  async function readAndForward(request: Request, userId: number | undefined, maxBytes: number): Promise<Response> {
    try {
      let body: Buffer | undefined;
      try {
        body = await readBody(request, { maxBytes, timeoutMs: options.bodyTimeoutMs });
      } catch (error) {
        if (!(error instanceof BodyRejected)) throw error;
        return bodyRefused(error);
      }
      return await forward(request, userId, body);
    } catch (error) {
      if (request.signal.aborted)
        return errorResponse(499, GatewayErrorCode.clientClosed, "the client closed the request");
      log.error({ err: error, path: new URL(request.url).pathname }, "forwarding failed");
      return errorResponse(502, GatewayErrorCode.upstreamFailed, "the chat service failed to answer: retry");
    }
  }

  return {
    /**
     * A development storage URL (`/files/…`, STORAGE=fs): forwarded without a user, with a body up to the
     * largest upload. The gateway of a production deployment never routes it (app.ts).
     */
    async handleDevelopmentFile(request: Request): Promise<Response> {
      if (!DEVELOPMENT_FILE_PATH.test(new URL(request.url).pathname)) {
        return errorResponse(404, ErrorCode.notFound, "no such file");
      }
      const declared = Number(request.headers.get("content-length") ?? 0);
      if (declared > DEVELOPMENT_FILE_MAX_BYTES) return bodyRefused(bodyTooLarge(DEVELOPMENT_FILE_MAX_BYTES));
      return readAndForward(request, undefined, DEVELOPMENT_FILE_MAX_BYTES);
    },

    async handle(request: Request, userId: number): Promise<Response> {
      if (!FORWARDABLE_PATH.test(new URL(request.url).pathname)) {
        return errorResponse(404, ErrorCode.notFound, "no such chat API path");
      }
      // A declared length over the limit costs nothing to refuse: before the user's turn is counted.
      const declared = Number(request.headers.get("content-length") ?? 0);
      if (declared > Limits.maxRequestBodyBytes) return bodyRefused(bodyTooLarge(Limits.maxRequestBodyBytes));
      const leave = concurrency.tryEnter(userId);
      if (!leave) {
        return errorResponse(
          429,
          ErrorCode.rateLimited,
          `too many requests in flight for this user (${options.maxRequestsPerUser}): wait for one to finish`,
          { "Retry-After": "1" },
        );
      }
      try {
        return await readAndForward(request, userId, Limits.maxRequestBodyBytes);
      } finally {
        leave();
      }
    },
  };
}
