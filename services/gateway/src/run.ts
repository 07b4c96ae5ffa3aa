import { runService, type StopSignals } from "@listings-chat/shared/node";
import { loadGatewayConfig } from "./env.ts";
import { startGateway } from "./server.ts";

/** The service, loaded by main.ts once the stop signals are caught. */
export function run(signals: StopSignals): Promise<void> {
  return runService({
    name: "gateway",
    loadConfig: () => loadGatewayConfig(process.env),
    start: startGateway,
    portVariable: "GATEWAY_PORT",
    stoppingMessage: "shutting down: no new upgrades, letting pipes drain",
    signals,
  });
}
