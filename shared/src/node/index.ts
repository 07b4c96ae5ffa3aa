export * from "./logger.ts";
export * from "./refuse-upgrade.ts";
