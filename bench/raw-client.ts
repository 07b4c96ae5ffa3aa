/**
 * A lean load generator's HTTP and WebSocket client, on raw `net` sockets: what a storm's browsers do (a
 * ws-token, then an upgrade held open), at a fraction of the CPU of fetch and the ws client. On a 2-core
 * machine the generator shares the cores with what it measures; with fetch and ws its own event loop fell
 * 1-3.5 s behind in a 5,000-socket storm, which showed up as connect time and time-outs of the services.
 * Only what the benchmarks need: one request at a time per connection, Content-Length or chunked bodies,
 * and a socket that answers pings until closed.
 */
import { connect, type Socket } from "node:net";

export interface RawAnswer {
  status: number;
  headers: Map<string, string>;
  body: string;
}

/** Splits a response head; undefined until the blank line has arrived. */
function parseHead(buffer: Buffer): { status: number; headers: Map<string, string>; headLength: number } | undefined {
  const end = buffer.indexOf("\r\n\r\n");
  if (end === -1) return undefined;
  const [statusLine = "", ...lines] = buffer.toString("latin1", 0, end).split("\r\n");
  const headers = new Map<string, string>();
  for (const line of lines) {
    const colon = line.indexOf(":");
    if (colon > 0) headers.set(line.slice(0, colon).trim().toLowerCase(), line.slice(colon + 1).trim());
  }
  return { status: Number(statusLine.split(" ")[1] ?? 0), headers, headLength: end + 4 };
}

/** The body once complete (Content-Length or chunked), else undefined. */
function completeBody(headers: Map<string, string>, rest: Buffer): string | undefined {
  const length = headers.get("content-length");
  if (length !== undefined) return rest.length >= Number(length) ? rest.toString("utf8", 0, Number(length)) : undefined;
  if (headers.get("transfer-encoding")?.includes("chunked")) {
    const parts: Buffer[] = [];
    let at = 0;
    for (;;) {
      const lineEnd = rest.indexOf("\r\n", at);
      if (lineEnd === -1) return undefined;
      const size = Number.parseInt(rest.toString("latin1", at, lineEnd), 16);
      if (size === 0) return rest.indexOf("\r\n", lineEnd + 2) === -1 ? undefined : Buffer.concat(parts).toString();
      if (rest.length < lineEnd + 2 + size + 2) return undefined;
      parts.push(rest.subarray(lineEnd + 2, lineEnd + 2 + size));
      at = lineEnd + 2 + size + 2;
    }
  }
  return "";
}

/** Keep-alive connections to one server, each carrying one request at a time, as a browser's pool does. */
export class RawHttpPool {
  private readonly idle: Socket[] = [];
  private readonly port: number;
  private readonly host: string;

  constructor(port: number, host = "127.0.0.1") {
    this.port = port;
    this.host = host;
  }

  /** Rejects when no complete answer came within `timeoutMs`, so that a bench never waits forever. */
  request(method: string, path: string, headers: Record<string, string>, timeoutMs = 10_000): Promise<RawAnswer> {
    // A kept connection the server has closed meanwhile is dropped, not written to.
    let socket = this.idle.pop();
    while (socket?.destroyed || socket?.readableEnded) socket = this.idle.pop();
    socket ??= connect({ port: this.port, host: this.host, noDelay: true });
    const head = [`${method} ${path} HTTP/1.1`, `Host: ${this.host}:${this.port}`, "Content-Length: 0"];
    for (const [name, value] of Object.entries(headers)) head.push(`${name}: ${value}`);
    return new Promise((resolve, reject) => {
      let buffer: Buffer = Buffer.alloc(0);
      const timer = setTimeout(
        () => done(new Error(`no answer to ${method} ${path} within ${timeoutMs} ms`)),
        timeoutMs,
      );
      const done = (error?: Error, answer?: RawAnswer) => {
        clearTimeout(timer);
        socket.off("data", onData);
        socket.off("error", onError);
        socket.off("close", onClose);
        if (error) {
          socket.destroy();
          return reject(error);
        }
        if (answer!.headers.get("connection")?.toLowerCase() === "close") socket.destroy();
        else {
          // While idle, an error (the server resetting it) closes it; it is skipped when next taken.
          if (socket.listenerCount("error") === 0) socket.on("error", () => socket.destroy());
          this.idle.push(socket);
        }
        resolve(answer!);
      };
      const onData = (chunk: Buffer) => {
        buffer = buffer.length === 0 ? chunk : Buffer.concat([buffer, chunk]);
        const parsed = parseHead(buffer);
        if (!parsed) return;
        const body = completeBody(parsed.headers, buffer.subarray(parsed.headLength));
        if (body !== undefined) done(undefined, { status: parsed.status, headers: parsed.headers, body });
      };
      const onError = (error: Error) => done(error);
      const onClose = () => done(new Error("the server closed the connection before its answer"));
      socket.on("data", onData);
      socket.on("error", onError);
      socket.on("close", onClose);
      socket.write(`${head.join("\r\n")}\r\n\r\n`);
    });
  }

