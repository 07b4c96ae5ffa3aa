import { createHash } from "node:crypto";
import { createServer, connect as netConnect, type Server, type Socket } from "node:net";

/**
 * What a stand-in chat instance does with each request: answer it with a status (a shutting-down
 * instance's 503, a rotated token's 401), never answer ("hang"), pass the bytes to a real instance, or
 * accept an upgrade and write up to `flood` bytes of text frames as fast as the socket takes them.
 */
export type InstanceMode =
  | { answer: number; retryAfter?: string }
  | "hang"
  | { passTo: number; delayMs?: number }
  | { flood: number };

/** A WebSocket text frame from the server (unmasked) of 60,000 bytes: a 4-byte head and the payload. */
const FLOOD_FRAME = Buffer.concat([Buffer.from([0x81, 126, 60_000 >> 8, 60_000 & 0xff]), Buffer.alloc(60_000, "x")]);

export interface MisbehavingInstance {
  url: string;
  mode: InstanceMode;
  /** Request lines seen (method and path), upgrades included. */
  seen: string[];
  /** Connections open now. */
  open(): number;
  /** Bytes of frames the socket has taken in `flood` mode (it waits for `drain` when its buffer is full). */
  flooded(): number;
  /** Ends a flood: what was taken is still delivered, then the instance closes its side. */
  stopFlood(): void;
  close(): Promise<void>;
}

/** A TCP server on 127.0.0.1 that behaves as `mode` says (changeable at any time). */
export async function startMisbehavingInstance(mode: InstanceMode): Promise<MisbehavingInstance> {
  const sockets = new Set<Socket>();
  let flooded = 0;
  let floodStopped = false;
  /** The write loops of flooding sockets, run once more to end them when the flood stops. */
  const floods = new Set<() => void>();
  const self: MisbehavingInstance = {
    url: "",
    mode,
    seen: [],
    open: () => sockets.size,
    flooded: () => flooded,
    stopFlood: () => {
      floodStopped = true;
      for (const write of floods) write();
    },
    close: () =>
      new Promise<void>((resolve) => {
        for (const socket of sockets) socket.destroy();
        server.close(() => resolve());
      }),
  };
  const server: Server = createServer((socket) => {
    sockets.add(socket);
    socket.on("close", () => sockets.delete(socket));
    socket.on("error", () => {});
    let head = Buffer.alloc(0);
    const onData = (chunk: Buffer) => {
      head = Buffer.concat([head, chunk]);
      const end = head.indexOf("\r\n\r\n");
      if (end === -1) return;
      socket.off("data", onData);
      self.seen.push(head.subarray(0, head.indexOf("\r\n")).toString());
      const current = self.mode;
      if (current === "hang") return;
      if ("answer" in current) {
        const body = JSON.stringify({ error: { code: "stand_in", message: `stand-in answers ${current.answer}` } });
        const retryAfter = current.retryAfter === undefined ? "" : `Retry-After: ${current.retryAfter}\r\n`;
        socket.end(
          `HTTP/1.1 ${current.answer} Stand-in\r\nContent-Type: application/json\r\n${retryAfter}Content-Length: ${body.length}\r\nConnection: close\r\n\r\n${body}`,
        );
        return;
      }
      if ("flood" in current) {
        const key = /sec-websocket-key:\s*(\S+)/i.exec(head.toString())?.[1] ?? "";
        const accept = createHash("sha1").update(`${key}258EAFA5-E914-47DA-95CA-C5AB0DC11B11`).digest("base64");
        socket.write(
          `HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: ${accept}\r\n\r\n`,
        );
        // Writes while the socket takes them, then waits for it to drain: the stand-in's own memory stays flat.
        const write = () => {
          while (!floodStopped && flooded < current.flood && !socket.destroyed) {
            flooded += FLOOD_FRAME.length;
            if (!socket.write(FLOOD_FRAME)) return;
          }
          if (!socket.destroyed) socket.end();
          socket.off("drain", write);
          floods.delete(write);
        };
        floods.add(write);
        socket.on("drain", write);
        write();
        return;
      }
      const pass = () => {
        if (socket.destroyed) return;
        const upstream = netConnect({ port: current.passTo, host: "127.0.0.1" });
        upstream.on("error", () => socket.destroy());
        upstream.write(head);
        socket.pipe(upstream).pipe(socket);
        socket.on("close", () => upstream.destroy());
        upstream.on("close", () => socket.destroy());
      };
      if (current.delayMs) setTimeout(pass, current.delayMs);
      else pass();
    };
    socket.on("data", onData);
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const address = server.address();
  self.url = `http://127.0.0.1:${typeof address === "object" && address ? address.port : 0}`;
  return self;
}
