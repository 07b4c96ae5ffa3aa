import { CloseCode, type ServerControlFrame } from "@listings-chat/shared";
import type { Logger } from "pino";
import type WebSocket from "ws";
import { type Bus, shardOf } from "../bus/bus.ts";
import { recentContactsOf, requireParticipant, sharesPresence } from "../chats/repository.ts";
import type { ChatService } from "../chats/service.ts";
import type { Database } from "../db/client.ts";
import type { ChatRow } from "../db/rows.ts";
import { type AddressedEvent, lastEventId, lastEventIds, readEventRange, readStreamPage } from "../events/log.ts";
import {
  type BusMessage,
  type ContactMessage,
  publishContact,
  publishFrame as publishFrameTo,
} from "../events/publisher.ts";
import type { TypingGate } from "../limits/typing-gate.ts";
import type { MessageService } from "../messages/service.ts";
import type { Stats } from "../ops/stats.ts";
import type { HubTelemetry } from "../ops/telemetry.ts";
import type { Presence, PresenceState } from "../presence/presence.ts";
import { Connection, type ConnectionContext } from "./connection.ts";
import { createEventSequencer } from "./sequencer.ts";

/**
 * Presence covers the other participants of this many of a user's most recently active chats, both ways:
 * what a page shows (its chat list's first page), so a connect costs the same for every account.
 */
export const PRESENCE_CONTACTS = 100;

/**
 * How long after a user's last socket here closes their "offline" waits (CONTRACT §10: "offline" only after
 * a short grace). A socket of theirs back within it cancels it, so a dropped connection that the client
 * reconnects (its first backoff step is under 1 s, the second under 2 s, a page reload takes a second or two)
 * and a user who connects and closes in a loop send their contacts nothing. Longer would show a user
 * who has left as online for longer; a shutdown announces at once instead of waiting.
 */
export const PRESENCE_LEAVE_GRACE_MS = 3_000;

export interface HubOptions {
  db: Database;
  /** The pool of page reads: replays after a reconnect; `db` when there is one pool. */
  reads?: Database;
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
  /** Tests shorten the per-socket bounds (hub/connection.ts; the contract's values otherwise). */
  socketLimits?: Pick<ConnectionContext, "inboundQueueFrames" | "replayPageTimeoutMs" | "resumeIntervalMs">;
  /** The bounds of a replay page (events/log.ts's defaults when not given). */
  replayPage?: { maxEvents?: number; maxBytes?: number };
  /** PRESENCE_LEAVE_GRACE_MS unless a test shortens it (0: "offline" at once). */
  presenceLeaveGraceMs?: number;
  /** How often the ends of the followed streams are compared with what was delivered (default 2 s). */
  tailCheckIntervalMs?: number;
  /** Histograms and counters the hub feeds (ops/telemetry.ts); none in tests that do not look. */
  telemetry?: HubTelemetry;
  /** A suspension or its lifting heard from the bus (CONTRACT §8; platform/suspensions.ts). */
  onSuspension?: (userId: number, until: number | null | "lifted") => void;
}

interface ShardListen {
  shard: number;
  users: number;
  listening: Promise<void>;
}

/** One user's stream as this instance follows it: positioned once the shard is heard and the end is read. */
interface FollowedStream {
  /** Resolves to the stream's end as read once its shard was heard: where the sequencer starts. */
  ready: Promise<number>;
  /** The listen to the user's shard this stream counts in. */
  shard: ShardListen;
  sequencer?: ReturnType<typeof createEventSequencer>;
  /** Events the bus brought before the sequencer was positioned. */
  early: AddressedEvent[];
  /** The stream's end as the previous tail check read it. */
  endSeen: number;
}

export type Hub = ReturnType<typeof createHub>;

/**
 * Sockets by user, and delivery of what the bus brings to the sockets of the people it is for.
 * Knows sockets and events, not SQL: reading the streams goes through events/log.ts.
 */
