import type { ChatEvent, ServerControlFrame } from "@listings-chat/shared";
import type { Logger } from "pino";
import { type Bus, shardOf } from "../bus/bus.ts";
import type { Stats } from "../ops/stats.ts";
import type { AddressedEvent } from "./log.ts";

/**
 * What travels on the bus: a stored event for one user, a frame that is not stored (typing, presence) for the
 * users of one shard, a change of contacts, or a suspension.
 */
export type BusMessage = EventMessage | FrameMessage | ContactMessage | SuspensionMessage;

interface EventMessage {
  kind: "event";
  userId: number;
  event: ChatEvent;
}

interface FrameMessage {
  kind: "frame";
  /** All in one shard: the one the message is published on. */
  userIds: number[];
  frame: ServerControlFrame;
  /** Orders reports about one user's presence (see presence/presence.ts). */
  version?: number;
}

/**
 * Whether `userId`'s sockets may show `contact`'s presence (CONTRACT §10: both wrote in a chat they share and
 * neither blocks the other), sent when that changes: a first reply, a block, an unblock. Not stored: a socket
 * that connects later reads its contacts from the database.
 */
export interface ContactMessage {
  kind: "contact";
  userId: number;
  contact: number;
  shared: boolean;
}

/** Puts a contact change on the shard of the user it is for. */
export function publishContact(bus: Bus, message: ContactMessage): Promise<void> {
  return bus.publish(shardOf(message.userId), JSON.stringify(message));
}

/** Puts an event on the shard of the user it is for. */
export function publishEvent(bus: Bus, message: EventMessage): Promise<void> {
  return bus.publish(shardOf(message.userId), JSON.stringify(message));
}

/**
 * Puts a frame for `audience` on the bus: one message per shard the audience falls in, not one per user, so
 * that announcing a seller's presence to 100 contacts costs at most `BUS_SHARDS` publishes.
 */
export function publishFrame(
  bus: Bus,
  audience: readonly number[],
  frame: ServerControlFrame,
  version?: number,
): Promise<void>[] {
  const byShard = new Map<number, number[]>();
  for (const userId of audience) {
    const shard = shardOf(userId);
    const users = byShard.get(shard);
    if (users) users.push(userId);
    else byShard.set(shard, [userId]);
  }
  return [...byShard].map(([shard, userIds]) =>
    bus.publish(shard, JSON.stringify({ kind: "frame", userIds, frame, version } satisfies FrameMessage)),
  );
}

/** Hands committed events to the bus. Called only after the transaction that stored them has committed. */
export type PublishEvent = (events: readonly AddressedEvent[]) => void;

/** The publisher the services use. A failure is logged; the streams still have the events. */
export function createBusPublisher(bus: Bus, stats: Stats, log: Logger): PublishEvent {
  return (events) => {
    for (const { userId, event } of events) {
      publishEvent(bus, { kind: "event", userId, event }).catch((error) => {
        stats.errorsTotal += 1;
        log.warn(
          { err: error, user: userId, event_id: event.event_id },
          "could not publish an event; the user's instance will read it from their stream",
        );
      });
    }
  };
}

/**
 * The platform suspended a user, or lifted a suspension (CONTRACT §8): every instance that hears it updates its
 * suspensions in force (platform/suspensions.ts), and those holding the user's sockets close them with 4003.
 * Not stored: the write functions refuse the user's writes whatever the bus does, and each instance reads the
 * suspensions again every few seconds. The user is not in a `userId` field: pods of the release before take
 * any message kind they do not know for an event of its `userId`, and without one they drop it.
 */
export interface SuspensionMessage {
  kind: "suspension";
  subjectUserId: number;
  /** The end of the suspension in epoch ms, null for "until lifted"; `"lifted"` when it was lifted. */
  until: number | null | "lifted";
}

/** Puts a suspension, or its lifting, on the shard of the user it is about. */
export function publishSuspension(bus: Bus, userId: number, until: SuspensionMessage["until"]): Promise<void> {
  const message: SuspensionMessage = { kind: "suspension", subjectUserId: userId, until };
  return bus.publish(shardOf(userId), JSON.stringify(message));
}
