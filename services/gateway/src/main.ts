import type { Server } from "node:http";
import type { AddressInfo } from "node:net";
import { serve } from "@hono/node-server";
import { createLogger } from "@listings-chat/shared/node";
import { createGatewayApp } from "./app.ts";
import { ConfigError, type GatewayConfig, loadGatewayConfig } from "./env.ts";

let config: GatewayConfig;
try {
  config = loadGatewayConfig(process.env);
} catch (error) {
  if (!(error instanceof ConfigError)) throw error;
  console.error(`gateway: ${error.message}`);
  process.exit(1);
}
const log = createLogger({ name: "gateway", level: config.logLevel, pretty: !config.production });
for (const warning of config.warnings) log.warn(`⚠ ${warning}`);
log.warn(
  "⚠ this gateway is a PLACEHOLDER: /health and /ready only, everything else answers 501 until the real gateway arrives with its own issue",
);

let stopping = false;
const app = createGatewayApp({ chatUpstreams: config.chatUpstreams, log, isShuttingDown: () => stopping });

const server = await new Promise<Server>((resolve) => {
  const s = serve({ fetch: app.fetch, port: config.port, hostname: config.host }, () => resolve(s as Server));
  s.once("error", (error) => {
    log.fatal({ err: error }, "gateway could not start");
    process.exit(1);
  });
});
const { port } = server.address() as AddressInfo;
log.info({ port, upstreams: config.chatUpstreams }, "gateway (placeholder) listening");

for (const signal of ["SIGTERM", "SIGINT"] as const) {
  process.on(signal, () => {
    if (stopping) return;
    stopping = true;
    log.info({ signal }, "shutting down");
    // A hard stop in case something hangs: the contract promises an exit within 10 s.
    setTimeout(() => process.exit(1), 9_500).unref();
    // Stop accepting; idle keep-alive connections are closed, requests in flight finish.
    server.close((error) => {
      if (error) log.error({ err: error }, "shutdown failed");
      process.exit(error ? 1 : 0);
    });
    server.closeIdleConnections();
  });
}
