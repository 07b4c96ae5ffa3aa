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

  constructor(
    private readonly port: number,
    private readonly host = "127.0.0.1",
  ) {}

  request(method: string, path: string, headers: Record<string, string>): Promise<RawAnswer> {
    const socket = this.idle.pop() ?? connect({ port: this.port, host: this.host, noDelay: true });
    const head = [`${method} ${path} HTTP/1.1`, `Host: ${this.host}:${this.port}`, "Content-Length: 0"];
    for (const [name, value] of Object.entries(headers)) head.push(`${name}: ${value}`);
    return new Promise((resolve, reject) => {
      let buffer: Buffer = Buffer.alloc(0);
      const done = (error?: Error, answer?: RawAnswer) => {
        socket.off("data", onData);
        socket.off("error", onError);
        socket.off("close", onClose);
        if (error) {
          socket.destroy();
          return reject(error);
        }
        if (answer!.headers.get("connection")?.toLowerCase() === "close") socket.destroy();
        else this.idle.push(socket);
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

/** A masked pong with the ping's payload (payloads under 126 bytes, as servers' pings are). */
function pongFor(payload: Buffer): Buffer {
  const frame = Buffer.alloc(6 + payload.length);
  frame[0] = 0x8a;
  frame[1] = 0x80 | payload.length;
  // A zero mask: masking is required of clients, any key will do.
  payload.copy(frame, 6);
  return frame;
}

/** Answers pings on an open socket; the other frames are read past and dropped. */
function answerPings(socket: Socket, first: Buffer) {
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
      if (opcode === 0x9 && length < 126) socket.write(pongFor(pending.subarray(offset, offset + length)));
      pending = pending.subarray(offset + length);
    }
  };
  read(Buffer.alloc(0));
  socket.on("data", read);
}

/**
 * Opens a WebSocket to `path` and waits for the 101 and the server's first frame (the `connected` greeting),
 * a refusal (its status, headers and body), or `timeoutMs`.
 */
export function rawUpgrade(port: number, path: string, timeoutMs: number, host = "127.0.0.1"): Promise<RawUpgrade> {
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
        if (rest.length === 0) return;
        settle({ kind: "open", socket });
        answerPings(socket, rest);
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
    socket.write(
      `GET ${path} HTTP/1.1\r\nHost: ${host}:${port}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n` +
        `Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: ${key}\r\n\r\n`,
    );
  });
}
