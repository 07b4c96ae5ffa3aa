/** What instances tell each other. One small interface, two implementations: memory.ts and redis.ts. */
export type BusChannel = "events" | "ephemeral";

export interface Bus {
  readonly kind: "memory" | "redis";
  publish(channel: BusChannel, message: string): Promise<void>;
  /** Handlers are called in the order the bus delivers, once per message. */
  subscribe(channel: BusChannel, handler: (message: string) => void): Promise<void>;
  isConnected(): boolean;
  close(): Promise<void>;
}
