import type { Server } from "node:http";

/**
 * The accept queue of a listening port. Node's default (511) overflows when a few thousand sockets come back
 * at once after a deploy or a crash: the kernel then drops their SYNs, and each dropped client waits a 1 s
 * retransmit (a gateway's hop to an instance can time out on it). The kernel caps this at
 * net.core.somaxconn (4096 on current kernels).
 */
export const LISTEN_BACKLOG = 4096;

/** Starts `server` listening on `host:port` with the storm-sized accept queue; rejects on a listen error. */
export function listen(server: Server, port: number, host: string): Promise<void> {
  return new Promise((resolve, reject) => {
    server.once("error", reject);
    server.listen({ port, host, backlog: LISTEN_BACKLOG }, () => {
      server.off("error", reject);
      resolve();
    });
  });
}
