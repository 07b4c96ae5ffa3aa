import http, { type IncomingMessage, type OutgoingHttpHeaders } from "node:http";
import https from "node:https";
import type { Socket } from "node:net";

/** How an instance answered an upgrade: a 101 with its socket, or a plain HTTP status. */
export type UpgradeAnswer =
  | { kind: "upgraded"; response: IncomingMessage; socket: Socket; head: Buffer }
  /** `retryAfter`: the instance's Retry-After, when it gave one (a 503 with it: alive, but busy). */
  | { kind: "answered"; status: number; retryAfter?: string };

export class UpgradeTimeoutError extends Error {
  override name = "UpgradeTimeoutError";
}

export interface UpstreamUpgradeRequest {
  /** The instance's base URL, e.g. http://10.0.0.5:8086 */
  base: string;
  path: string;
  headers: OutgoingHttpHeaders;
  /** Connect and answer, together. */
  timeoutMs: number;
  /** Aborts the attempt (the client left). */
  signal: AbortSignal;
}

/**
 * Asks one chat instance to upgrade. Resolves with its 101 (and the upgraded socket) or with its non-101
 * status, whose body is dropped: the gateway answers the client itself. Rejects when the instance cannot
 * be reached, does not answer within `timeoutMs`, or the attempt is aborted; nothing is left open then.
 */
export function requestUpstreamUpgrade({
  base,
  path,
  headers,
  timeoutMs,
  signal,
}: UpstreamUpgradeRequest): Promise<UpgradeAnswer> {
  return new Promise((resolve, reject) => {
    const url = new URL(path, base);
    const request = (url.protocol === "https:" ? https : http).request(url, { method: "GET", headers, agent: false });
    const timer = setTimeout(
      () => request.destroy(new UpgradeTimeoutError(`no answer from the chat instance within ${timeoutMs} ms`)),
      timeoutMs,
    );
    const abort = () => request.destroy(new Error("the client left during the upgrade"));
    signal.addEventListener("abort", abort, { once: true });
    const settle = () => {
      clearTimeout(timer);
      signal.removeEventListener("abort", abort);
    };
    request.once("upgrade", (response, socket: Socket, head: Buffer) => {
      settle();
      if (signal.aborted) {
        socket.destroy();
        return reject(new Error("the client left during the upgrade"));
      }
      resolve({ kind: "upgraded", response, socket, head });
    });
    request.once("response", (response) => {
      settle();
      const retryAfter = response.headers["retry-after"];
      resolve({ kind: "answered", status: response.statusCode ?? 0, retryAfter });
      request.destroy();
    });
    request.on("error", (error) => {
      settle();
      reject(error);
    });
    if (signal.aborted) abort();
    request.end();
  });
}
