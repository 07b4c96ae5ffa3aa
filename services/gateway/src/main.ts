import { createLogger } from "@listings-chat/shared/node";
import { ConfigError, type GatewayConfig, loadGatewayConfig } from "./env.ts";
import { startGateway } from "./server.ts";

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

const gateway = await startGateway(config, log).catch((error) => {
  log.fatal({ err: error }, "gateway could not start");
  process.exit(1);
});

let stopping = false;
for (const signal of ["SIGTERM", "SIGINT"] as const) {
  process.on(signal, () => {
    if (stopping) return;
    stopping = true;
    log.info({ signal, pipes: gateway.openPipes() }, "shutting down: no new upgrades, letting pipes drain");
    // A hard stop in case something hangs: the contract promises an exit within 10 s.
    setTimeout(() => process.exit(1), 9_500).unref();
    gateway.stop().then(
      () => process.exit(0),
      (error) => {
        log.error({ err: error }, "shutdown failed");
        process.exit(1);
      },
    );
  });
}
