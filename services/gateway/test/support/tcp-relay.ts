/**
 * A TCP relay in front of the gateway that misbehaves the way real networks do, below HTTP: it can swallow
 * WebSocket upgrades (the request is taken and never answered, the connection stays up), turn open
 * WebSocket connections into black holes (TCP up, no byte passes either way: a NAT that forgot the flow,
 * a dead proxy), and refuse every connection (the network is down).
 */
import { connect, createServer, type Server, type Socket } from "node:net";

export interface TcpRelay {
  url: string;
  /** "hang": a connection whose first bytes are a WebSocket upgrade is held open and never answered. */
  upgrades: "pass" | "hang";
  /** While true, new connections are closed at once. */
  refuseAll: boolean;
  /** Upgrade requests seen, and whether each was swallowed. */
  upgradesSeen: { at: number; swallowed: boolean }[];
  /** From now on the open WebSocket connections pass no byte either way (TCP stays up). Returns how many. */
  blackHoleWebSockets(): number;
  /** Destroys every open connection, both sides. Returns how many there were. */
  cutAll(): number;
  close(): Promise<void>;
}

const isUpgrade = (head: Buffer) =>
  /^GET [^\r\n]* HTTP\/1\.1\r\n/.test(String(head)) && /\r\nupgrade:\s*websocket/i.test(String(head));

/** A relay on 127.0.0.1 (a port of the OS's choosing) to `targetPort` on 127.0.0.1. */
export async function startTcpRelay(targetPort: number): Promise<TcpRelay> {
  const open = new Set<Socket>();
  /** Both ends of each WebSocket connection, and whether it is a black hole now. */
  const webSockets = new Set<{ client: Socket; upstream?: Socket; dead: boolean }>();

  const relay: TcpRelay = {
    url: "",
    upgrades: "pass",
    refuseAll: false,
    upgradesSeen: [],
    blackHoleWebSockets() {
      let count = 0;
      for (const pipe of webSockets) {
        if (pipe.upstream && !pipe.dead) count += 1;
        pipe.dead = true;
      }
      return count;
    },
    cutAll() {
      const count = open.size;
      for (const socket of open) socket.destroy();
      return count;
    },
    async close() {
      relay.cutAll();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };

  const track = (socket: Socket) => {
    open.add(socket);
    socket.on("error", () => {});
    socket.once("close", () => open.delete(socket));
  };

  const server: Server = createServer((client) => {
    track(client);
    if (relay.refuseAll) {
      client.destroy();
      return;
    }
    client.once("data", (head: Buffer) => {
      const upgrade = isUpgrade(head);
      if (upgrade) relay.upgradesSeen.push({ at: Date.now(), swallowed: relay.upgrades === "hang" });
      if (upgrade && relay.upgrades === "hang") {
        // Taken and never answered; whatever else comes is dropped. The client gives up, or nothing does.
        client.on("data", () => {});
        return;
      }
      const upstream = connect(targetPort, "127.0.0.1");
      track(upstream);
      const pipe = { client, upstream, dead: false };
      if (upgrade) webSockets.add(pipe);
      client.once("close", () => {
        webSockets.delete(pipe);
        upstream.destroy();
      });
      upstream.once("close", () => client.destroy());
      upstream.write(head);
      // Byte by byte as they come (a test relay: no backpressure needed), unless the pipe is a black hole.
      client.on("data", (chunk: Buffer) => {
        if (!pipe.dead) upstream.write(chunk);
      });
      upstream.on("data", (chunk: Buffer) => {
        if (!pipe.dead) client.write(chunk);
      });
    });
  });
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(0, "127.0.0.1", resolve);
  });
  const address = server.address();
  if (!address || typeof address === "string") throw new Error("the relay has no port");
  relay.url = `http://127.0.0.1:${address.port}`;
  return relay;
}
