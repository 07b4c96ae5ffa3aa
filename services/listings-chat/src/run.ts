import { runService, type StopSignals } from "@listings-chat/shared/node";
import { loadChatConfig } from "./env.ts";
import { startChatServer } from "./server.ts";

/** The service, loaded by main.ts once the stop signals are caught. */
export function run(signals: StopSignals): Promise<void> {
  return runService({
    name: "listings-chat",
    loadConfig: () => loadChatConfig(process.env),
    start: (config, log, signal) => startChatServer(config, log, {}, signal),
    portVariable: "CHAT_PORT",
    stoppingMessage: "shutting down: closing sockets with 1001",
    signals,
  });
}
