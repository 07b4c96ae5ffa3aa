import type { Logger } from "pino";
import type { Database } from "../db/client.ts";
import type { PublishEvent } from "../events/publisher.ts";

export interface ErasuresOptions {
  db: Database;
  publish: PublishEvent;
  log: Logger;
}

/** Erasures of people (CONTRACT §12). Being written. */
export function createErasures(_options: ErasuresOptions) {
  return {
    async request(userId: number): Promise<void> {
      throw new Error(`erasure of user ${userId}: not built yet`);
    },
    start() {},
    async stop() {},
  };
}

export type Erasures = ReturnType<typeof createErasures>;
