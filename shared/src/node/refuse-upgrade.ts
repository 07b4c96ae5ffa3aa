import { STATUS_CODES } from "node:http";
import type { Duplex } from "node:stream";
import { errorBody } from "../codes.ts";

/**
 * Answers an upgrade request with a plain HTTP response and the contract's JSON error body, then
 * closes the socket: a refusal never becomes a 101 followed by a close.
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
  socket.end(
    `HTTP/1.1 ${status} ${STATUS_CODES[status] ?? ""}\r\nConnection: close\r\nContent-Type: application/json\r\n` +
      `Cache-Control: no-store\r\n${extra}Content-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`,
  );
}
