import { CloseCode, type ServerControlFrame } from "@listings-chat/shared";
import type { Logger } from "pino";
import type WebSocket from "ws";
import type { Bus } from "../bus/bus.ts";
import { contactsOf, requireParticipant } from "../chats/repository.ts";
import type { ChatService } from "../chats/service.ts";
import type { Database } from "../db/client.ts";
import type { ChatRow } from "../db/rows.ts";
import { type AddressedEvent, lastEventId, readEventRange, readEventsForUser } from "../events/log.ts";
import type { TypingGate } from "../limits/typing-gate.ts";
import type { MessageService } from "../messages/service.ts";
import type { Stats } from "../ops/stats.ts";
import type { Presence, PresenceState } from "../presence/presence.ts";
import { Connection } from "./connection.ts";
import { createEventSequencer } from "./sequencer.ts";

export interface HubOptions {
  db: Database;
  bus: Bus;
  presence: Presence;
  chats: ChatService;
  messages: MessageService;
  stats: Stats;
  log: Logger;
  heartbeatIntervalMs: number;
  /** Decides whether a typing frame is relayed (at most once per 2 s per user and chat). */
  typingGate: TypingGate;
  slowConsumerBytes: number;
  replayPageSize?: number;
  /** How often the end of the log is compared with what was delivered (default 2 s). */
  tailCheckIntervalMs?: number;
}

/** A frame that is not stored (typing, presence) and the users it is for. */
type AddressedFrame =
  | { frame: Exclude<ServerControlFrame, { type: "presence" }>; audience: number[] }
  /** `version` orders reports about one user's presence (see presence.ts). */
  | { frame: Extract<ServerControlFrame, { type: "presence" }>; audience: number[]; version: number };

export type Hub = ReturnType<typeof createHub>;

/**
 * Sockets by user, and delivery of what the bus brings to the sockets of the people it is for.
 * Knows sockets and events, not SQL: reading the log goes through events/log.ts.
 */
