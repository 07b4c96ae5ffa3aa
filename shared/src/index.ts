export * from "./api-schemas.ts";
export * from "./codes.ts";
export * from "./dev.ts";
export * from "./ids.ts";
export * from "./protocol.ts";
