// The stop signals first, before the service's modules are even read (stop-signals.ts says why): these
// imports load nothing else, and the service (or the supervisor of its workers) comes in by a dynamic import.
import { fileURLToPath } from "node:url";
import { catchStopSignals } from "@listings-chat/shared/node/stop-signals";
import { workerNumberOf, workersToSupervise } from "./workers/role.ts";

const signals = catchStopSignals();
const worker = workerNumberOf(process.argv);
const workers = worker === undefined ? workersToSupervise(process.env) : undefined;
if (workers === undefined) {
  const { run } = await import("./run.ts");
  await run(signals, worker);
} else {
  // GATEWAY_WORKERS > 1: this process starts that many of itself, each a worker, and serves nothing.
  const { superviseWorkers, supervisorLog } = await import("./workers/supervisor.ts");
  superviseWorkers({
    count: workers,
    entry: fileURLToPath(import.meta.url),
    signals,
    env: process.env,
    log: supervisorLog(process.env.LOG_LEVEL),
  });
}
