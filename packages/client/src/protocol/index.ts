export * from "./codes.ts";
export * from "./shapes.ts";
