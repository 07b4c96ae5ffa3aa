import type { Server } from "node:http";
import { STATUS_CODES } from "node:http";
import type { Duplex } from "node:stream";
import { ErrorCode, errorBody } from "@listings-chat/shared";

/**
 * What Node answers, by itself, to a request it cannot read (a bad request line or path, a header block too
 * large, a head that did not arrive in time): the same statuses as Node's own answers, with the contract's
 * JSON body instead of none. Written only when nothing was written on the connection yet, as Node does.
 */
export function answerUnreadableRequestsAsJson(server: Server) {
  server.on("clientError", (error: NodeJS.ErrnoException, socket: Duplex & { bytesWritten?: number }) => {
    if (error.code === "ECONNRESET" || !socket.writable || (socket.bytesWritten ?? 0) > 0) {
      socket.destroy();
      return;
    }
    const [status, code, message] =
      error.code === "HPE_HEADER_OVERFLOW"
        ? [431, ErrorCode.badRequest, "the request headers are too large"]
        : error.code === "ERR_HTTP_REQUEST_TIMEOUT"
          ? [408, ErrorCode.requestTimeout, "the request did not arrive in time"]
          : [400, ErrorCode.badRequest, "the request could not be read"];
    const body = JSON.stringify(errorBody(code, message));
    socket.end(
      `HTTP/1.1 ${status} ${STATUS_CODES[status]}\r\ncontent-type: application/json\r\n` +
        `content-length: ${Buffer.byteLength(body)}\r\nconnection: close\r\n\r\n${body}`,
    );
  });
}

/**
 * The adaptor's answer when it cannot build a Request of what Node parsed (a URL that WHATWG's parser refuses,
 * such as a backslash in the path): 400 in the contract's JSON, where @hono/node-server answers an empty 400;
 * anything else thrown before the app answers, 500 in JSON (the app's own errors never reach here).
 */
export function answerUnbuildableRequest(error: unknown): Response {
  const unreadable = error instanceof Error && error.name === "RequestError";
  const [status, code, message] = unreadable
    ? [400, ErrorCode.badRequest, "the request could not be read"]
    : [500, ErrorCode.internal, "internal error: the request was not completed, retry later"];
  return Response.json(errorBody(code, message), { status });
}
