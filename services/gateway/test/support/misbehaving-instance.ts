import { createServer, connect as netConnect, type Server, type Socket } from "node:net";

/**
 * What a stand-in chat instance does with each request: answer it with a status (a shutting-down
 * instance's 503, a rotated token's 401), never answer ("hang"), or pass the bytes to a real instance.
 */
export type InstanceMode = { answer: number; retryAfter?: string } | "hang" | { passTo: number; delayMs?: number };

export interface MisbehavingInstance {
  url: string;
  mode: InstanceMode;
  /** Request lines seen (method and path), upgrades included. */
  seen: string[];
  /** Connections open now. */
  open(): number;
  close(): Promise<void>;
}

/** A TCP server on 127.0.0.1 that behaves as `mode` says (changeable at any time). */
export async function startMisbehavingInstance(mode: InstanceMode): Promise<MisbehavingInstance> {
  const sockets = new Set<Socket>();
  const self: MisbehavingInstance = {
    url: "",
    mode,
    seen: [],
    open: () => sockets.size,
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
