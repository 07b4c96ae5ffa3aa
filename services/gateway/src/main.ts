import { runService } from "@listings-chat/shared/node";
import { loadGatewayConfig } from "./env.ts";
import { startGateway } from "./server.ts";

await runService({
  name: "gateway",
  loadConfig: () => loadGatewayConfig(process.env),
  start: startGateway,
  portVariable: "GATEWAY_PORT",
  stoppingMessage: "shutting down: no new upgrades, letting pipes drain",
});
