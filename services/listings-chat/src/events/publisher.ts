import type { ChatEvent, ServerControlFrame } from "@listings-chat/shared";
import type { Logger } from "pino";
import { type Bus, shardOf } from "../bus/bus.ts";
import type { Stats } from "../ops/stats.ts";
import type { AddressedEvent } from "./log.ts";

/** What travels on the bus: a stored event for one user, or a frame that is not stored (typing, presence). */
export type BusMessage =
  | { kind: "event"; userId: number; event: ChatEvent }
  /** `version` orders reports about one user's presence (see presence/presence.ts). */
  | { kind: "frame"; userId: number; frame: ServerControlFrame; version?: number };

/** Puts `message` on the shard of the user it is for. */
export function publishTo(bus: Bus, message: BusMessage): Promise<void> {
  return bus.publish(shardOf(message.userId), JSON.stringify(message));
}

/** Hands committed events to the bus. Called only after the transaction that stored them has committed. */
export type PublishEvent = (events: readonly AddressedEvent[]) => void;

/** The publisher the services use. A failure is logged; the streams still have the events. */
export function createBusPublisher(bus: Bus, stats: Stats, log: Logger): PublishEvent {
  return (events) => {
    for (const { userId, event } of events) {
      publishTo(bus, { kind: "event", userId, event }).catch((error) => {
        stats.errorsTotal += 1;
        log.warn(
          { err: error, user: userId, event_id: event.event_id },
          "could not publish an event; the user's instance will read it from their stream",
        );
      });
    }
  };
}
