import { STATUS_CODES } from "node:http";
import type { Duplex } from "node:stream";
import { errorBody } from "../error-body.ts";

/** How long a refused client has to read the answer and close before its socket is destroyed. */
export const REFUSAL_LINGER_MS = 1_000;

/**
 * Answers an upgrade request with a plain HTTP response and the contract's JSON error body, then
 * closes the socket for sure: a refusal never becomes a 101 followed by a close, and never leaks.
 *
 * Node hands an upgrade's socket over paused. `end()` alone only half-closes it: the socket is freed
 * once the client's side ends too, which a paused socket never reads (one trailing byte is enough to keep
 * it forever). So what the client sends is read and dropped, and the socket is destroyed after a short
 * linger whatever the client does.
 */
export function refuseUpgrade(
  socket: Duplex,
  status: number,
  code: string,
  message: string,
  headers: Record<string, string> = {},
): void {
  if (socket.destroyed) return;
  const body = JSON.stringify(errorBody(code, message));
  const extra = Object.entries(headers)
    .map(([name, value]) => `${name}: ${value}\r\n`)
    .join("");
  const linger = setTimeout(() => socket.destroy(), REFUSAL_LINGER_MS);
  linger.unref();
  socket.once("close", () => clearTimeout(linger));
  socket.on("error", () => socket.destroy());
  socket.on("data", () => {});
  socket.resume();
  socket.end(
    `HTTP/1.1 ${status} ${STATUS_CODES[status] ?? ""}\r\nConnection: close\r\nContent-Type: application/json\r\n` +
      `Cache-Control: no-store\r\n${extra}Content-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`,
  );
}
