import type { IncomingMessage } from "node:http";
import { ErrorCode } from "@listings-chat/shared";

/** RFC 6455 §4.1: a list of RFC 7230 tokens separated by commas. */
const SUBPROTOCOL_LIST = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+(\s*,\s*[!#$%&'*+\-.^_`|~0-9A-Za-z]+)*$/;

/** Why an upgrade request is not a WebSocket handshake we can pass on, as the HTTP answer to give. */
export interface HandshakeProblem {
  status: number;
  code: string;
  message: string;
  headers?: Record<string, string>;
}

/**
 * Checks that an upgrade request is a WebSocket opening handshake (RFC 6455 §4.2.1): GET, `Upgrade:
 * websocket`, a `Sec-WebSocket-Key` of 16 base64-encoded bytes, version 13. Checked before the ws-token is
 * used up, so that a malformed request never costs the client its token or an instance a connection.
 */
export function handshakeProblem(req: IncomingMessage): HandshakeProblem | undefined {
  if (req.method !== "GET") {
    return {
      status: 405,
      code: ErrorCode.validationFailed,
      message: "a WebSocket upgrade must be a GET request",
      headers: { Allow: "GET" },
    };
  }
  if ((req.headers.upgrade ?? "").trim().toLowerCase() !== "websocket") {
    return {
      status: 400,
      code: ErrorCode.validationFailed,
      message: "only Upgrade: websocket is served here",
    };
  }
  const key = req.headers["sec-websocket-key"];
  if (typeof key !== "string" || !/^[A-Za-z0-9+/]{22}==$/.test(key.trim())) {
    return {
      status: 400,
      code: ErrorCode.validationFailed,
      message: "Sec-WebSocket-Key must be 16 random bytes in base64",
    };
  }
  const protocols = req.headers["sec-websocket-protocol"];
  if (protocols !== undefined && !SUBPROTOCOL_LIST.test(protocols)) {
    return {
      status: 400,
      code: ErrorCode.validationFailed,
      message: "Sec-WebSocket-Protocol must be a comma-separated list of tokens",
    };
  }
  if (req.headers["sec-websocket-version"] !== "13") {
    return {
      status: 426,
      code: ErrorCode.validationFailed,
      message: "only WebSocket version 13 is supported",
      headers: { "Sec-WebSocket-Version": "13" },
    };
  }
  return undefined;
}
