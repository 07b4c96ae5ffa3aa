import { runService, type StopSignals } from "@listings-chat/shared/node";
import { loadGatewayConfig } from "./env.ts";
import { startGateway } from "./server.ts";
import { joinSupervisor } from "./workers/worker.ts";

/**
 * The service, loaded by main.ts once the stop signals are caught: alone, or as worker `worker` of a
 * supervisor (GATEWAY_WORKERS, workers/supervisor.ts), whose logs then say which worker.
 */
export function run(signals: StopSignals, worker?: number): Promise<void> {
  const supervisor = worker === undefined ? undefined : joinSupervisor(worker);
  return runService({
    name: "gateway",
    loadConfig: () => loadGatewayConfig(process.env),
    start: async (config, log, signal) => {
      const gateway = await startGateway(config, supervisor ? log.child({ worker }) : log, signal, supervisor);
      supervisor?.listening(gateway.port);
      return gateway;
    },
    portVariable: "GATEWAY_PORT",
    stoppingMessage: "shutting down: no new upgrades, letting pipes drain",
    signals,
  });
}