export function createHub(options: HubOptions) {
  const { db, bus, presence, stats, log, telemetry } = options;
  const reads = options.reads ?? db;
  const sockets = new Map<number, Set<Connection>>();
  /** The streams of the users with sockets here: the only ones this instance listens to and delivers. */
  const streams = new Map<number, FollowedStream>();
  /** Shards listened to, with how many followed users are in each. */
  const shards = new Map<number, ShardListen>();
  /** Sockets accepted whose greeting is not sent yet: the queue that admission bounds (upgrade.ts). */
  let opening = 0;
  let heartbeat: NodeJS.Timeout | undefined;
  let tailCheck: NodeJS.Timeout | undefined;

  const context = {
    events: {
      lastEventId: (userId: number) => lastEventId(db, userId),
      readPage: (userId: number, after: number) => readStreamPage(reads, userId, after, options.replayPage),
      participantChat: (chatId: number, userId: number) => requireParticipant(db, chatId, userId),
    },
    chats: options.chats,
    messages: options.messages,
    stats,
    log,
    slowConsumerBytes: options.slowConsumerBytes,
    relayTyping,
    observeReplay: (seconds: number) => telemetry?.replaySeconds.observe(seconds),
    ...options.socketLimits,
  };

  function dispatch({ userId, event }: AddressedEvent) {
    // Encoded once, written to every socket of the user as is.
    const data = Buffer.from(JSON.stringify(event));
    stats.broadcastsTotal += 1;
    // A message's commit to its fan-out here: the bus, this instance's sequencer and its event loop.
    if (telemetry && event.type === "new_message" && sockets.has(userId)) {
      const committedAt = Date.parse(event.message.created_at);
      if (Number.isFinite(committedAt))
        telemetry.deliverySeconds.observe(Math.max(0, Date.now() - committedAt) / 1_000);
    }
    for (const connection of sockets.get(userId) ?? []) connection.deliverEvent(event.event_id, data);
  }

  function deliverFrame(message: Extract<BusMessage, { kind: "frame" }>) {
    stats.broadcastsTotal += 1;
    const { frame } = message;
    // `userId` alone: a frame from an instance of the release before frames went per shard (a rolling deploy).
    const legacy = (message as { userId?: number }).userId;
    for (const userId of message.userIds ?? (legacy === undefined ? [] : [legacy])) {
      for (const connection of sockets.get(userId) ?? []) {
        if (frame.type === "presence" && message.version !== undefined) {
          connection.applyPresence(frame.user_id, frame.online, message.version);
        } else connection.sendFrame(frame);
      }
    }
  }

  /** What the bus brings; a message this instance cannot read is counted and logged, never thrown into the bus client. */
  function receive(raw: string) {
    try {
      route(JSON.parse(raw) as BusMessage);
    } catch (error) {
      stats.errorsTotal += 1;
      log.warn({ err: error }, "could not handle a message from the bus");
    }
  }

  function route(message: BusMessage) {
    if (message.kind === "frame") return deliverFrame(message);
    if (message.kind === "contact") return void applyContact(message);
    if (message.kind === "suspension") return options.onSuspension?.(message.subjectUserId, message.until);
    const stream = streams.get(message.userId);
    // A user of this shard whom this instance does not serve: nothing to do.
    if (!stream) return;
    if (stream.sequencer) stream.sequencer.accept(message);
    else stream.early.push(message);
  }

  /** The platform suspended the user (CONTRACT §8): their sockets here close with 4003. */
  function closeSocketsOfSuspended(userId: number) {
    for (const connection of sockets.get(userId) ?? []) {
      connection.close(CloseCode.suspended, "suspended by the platform");
    }
  }

  /** Resolves once every copy is handed to the bus (a failure is counted and logged, never thrown). */
  function publishFrame(frame: ServerControlFrame, audience: readonly number[], version?: number): Promise<unknown> {
    return Promise.all(
      publishFrameTo(bus, audience, frame, version).map((published) =>
        published.catch((error) => {
          stats.errorsTotal += 1;
          log.warn({ err: error }, "could not publish a typing or presence frame");
        }),
      ),
    );
  }

  /**
   * Relays typing to the other participant when the gate lets it through (at most once per 2 s) and the two
   * share presence (CONTRACT §10: both wrote in the chat, neither blocks the other). The gate is asked
   * first, so a flood of typing frames costs Redis, not a query each.
   */
  async function relayTyping(userId: number, chat: ChatRow, isTyping: boolean) {
    if (!(await options.typingGate(userId, chat.id, isTyping))) return;
    const other = chat.buyerId === userId ? chat.sellerId : chat.buyerId;
    if (!(await sharesPresence(db, chat.id, userId, other))) return;
    void publishFrame({ type: "typing", chat_id: chat.id, user_id: userId, is_typing: isTyping }, [other]);
  }

  /** The latest contact change being applied per "user:contact": an older share still reading is dropped. */
  const contactChanges = new Map<string, number>();
  let contactChangeCount = 0;

  /**
   * A change of whom a user's sockets may show (a first reply made two people contacts; a block or an
   * unblock), heard from the bus on the instance that holds the user's sockets: a new contact's presence is
   * read and shown at once (no reconnect needed), a lost one is shown offline and ignored from then on.
   */
  async function applyContact({ userId, contact, shared }: ContactMessage) {
    const set = sockets.get(userId);
    if (!set) return;
    const key = `${userId}:${contact}`;
    const change = ++contactChangeCount;
    contactChanges.set(key, change);
    try {
      if (!shared) {
        for (const connection of set) connection.hidePresenceOf(contact);
        return;
      }
      // A share can lose a race with a block: it was decided before the block committed and reaches the bus
      // after the block's hide, or a hide arrives while the state is being read. So it is checked again here,
      // against the database as it is now (a hide heard before this read comes after its block's commit),
      // and dropped when a newer change came meanwhile.
      const [[state], contacts] = await Promise.all([
        presence.states([contact]),
        recentContactsOf(db, userId, PRESENCE_CONTACTS),
      ]);
      if (contactChanges.get(key) !== change || !contacts.includes(contact) || !state) return;
      for (const connection of sockets.get(userId) ?? []) connection.sharePresenceOf(contact, state);
    } finally {
      // Only changes in flight are kept: the map stays as small as the races it settles.
      if (contactChanges.get(key) === change) contactChanges.delete(key);
    }
  }

  /** Tells both users' instances that the two may (or may no longer) see each other's presence. */
  function contactsChanged(userA: number, userB: number, shared: boolean): Promise<unknown> {
    return Promise.all(
      [
        { userId: userA, contact: userB },
        { userId: userB, contact: userA },
      ].map((pair) =>
        publishContact(bus, { kind: "contact", shared, ...pair }).catch((error) => {
          stats.errorsTotal += 1;
          log.warn({ err: error }, "could not publish a change of contacts; presence is read again on connect");
        }),
      ),
    );
  }

  /**
   * Tells the contacts who are online that `userId`'s presence changed. An offline contact has no socket
   * to tell, and reads the state when they connect: each side changes its own state before it reads the
   * other's, so of two users connecting at once at least one sees the other. So a seller whose 100 recent
   * contacts are offline publishes nothing.
   */
  async function announcePresence(
    userId: number,
    change: PresenceState,
    contacts: readonly number[],
    states: readonly (PresenceState | undefined)[],
  ) {
    const online = contacts.filter((_, i) => states[i]?.online);
    // Awaited: a shutdown waits for the announcements of its users' leaving before it closes the bus.
    await publishFrame({ type: "presence", user_id: userId, online: change.online }, online, change.version);
  }

  /**
   * Whose presence `userId`'s page is shown, and who hears about theirs (see `recentContactsOf`), with
   * their presence now.
   */
  async function contactsWithStates(userId: number) {
    const contacts = await recentContactsOf(db, userId, PRESENCE_CONTACTS);
    return { contacts, states: await presence.states(contacts) };
  }

  /** Counts a user in `shard`, listening to it when they are the first; a failed listen is retried by the next. */
  function listenTo(shard: number): ShardListen {
    const known = shards.get(shard);
    if (known) {
      known.users += 1;
      return known;
    }
    const entry: ShardListen = { shard, users: 1, listening: bus.listen(shard) };
    shards.set(shard, entry);
    entry.listening.catch(() => {
      if (shards.get(shard) === entry) shards.delete(shard);
    });
    return entry;
  }

  function stopListening(entry: ShardListen) {
    if (--entry.users > 0 || shards.get(entry.shard) !== entry) return;
    shards.delete(entry.shard);
    bus
      .unlisten(entry.shard)
      .catch((error) => log.warn({ err: error, shard: entry.shard }, "could not stop listening to a shard"));
  }

  /**
   * Starts following a user's stream: listens to their shard first, then reads the stream's end, so that
   * every event after that end reaches the sequencer (from the bus, or from the stream when the bus lost it).
   */
  function follow(userId: number): FollowedStream {
    const shard = listenTo(shardOf(userId));
    const stream: FollowedStream = { ready: Promise.resolve(0), shard, early: [], endSeen: 0 };
    streams.set(userId, stream);
    stream.ready = (async () => {
      await shard.listening;
      const start = await lastEventId(db, userId);
      if (streams.get(userId) !== stream) return start;
      stream.sequencer = createEventSequencer({
        startAfter: start,
        fetchRange: (after, upTo) => readEventRange(db, userId, after, upTo),
        deliver: dispatch,
        onGapFill: () => telemetry?.gapFills.inc(),
        onError: (error) => {
          stats.errorsTotal += 1;
          log.error({ err: error, user: userId }, "could not read missing events from a stream; will retry");
        },
      });
      for (const addressed of stream.early.splice(0)) stream.sequencer.accept(addressed);
      return start;
    })();
    // Awaited by every socket that attaches; until then a failure must not become an unhandled rejection.
    stream.ready.catch(() => {});
    return stream;
  }

  function unfollow(userId: number) {
    const stream = streams.get(userId);
    if (!stream) return;
    streams.delete(userId);
    stream.sequencer?.stop();
    stopListening(stream.shard);
  }

  function tick() {
    for (const set of sockets.values()) for (const connection of set) connection.heartbeat();
    presence.refresh(sockets.keys()).catch((error) => log.warn({ err: error }, "presence refresh failed"));
  }

  /**
   * A publish lost at the tail of a stream (a publisher killed after its commit, a Redis hiccup) has no later
   * event to reveal the gap: an end seen one check ago and still not delivered is read from the stream.
   * One query for all the users this instance follows.
   */
  async function checkTails() {
    const followed = [...streams.entries()].filter(([, stream]) => stream.sequencer);
    const ends = await lastEventIds(
      db,
      followed.map(([userId]) => userId),
    );
    for (const [userId, stream] of followed) {
      if (stream.sequencer && stream.sequencer.delivered() < stream.endSeen)
        await stream.sequencer.catchUp(stream.endSeen);
      stream.endSeen = ends.get(userId) ?? 0;
    }
  }

  /** Leaves being announced; a shutdown waits for them, so contacts hear "offline" before the bus closes. */
  const leaving = new Set<Promise<unknown>>();
  /** Users whose last socket here closed within the grace: their leave waits, and a socket of theirs cancels it. */
  const leavesInGrace = new Map<number, NodeJS.Timeout>();
  const leaveGraceMs = options.presenceLeaveGraceMs ?? PRESENCE_LEAVE_GRACE_MS;
  /** Set by `shutdown`: from then on, leaves are announced at once. */
  let shuttingDown = false;

  function detach(connection: Connection) {
    stats.disconnectionsTotal += 1;
    const set = sockets.get(connection.userId);
    if (!set?.delete(connection) || set.size > 0) return;
    sockets.delete(connection.userId);
    unfollow(connection.userId);
    if (shuttingDown || leaveGraceMs <= 0) return leave(connection.userId);
    const userId = connection.userId;
    const timer = setTimeout(() => {
      leavesInGrace.delete(userId);
      leave(userId);
    }, leaveGraceMs);
    // A process that ends without a shutdown loses its claims by expiry anyway (presence.ts).
    timer.unref();
    leavesInGrace.set(userId, timer);
  }

  /** The user's last socket here is gone (and stayed gone through the grace): tells their contacts if they are offline now. */
  function leave(userId: number) {
    const left = presence
      .leave(userId)
      .then(async (change) => {
        if (!change.changed) return;
        const { contacts, states } = await contactsWithStates(userId);
        await announcePresence(userId, change, contacts, states);
      })
      .catch((error) => log.warn({ err: error }, "presence update failed"))
      .finally(() => leaving.delete(left));
    leaving.add(left);
  }

  /** A user back within the grace never left: no leave, and their join changes nothing (so announces nothing). */
  function cancelLeave(userId: number) {
    const timer = leavesInGrace.get(userId);
    if (!timer) return;
    clearTimeout(timer);
    leavesInGrace.delete(userId);
  }

  return {
    /** Starts hearing the bus (for the shards of the users who connect) and the timers. Call before attaching sockets. */
    async start() {
      bus.onMessage(receive);
      heartbeat = setInterval(tick, options.heartbeatIntervalMs);
      heartbeat.unref();
      tailCheck = setInterval(() => {
        checkTails().catch((error) => log.warn({ err: error }, "could not read the ends of the streams"));
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
      socket.on("close", (code) => {
        telemetry?.closes.inc({ code: String(code) });
        detach(connection);
      });
      let set = sockets.get(userId);
      const first = !set;
      if (!set) {
        set = new Set();
        sockets.set(userId, set);
      }
      set.add(connection);
      const followed = streams.get(userId);
      const stream = followed ?? follow(userId);
      if (first) cancelLeave(userId);
      // Started now, not after the replay, so that a quick close's `leave` is ordered after it.
      const joined = first ? presence.join(userId) : Promise.resolve(undefined);
      // Awaited below; until then a Redis failure must not become an unhandled rejection (which exits Node).
      joined.catch(() => {});
      // Opened at once, so that frames the client sends right away queue behind the greeting; the greeting
      // waits until the stream is followed, so that nothing committed after its end is missed.
      // A stream followed for this socket has just had its end read, after its shard was heard: the greeting
      // can take it. One followed before may have moved on since: the greeting reads the end again.
      const opened = connection.open(after, followed ? stream.ready.then(() => undefined) : stream.ready);
      opening += 1;
      const acceptedAt = performance.now();
      const greeted = () => {
        opening -= 1;
      };
      opened.then(() => {
        greeted();
        telemetry?.upgradeSeconds.observe((performance.now() - acceptedAt) / 1_000);
      }, greeted);
      void (async () => {
        await opened;
        const join = await joined;
        // Read after joining (see announcePresence).
        const { contacts, states } = await contactsWithStates(userId);
        if (join?.changed) await announcePresence(userId, join, contacts, states);
        // The snapshot and the live announcements meet in applyPresence, where the newer report wins.
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

    /** How many accepted sockets are still waiting for their greeting. */
    opening: () => opening,

    /** Closes the user's sockets here with 4003: the platform suspended them (CONTRACT §8). */
    closeSocketsOfSuspended,

    /**
     * The two may (or may no longer) see each other's presence: a first reply, a block, an unblock. A share
     * is checked against each side's contacts where it is applied (`applyContact`), so after an unblock each
     * sees the other again exactly when a connect would find them.
     */
    contactsChanged,

    snapshot() {
      let connections = 0;
      for (const set of sockets.values()) connections += set.size;
      return { connections, usersOnline: sockets.size };
    },

    /** Closes every socket with 1001 and waits for them to go, at most `deadlineMs`. */
    async shutdown(deadlineMs: number) {
      // Contacts hear "offline" now, not after a grace that would outlive the bus.
      shuttingDown = true;
      for (const userId of [...leavesInGrace.keys()]) {
        cancelLeave(userId);
        leave(userId);
      }
      if (heartbeat) clearInterval(heartbeat);
      if (tailCheck) clearInterval(tailCheck);
      for (const stream of streams.values()) stream.sequencer?.stop();
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