  close(): void {
    for (const socket of this.idle.splice(0)) socket.destroy();
  }
}

export type RawUpgrade =
  /** Upgraded, and the server's first frame has arrived; the socket stays open and answers pings. */
  | { kind: "open"; socket: Socket }
  | { kind: "refused"; answer: RawAnswer }
  | { kind: "timeout" }
  | { kind: "error"; error: Error };

/** A masked client frame (a zero mask: masking is required of clients, any key will do). */
function clientFrame(opcode: number, payload: Buffer): Buffer {
  const extended = payload.length < 126 ? 0 : payload.length < 65_536 ? 2 : 8;
  const frame = Buffer.alloc(2 + extended + 4 + payload.length);
  frame[0] = 0x80 | opcode;
  if (extended === 0) frame[1] = 0x80 | payload.length;
  else if (extended === 2) {
    frame[1] = 0x80 | 126;
    frame.writeUInt16BE(payload.length, 2);
  } else {
    frame[1] = 0x80 | 127;
    frame.writeBigUInt64BE(BigInt(payload.length), 2);
  }
  payload.copy(frame, 2 + extended + 4);
  return frame;
}

/** A client's text frame, ready to write (build it once and write it as often as needed). */
export const clientTextFrame = (text: string) => clientFrame(0x1, Buffer.from(text));

/**
 * Reads server frames off an open socket: answers pings, hands each text frame's payload to `onText`, and
 * drops the rest. Unfragmented frames only, as the services send.
 */
function readFrames(socket: Socket, first: Buffer, onText?: (payload: Buffer) => void) {
  let pending: Buffer = first;
  const read = (chunk: Buffer) => {
    pending = pending.length === 0 ? chunk : Buffer.concat([pending, chunk]);
    while (pending.length >= 2) {
      const opcode = pending[0]! & 0x0f;
      let length = pending[1]! & 0x7f;
      let offset = 2;
      if (length === 126) {
        if (pending.length < 4) return;
        length = pending.readUInt16BE(2);
        offset = 4;
      } else if (length === 127) {
        if (pending.length < 10) return;
        length = Number(pending.readBigUInt64BE(2));
        offset = 10;
      }
      if (pending.length < offset + length) return;
      const payload = pending.subarray(offset, offset + length);
      if (opcode === 0x9) socket.write(clientFrame(0xa, payload));
      else if (opcode === 0x1) onText?.(payload);
      pending = pending.subarray(offset + length);
    }
  };
  read(Buffer.alloc(0));
  socket.on("data", read);
}

export interface RawUpgradeOptions {
  host?: string;
  /** Sent with the handshake (the internal hop's X-User-Id and X-Internal-Token, when a bench connects there). */
  headers?: Record<string, string>;
  /** Each text frame after the greeting (which resolves the upgrade), as it arrives. */
  onText?: (payload: Buffer) => void;
}

/**
 * Opens a WebSocket to `path` and waits for the 101 and the server's first frame (the `connected` greeting),
 * a refusal (its status, headers and body), or `timeoutMs`. The open socket answers pings until closed.
 */
export function rawUpgrade(
  port: number,
  path: string,
  timeoutMs: number,
  { host = "127.0.0.1", headers = {}, onText }: RawUpgradeOptions = {},
): Promise<RawUpgrade> {
  return new Promise((resolve) => {
    const socket = connect({ port, host, noDelay: true });
    let buffer: Buffer = Buffer.alloc(0);
    let settled = false;
    const settle = (outcome: RawUpgrade) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      socket.off("data", onData);
      if (outcome.kind !== "open") socket.destroy();
      resolve(outcome);
    };
    const timer = setTimeout(() => settle({ kind: "timeout" }), timeoutMs);
    const onData = (chunk: Buffer) => {
      buffer = buffer.length === 0 ? chunk : Buffer.concat([buffer, chunk]);
      const parsed = parseHead(buffer);
      if (!parsed) return;
      const rest = buffer.subarray(parsed.headLength);
      if (parsed.status === 101) {
        if (rest.length < 2) return;
        settle({ kind: "open", socket });
        // The greeting is the first frame: what follows it goes to onText.
        let greeted = false;
        readFrames(socket, rest, (payload) => {
          if (greeted) onText?.(payload);
          greeted = true;
        });
        return;
      }
      const body = completeBody(parsed.headers, rest);
      if (body !== undefined)
        settle({ kind: "refused", answer: { status: parsed.status, headers: parsed.headers, body } });
    };
    socket.on("data", onData);
    socket.on("error", (error) => settle({ kind: "error", error }));
    socket.on("close", () => settle({ kind: "error", error: new Error("closed before the greeting") }));
    const key = Buffer.from(Array.from({ length: 16 }, () => Math.floor(Math.random() * 256))).toString("base64");
    let extra = "";
    for (const [name, value] of Object.entries(headers)) extra += `${name}: ${value}\r\n`;
    socket.write(
      `GET ${path} HTTP/1.1\r\nHost: ${host}:${port}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n` +
        `Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: ${key}\r\n${extra}\r\n`,
    );
  });
}
