import { createLogger } from "@listings-chat/shared/node";
import { type ChatConfig, ConfigError, loadChatConfig } from "./env.ts";
import { startChatServer } from "./server.ts";

let config: ChatConfig;
try {
  config = loadChatConfig(process.env);
} catch (error) {
  if (!(error instanceof ConfigError)) throw error;
  console.error(`listings-chat: ${error.message}`);
  process.exit(1);
}
const log = createLogger({ name: "listings-chat", level: config.logLevel, pretty: !config.production });
for (const warning of config.warnings) log.warn(`⚠ ${warning}`);

const server = await startChatServer(config, log).catch((error) => {
  log.fatal({ err: error }, "listings-chat could not start");
  process.exit(1);
});

let stopping = false;
for (const signal of ["SIGTERM", "SIGINT"] as const) {
  process.on(signal, () => {
    if (stopping) return;
    stopping = true;
    log.info({ signal }, "shutting down: closing sockets with 1001");
    // A hard stop in case something hangs: the contract promises an exit within 10 s.
    setTimeout(() => process.exit(1), 9_500).unref();
    server.stop().then(
      () => process.exit(0),
      (error) => {
        log.error({ err: error }, "shutdown failed");
        process.exit(1);
      },
    );
  });
}
