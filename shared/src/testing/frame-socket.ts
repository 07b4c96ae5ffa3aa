import type { ServerFrame } from "@listings-chat/client/protocol";
import type WebSocket from "ws";

/** A WebSocket client that keeps every frame it receives, in order, and the way it closed. */
export class FrameSocket {
  readonly frames: ServerFrame[] = [];
  /** Frames that were not JSON text (the chat service never sends any). */
  readonly oddFrames: Array<{ binary: boolean; data: Buffer }> = [];
  readonly closed: Promise<{ code: number; reason: string }>;
  /** Resolves on `open`; rejects when the upgrade is refused or the connection fails. */
  readonly opened: Promise<void>;
  closeInfo: { code: number; reason: string } | undefined;
  private waiters: Array<() => void> = [];
  readonly ws: WebSocket;

  constructor(ws: WebSocket) {
    this.ws = ws;
    ws.on("message", (data, isBinary) => {
      const buffer = Array.isArray(data) ? Buffer.concat(data) : Buffer.from(data as ArrayBuffer);
      let parsed: ServerFrame | undefined;
      if (!isBinary) {
        try {
          parsed = JSON.parse(buffer.toString()) as ServerFrame;
        } catch {
          parsed = undefined;
        }
      }
      if (parsed) this.frames.push(parsed);
      else this.oddFrames.push({ binary: isBinary, data: buffer });
      this.wake();
    });
    this.closed = new Promise((resolve) =>
      ws.once("close", (code, reason) => {
        this.closeInfo = { code, reason: reason.toString() };
        resolve(this.closeInfo);
        this.wake();
      }),
    );
    this.opened = new Promise((resolve, reject) => {
      ws.once("open", () => resolve());
      ws.once("unexpected-response", (_req, res) => reject(new Error(`upgrade refused with ${res.statusCode}`)));
      ws.once("error", reject);
    });
    this.opened.catch(() => {});
    ws.on("error", () => {});
  }

  private wake() {
    for (const wake of this.waiters.splice(0)) wake();
  }

  send(frame: unknown): void {
    this.ws.send(typeof frame === "string" ? frame : JSON.stringify(frame));
  }

  ofType<T extends ServerFrame["type"]>(type: T): Extract<ServerFrame, { type: T }>[] {
    return this.frames.filter((f): f is Extract<ServerFrame, { type: T }> => f.type === type);
  }

  /** Event ids received, in arrival order. */
  eventIds(): number[] {
    return this.frames.flatMap((f) => ("event_id" in f ? [f.event_id] : []));
  }

  /** The first frame from index `from` on that matches; rejects after `timeoutMs` or when the socket closed. */
  async waitFor<T extends ServerFrame>(
    match: (f: ServerFrame) => f is T,
    timeoutMs?: number,
    from?: number,
  ): Promise<T>;
  async waitFor(match: (f: ServerFrame) => boolean, timeoutMs?: number, from?: number): Promise<ServerFrame>;
  async waitFor(match: (f: ServerFrame) => boolean, timeoutMs = 5_000, from = 0): Promise<ServerFrame> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const found = this.frames.slice(from).find(match);
      if (found) return found;
      const left = deadline - Date.now();
      if (left <= 0 || this.closeInfo) {
        throw new Error(
          `no matching frame within ${timeoutMs} ms (close: ${JSON.stringify(this.closeInfo)}); ` +
            `last frames: ${JSON.stringify(this.frames.slice(-5))}`,
        );
      }
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, left);
        this.waiters.push(() => {
          clearTimeout(timer);
          resolve();
        });
      });
    }
  }

  /** Waits until `done()` holds, re-checking on every frame. */
  async until(done: () => boolean, timeoutMs = 10_000): Promise<void> {
    await this.waitFor(() => done(), timeoutMs).catch((error) => {
      if (!done()) throw error;
    });
  }

  /** Resolves with the close code and reason; rejects when the socket is still open after `timeoutMs`. */
  async waitClosed(timeoutMs = 5_000): Promise<{ code: number; reason: string }> {
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`socket still open after ${timeoutMs} ms`)), timeoutMs);
    });
    try {
      return await Promise.race([this.closed, timeout]);
    } finally {
      clearTimeout(timer);
    }
  }

  close(): Promise<{ code: number; reason: string }> {
    this.ws.close();
    return this.closed;
  }
}
