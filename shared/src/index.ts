export * from "./api-schemas.ts";
export * from "./dev.ts";
export * from "./error-body.ts";
export * from "./ids.ts";
export * from "./protocol.ts";
