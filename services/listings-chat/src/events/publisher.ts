import type { ChatEvent } from "@listings-chat/shared";
import type { Logger } from "pino";
import type { Bus } from "../bus/bus.ts";
import type { ChatRow } from "../db/rows.ts";
import type { Stats } from "../ops/stats.ts";
import type { AddressedEvent } from "./log.ts";

/** Hands a committed event to the bus. Called only after the transaction that stored it has committed. */
export type PublishEvent = (addressed: AddressedEvent) => void;

export const addressTo = (chat: ChatRow, event: ChatEvent): AddressedEvent => ({
  event,
  audience: [chat.buyerId, chat.sellerId],
});

/** The publisher the services use: every instance hears it through the bus. A failure is logged; the log still has the event. */
export function createBusPublisher(bus: Bus, stats: Stats, log: Logger): PublishEvent {
  return (addressed) => {
    bus.publish("events", JSON.stringify(addressed)).catch((error) => {
      stats.errorsTotal += 1;
      log.warn(
        { err: error, event_id: addressed.event.event_id },
        "could not publish an event; instances will read it from the log",
      );
    });
  };
}
