import type { Server } from "node:http";

/**
 * The accept queue of a listening port. Node's default (511) overflows when a few thousand sockets come back
 * at once after a deploy or a crash: the kernel then drops their SYNs, and each dropped client waits a 1 s
 * retransmit (a gateway's hop to an instance can time out on it). The kernel caps this at
 * net.core.somaxconn (4096 on current kernels).
 */
export const LISTEN_BACKLOG = 4096;

export interface ListenOptions {
  /**
   * SO_REUSEPORT (Linux): several processes listen on the same host:port, each with its own accept queue,
   * and the kernel spreads new connections over them (the gateway's workers, GATEWAY_WORKERS).
   */
  reusePort?: boolean;
}

/** Starts `server` listening on `host:port` with the storm-sized accept queue; rejects on a listen error. */
export function listen(server: Server, port: number, host: string, options: ListenOptions = {}): Promise<void> {
  return new Promise((resolve, reject) => {
    server.once("error", reject);
    const reusePort = options.reusePort ? { reusePort: true } : {};
    server.listen({ port, host, backlog: LISTEN_BACKLOG, ...reusePort }, () => {
      server.off("error", reject);
      resolve();
    });
  });
}
