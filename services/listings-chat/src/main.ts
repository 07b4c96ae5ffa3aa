// The stop signals first, before the service's modules are even read (stop-signals.ts says why): this
// import loads nothing else, and the service comes in by the dynamic import below.
import { catchStopSignals } from "@listings-chat/shared/node/stop-signals";

const signals = catchStopSignals();
const { run } = await import("./run.ts");
await run(signals);
