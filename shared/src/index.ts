export * from "./codes.ts";
export * from "./protocol.ts";
export * from "./dev.ts";
