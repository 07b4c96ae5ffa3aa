export * from "./config.ts";
export * from "./internal-token.ts";
export * from "./listen.ts";
export * from "./logger.ts";
export * from "./probe.ts";
export * from "./redis-client.ts";
export * from "./refuse-upgrade.ts";
export * from "./run-service.ts";