export function createHub(options: HubOptions) {
  const { db, bus, presence, stats, log } = options;
  const sockets = new Map<number, Set<Connection>>();
  let sequencer: ReturnType<typeof createEventSequencer> | undefined;
  const early: AddressedEvent[] = [];
  let heartbeat: NodeJS.Timeout | undefined;
  let tailCheck: NodeJS.Timeout | undefined;

  const context = {
    events: {
      lastEventId: () => lastEventId(db),
      readForUser: (userId: number, after: number, limit: number) => readEventsForUser(db, userId, after, limit),
      participantChat: (chatId: number, userId: number) => requireParticipant(db, chatId, userId),
    },
    chats: options.chats,
    messages: options.messages,
    stats,
    log,
    slowConsumerBytes: options.slowConsumerBytes,
    replayPageSize: options.replayPageSize ?? 500,
    relayTyping,
  };

  function dispatch({ event, audience }: AddressedEvent) {
    // Encoded once, written to every socket as is.
    const data = Buffer.from(JSON.stringify(event));
    stats.broadcastsTotal += 1;
    for (const userId of audience) {
      for (const connection of sockets.get(userId) ?? []) connection.deliverEvent(event.event_id, data);
    }
  }

  function dispatchFrame(addressed: AddressedFrame) {
    stats.broadcastsTotal += 1;
    for (const userId of addressed.audience) {
      for (const connection of sockets.get(userId) ?? []) {
        if ("version" in addressed) {
          const { user_id, online } = addressed.frame;
          connection.applyPresence(user_id, online, addressed.version);
        } else connection.sendFrame(addressed.frame);
      }
    }
  }

  function publishFrame(addressed: AddressedFrame) {
    bus.publish("ephemeral", JSON.stringify(addressed)).catch((error) => {
      stats.errorsTotal += 1;
      log.warn({ err: error }, "could not publish a typing or presence frame");
    });
  }

  async function relayTyping(userId: number, chat: ChatRow, isTyping: boolean) {
    if (!(await options.typingGate(userId, chat.id))) return;
    const others = [chat.buyerId, chat.sellerId].filter((id) => id !== userId);
    publishFrame({
      frame: { type: "typing", chat_id: chat.id, user_id: userId, is_typing: isTyping },
      audience: others,
    });
  }

  async function announcePresence(userId: number, { online, version }: PresenceState) {
    const contacts = await contactsOf(db, userId);
    if (contacts.length > 0) {
      publishFrame({ frame: { type: "presence", user_id: userId, online }, audience: contacts, version });
    }
    return contacts;
  }

  function tick() {
    for (const set of sockets.values()) for (const connection of set) connection.heartbeat();
    presence.refresh(sockets.keys()).catch((error) => log.warn({ err: error }, "presence refresh failed"));
  }

  /** Leaves being announced; a shutdown waits for them, so contacts hear "offline" before the bus closes. */
  const leaving = new Set<Promise<unknown>>();

  function detach(connection: Connection) {
    stats.disconnectionsTotal += 1;
    const set = sockets.get(connection.userId);
    if (!set?.delete(connection) || set.size > 0) return;
    sockets.delete(connection.userId);
    const left = presence
      .leave(connection.userId)
      .then((change) => (change.changed ? announcePresence(connection.userId, change) : undefined))
      .catch((error) => log.warn({ err: error }, "presence update failed"))
      .finally(() => leaving.delete(left));
    leaving.add(left);
  }

  return {
    /** Subscribes to the bus and positions the sequencer at the end of the log. Call before attaching sockets. */
    async start() {
      await bus.subscribe("events", (message) => {
        const addressed = JSON.parse(message) as AddressedEvent;
        if (sequencer) sequencer.accept(addressed);
        else early.push(addressed);
      });
      await bus.subscribe("ephemeral", (message) => dispatchFrame(JSON.parse(message) as AddressedFrame));
      sequencer = createEventSequencer({
        startAfter: await lastEventId(db),
        fetchRange: (after, upTo) => readEventRange(db, after, upTo),
        deliver: dispatch,
        onError: (error) => {
          stats.errorsTotal += 1;
          log.error({ err: error }, "could not read missing events from the log; will retry");
        },
      });
      for (const addressed of early.splice(0)) sequencer.accept(addressed);
      heartbeat = setInterval(tick, options.heartbeatIntervalMs);
      heartbeat.unref();
      // A publish lost at the tail of the log (a publisher killed after its commit, a Redis hiccup) has no
      // later event to reveal the gap: an end of the log seen one check ago and still not delivered is read.
      let endSeen = 0;
      tailCheck = setInterval(() => {
        lastEventId(db).then(
          async (end) => {
            if (sequencer && sequencer.delivered() < endSeen) await sequencer.catchUp(endSeen);
            endSeen = end;
          },
          (error) => log.warn({ err: error }, "could not read the end of the event log"),
        );
      }, options.tailCheckIntervalMs ?? 2_000);
      tailCheck.unref();
    },

    /** Takes an upgraded socket of `userId`; replays from `after` when given. */
    attach(socket: WebSocket, userId: number, after: number | undefined, via: { gatewayId?: string } = {}): Connection {
      const connection = new Connection(socket, userId, context, via.gatewayId);
      stats.connectionsTotal += 1;
      socket.on("error", (error) => {
        stats.errorsTotal += 1;
        log.debug({ err: error, connection: connection.id }, "socket error");
      });
      socket.on("close", () => detach(connection));
      let set = sockets.get(userId);
      const first = !set;
      if (!set) {
        set = new Set();
        sockets.set(userId, set);
      }
      set.add(connection);
      // Started now, not after the replay, so that a quick close's `leave` is ordered after it.
      const joined = first ? presence.join(userId) : Promise.resolve(undefined);
      // Awaited below; until then a Redis failure must not become an unhandled rejection (which exits Node).
      joined.catch(() => {});
      void (async () => {
        await connection.open(after);
        const join = await joined;
        const contacts = join?.changed ? await announcePresence(userId, join) : await contactsOf(db, userId);
        // The snapshot and the live announcements meet in applyPresence, where the newer report wins.
        const states = await presence.states(contacts);
        contacts.forEach((contact, i) => {
          const state = states[i];
          if (state) connection.applyPresence(contact, state.online, state.version);
        });
        connection.showPresence();
      })().catch((error) => {
        stats.errorsTotal += 1;
        log.warn({ err: error, connection: connection.id }, "could not open the connection");
        connection.close(CloseCode.internalError, "could not open the connection, reconnect");
      });
      return connection;
    },

    /** Closes with 1001 every socket that came through `gatewayId` (a gateway at its drain deadline). */
    closeGatewaySockets(gatewayId: string): number {
      let closed = 0;
      for (const set of sockets.values()) {
        for (const connection of set) {
          if (connection.gatewayId !== gatewayId) continue;
          connection.close(CloseCode.goingAway, "gateway restarting: reconnect");
          closed += 1;
        }
      }
      return closed;
    },

    snapshot() {
      let connections = 0;
      for (const set of sockets.values()) connections += set.size;
      return { connections, usersOnline: sockets.size };
    },

    /** Closes every socket with 1001 and waits for them to go, at most `deadlineMs`. */
    async shutdown(deadlineMs: number) {
      if (heartbeat) clearInterval(heartbeat);
      if (tailCheck) clearInterval(tailCheck);
      sequencer?.stop();
      const all = [...sockets.values()].flatMap((set) => [...set]);
      const closed = all.map(
        (connection) =>
          new Promise<void>((resolve) => {
            if (connection.socket.readyState === connection.socket.CLOSED) return resolve();
            connection.socket.once("close", () => resolve());
            connection.close(CloseCode.goingAway, "server shutting down");
          }),
      );
      let timer: NodeJS.Timeout | undefined;
      const deadline = new Promise<void>((resolve) => {
        timer = setTimeout(resolve, deadlineMs);
      });
      await Promise.race([Promise.all(closed), deadline]);
      clearTimeout(timer);
      for (const connection of all) connection.socket.terminate();
      // Terminated sockets detach on their 'close', a tick later: then their "offline" is announced.
      await new Promise((resolve) => setImmediate(resolve));
      let announced: NodeJS.Timeout | undefined;
      await Promise.race([
        Promise.allSettled([...leaving]),
        new Promise((resolve) => {
          announced = setTimeout(resolve, 1_000);
        }),
      ]);
      clearTimeout(announced);
    },
  };
}
