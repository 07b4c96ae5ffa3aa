import { randomBytes, randomUUID } from "node:crypto";
import {
  type ClientFrame,
  CloseCode,
  clientFrameSchema,
  clientFrameTypes,
  ErrorCode,
  Limits,
  type ServerControlFrame,
} from "@listings-chat/shared";
import type { Logger } from "pino";
import WebSocket from "ws";
import type { ChatService } from "../chats/service.ts";
import type { ChatRow } from "../db/rows.ts";
import { ChatError, RateLimitedError, storing } from "../errors.ts";
import type { StreamPage } from "../events/log.ts";
import type { MessageService } from "../messages/service.ts";
import type { Stats } from "../ops/stats.ts";

/** What a connection needs from the instance around it. */
export interface ConnectionContext {
  /** The event log, as a connection needs it (events/log.ts over the database). */
  events: EventReader;
  chats: ChatService;
  messages: MessageService;
  stats: Stats;
  log: Logger;
  slowConsumerBytes: number;
  relayTyping(userId: number, chat: ChatRow, isTyping: boolean): Promise<void>;
  /** Told how long each replay took, from its first page read to live. */
  observeReplay?: (seconds: number) => void;
  /** Frames waiting to be handled before the socket stops being read (Limits.inboundQueueFrames). */
  inboundQueueFrames?: number;
  /** How long a replay page may wait for the client to take it (Limits.replayPageTimeoutMs). */
  replayPageTimeoutMs?: number;
  /** The least time between two replays of one socket (Limits.resumeIntervalMs). */
  resumeIntervalMs?: number;
  /** Milliseconds since the epoch; Date.now unless a test injects its own clock. */
  now?: () => number;
}

export interface EventReader {
  /** The end of `userId`'s stream. */
  lastEventId(userId: number): Promise<number>;
  /** A page of `userId`'s stream after `after`, oldest first, bounded in events and in bytes. */
  readPage(userId: number, after: number): Promise<StreamPage>;
  /** The chat when `userId` takes part in it; a 404 ChatError otherwise. */
  participantChat(chatId: number, userId: number): Promise<ChatRow>;
}

/** A serialized text frame: a string, or its UTF-8 bytes when one encoding serves many sockets. */
export type Frame = string | Buffer;

const SLOW_CONSUMER_GRACE_MS = 5_000;

/** Pings the server sent that a pong may still answer: the latest two (a late pong to the one before counts). */
const PINGS_REMEMBERED = 2;

/** Chats whose `mark_read` a socket may have being stored at once before its queue waits for one. */
const MARKS_IN_FLIGHT = 8;

/** A replay page the client did not take in time: the socket is closed instead of waiting on it. */
class ReplayStalled extends Error {}

/**
 * Owns one socket: parses and validates what the client sends, writes what the hub delivers,
 * and keeps the socket's event stream gapless, in order and without repeats across replays.
 */
export class Connection {
  readonly id = randomUUID();
  /** The last event id written to this socket. */
  private lastSent = 0;
  /** Events the hub delivered while a replay was running; undefined when live. */
  private heldBack: Array<{ id: number; data: Frame }> | undefined = [];
  private heldBackBytes = 0;
  /**
   * Held-back events were let go (past the slow-consumer limit, during a long replay to a slow reader):
   * they are in the stream, so the replay reads on until it has caught up without letting any go.
   */
  private heldBackDropped = false;
  private missedPongs = 0;
  /** The payloads of the server's latest pings: only a pong that echoes one of them counts as alive. */
  private readonly pingsSent: Buffer[] = [];
  private closing = false;
  /**
   * Work waiting its turn: the greeting, then frames, handled one at a time so that two sends from one
   * socket are stored in the order sent. Bounded: at `inboundQueueFrames` the socket is paused (not read),
   * so a client that sends faster than it is served is held back by TCP instead of by this process's
   * memory. (ws still hands over the frames of the read in progress, at most one socket read, 64 KiB.)
   */
  private readonly inbound: Array<() => Promise<void>> = [];
  private handling = false;
  private paused = false;
  /** Per chat, the `mark_read` being stored for this socket and the highest id asked for since. */
  private readonly marks = new Map<number, { latest: number }>();
  /** When the latest replay started (the upgrade's `after=` counts): `resume` is limited from it. */
  private lastReplayAt = Number.NEGATIVE_INFINITY;
  private readonly knownChats = new Map<number, ChatRow>();
  private greeted = false;
  /** The newest presence known of each contact, and whether the client has been told about presence yet. */
  private readonly presence = new Map<number, { online: boolean; version: number; shown: boolean }>();
  private presenceShown = false;
  /** Users this socket may no longer show (a block): shown offline, whatever reports still arrive. */
  private readonly presenceHidden = new Set<number>();
  readonly socket: WebSocket;
  readonly userId: number;
  private readonly ctx: ConnectionContext;
  /** The gateway the socket came through, when it said. */
  readonly gatewayId: string | undefined;

  constructor(socket: WebSocket, userId: number, ctx: ConnectionContext, gatewayId?: string) {
    this.socket = socket;
    this.userId = userId;
    this.ctx = ctx;
    this.gatewayId = gatewayId;
    socket.on("pong", (data) => {
      // An unsolicited pong (RFC 6455 allows them) proves nothing: a client that stopped reading could
      // keep its socket alive with them for ever.
      if (!this.pingsSent.some((sent) => sent.equals(data))) return;
      this.missedPongs = 0;
      this.pingsSent.length = 0;
    });
    socket.on("message", (data, isBinary) => this.receive(data, isBinary));
  }

  /**
   * Greets the client, then replays from `after` (or starts from now) and goes live. Called at once when the
   * socket is attached, before any frame can arrive: the greeting is the first thing queued, so every frame
   * waits behind it. `ready` is what the greeting must wait for (the hub following the user's stream); when
   * it resolves to a number, that is the stream's end read after the stream was followed, and the greeting
   * uses it instead of reading the end again.
   */
  open(after: number | undefined, ready: Promise<number | undefined> = Promise.resolve(undefined)): Promise<void> {
    if (after !== undefined) this.lastReplayAt = this.now();
    // Queued like a frame, so that a `resume` sent right away waits for this first replay to finish.
    return new Promise((resolve, reject) => {
      this.enqueue(async () => {
        try {
          await this.greetAndReplay(after, await ready);
          resolve();
        } catch (error) {
          reject(error);
        }
      });
    });
  }

  private now(): number {
    return (this.ctx.now ?? Date.now)();
  }

  /** Queues work behind what is waiting; pauses the socket once the queue is full. */
  private enqueue(work: () => Promise<void>): void {
    this.inbound.push(work);
    if (!this.paused && this.inbound.length >= (this.ctx.inboundQueueFrames ?? Limits.inboundQueueFrames)) {
      this.paused = true;
      this.socket.pause();
    }
    if (!this.handling) void this.handleQueued();
  }

  private async handleQueued(): Promise<void> {
    this.handling = true;
    const limit = this.ctx.inboundQueueFrames ?? Limits.inboundQueueFrames;
    for (let work = this.inbound.shift(); work; work = this.inbound.shift()) {
      // Read again once half the queue is free, not at the first free slot: fewer pause/resume flips.
      if (this.paused && this.inbound.length <= limit / 2) {
        this.paused = false;
        if (!this.closing) this.socket.resume();
      }
      await work();
    }
    this.handling = false;
  }

  /** Frames waiting to be handled (the greeting counts while it is waiting). */
  queued(): number {
    return this.inbound.length;
  }

  private async greetAndReplay(after: number | undefined, end: number | undefined): Promise<void> {
    const current = end ?? (await this.ctx.events.lastEventId(this.userId));
    this.greeted = true;
    this.sendFrame({
      type: "connected",
      user_id: this.userId,
      connection_id: this.id,
      timestamp: new Date().toISOString(),
      last_event_id: current,
    });
    // A cursor beyond the end of the stream (renumbered, restored) starts from the end: the client sees
    // `last_event_id` below its cursor and resyncs, instead of having every new event dropped as seen.
    await this.replayFrom(Math.min(after ?? current, current));
  }

  /** Called by the hub for every event of this user's chats, in log order. */
  deliverEvent(id: number, data: Frame): void {
    if (this.heldBack) {
      this.heldBackBytes += data.length;
      if (this.heldBackBytes > this.ctx.slowConsumerBytes) {
        this.heldBack = [];
        this.heldBackBytes = 0;
        this.heldBackDropped = true;
        return;
      }
      this.heldBack.push({ id, data });
      return;
    }
    if (id <= this.lastSent) return;
    this.lastSent = id;
    this.write(data);
  }

  sendFrame(frame: ServerControlFrame | (ServerControlFrame & Record<string, unknown>)): void {
    // Typing is ephemeral: one that comes before the greeting is dropped, so that `connected` stays first.
    if (!this.greeted && frame.type !== "connected") return;
    this.write(JSON.stringify(frame));
  }

  /**
   * The one door of presence to this socket, for the snapshot on connect and for live announcements alike:
   * a report older than one already applied loses, and the client gets a frame only when what it was
   * told changes. Until `showPresence`, reports are only recorded.
   */
  applyPresence(userId: number, online: boolean, version: number): void {
    const known = this.presence.get(userId);
    if (known && version < known.version) return;
    if (!known) this.presence.set(userId, { online, version, shown: false });
    else {
      known.online = online;
      known.version = version;
    }
    if (this.presenceShown) this.showPresenceOf(userId);
  }

  /** Called once the snapshot of contacts' presence is applied: from now on the client hears every change. */
  showPresence(): void {
    this.presenceShown = true;
    for (const userId of this.presence.keys()) this.showPresenceOf(userId);
  }

  private showPresenceOf(userId: number): void {
    const state = this.presence.get(userId);
    // A contact the client was never told about is offline to it.
    if (!state) return;
    const online = state.online && !this.presenceHidden.has(userId);
    if (online === state.shown) return;
    state.shown = online;
    this.sendFrame({ type: "presence", user_id: userId, online });
  }

  /** `userId` became a contact of this user (CONTRACT §10): their presence now, and every change from now. */
  sharePresenceOf(userId: number, state: { online: boolean; version: number }): void {
    this.presenceHidden.delete(userId);
    this.applyPresence(userId, state.online, state.version);
    if (this.presenceShown) this.showPresenceOf(userId);
  }

  /** `userId` may no longer be shown (a block): offline to this socket, and reports about them ignored. */
  hidePresenceOf(userId: number): void {
    this.presenceHidden.add(userId);
    if (this.presenceShown) this.showPresenceOf(userId);
  }

  /** Called by the hub's heartbeat: pings, and drops a peer that missed two pongs in a row. */
  heartbeat(): void {
    if (this.missedPongs >= 2) {
      this.ctx.log.debug({ connection: this.id }, "peer missed two pongs: dropping it");
      this.socket.terminate();
      return;
    }
    this.missedPongs += 1;
    if (this.socket.readyState !== WebSocket.OPEN) return;
    const payload = randomBytes(8);
    this.pingsSent.push(payload);
    if (this.pingsSent.length > PINGS_REMEMBERED) this.pingsSent.shift();
    this.socket.ping(payload);
  }

  close(code: number, reason: string): void {
    this.closing = true;
    this.socket.close(code, reason);
  }

  /**
   * Sends the user's stream from `after` on, holding back live events meanwhile; then sends what was held
   * back and is newer than the replay, and goes live. Read page by page (each bounded in bytes well under
   * the slow-consumer limit), and each page written and drained to the socket before the next is read, so
   * a long absence full of long messages never trips that limit. Memory: a page, and live events held back
   * up to the slow-consumer limit (past it they are let go, and read from the stream instead).
   */
  private async replayFrom(after: number): Promise<void> {
    const started = performance.now();
    this.heldBack ??= [];
    this.heldBackDropped = false;
    this.lastSent = after;
    try {
      for (;;) {
        const page = await this.ctx.events.readPage(this.userId, this.lastSent);
        let written = Promise.resolve();
        for (const event of page.events) {
          this.lastSent = event.event_id;
          // Resolves once ws has handed the bytes to the OS: for a client that reads slowly, only when its
          // socket has drained that far.
          written = new Promise((resolve) => this.write(JSON.stringify(event), resolve));
        }
        await this.taken(written);
        // A client that left (or a socket the server is closing) needs no more pages.
        if (this.closing || this.socket.readyState !== WebSocket.OPEN) break;
        if (!page.more) {
          if (!this.heldBackDropped) break;
          this.heldBackDropped = false;
        }
      }
    } catch (error) {
      if (error instanceof ReplayStalled) {
        // A client that stopped reading would hold this socket's queue (and its memory) for ever.
        this.ctx.stats.slowConsumerDisconnectsTotal += 1;
        this.ctx.log.info({ connection: this.id, user: this.userId }, "replay page not taken: closing with 1013");
        this.closeSlowConsumer("replay not taken in time");
        return;
      }
      // Going live with a hole would break the promise of every event once: close, and let the client resume.
      this.ctx.log.warn({ err: error, connection: this.id }, "replay failed: closing so the client resumes");
      this.ctx.stats.errorsTotal += 1;
      this.close(CloseCode.internalError, "replay failed, reconnect and resume");
      return;
    }
    const held = this.heldBack;
    this.heldBack = undefined;
    this.heldBackBytes = 0;
    for (const { id, data } of held) this.deliverEvent(id, data);
    this.ctx.observeReplay?.((performance.now() - started) / 1_000);
  }

  /** Resolves when `written` does; throws ReplayStalled when the client has not taken the page in time. */
  private async taken(written: Promise<void>): Promise<void> {
    let timer: NodeJS.Timeout | undefined;
    const stalled = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new ReplayStalled()), this.ctx.replayPageTimeoutMs ?? Limits.replayPageTimeoutMs);
    });
    try {
      await Promise.race([written, stalled]);
    } finally {
      clearTimeout(timer);
    }
  }

  /** Closes with 1013, and drops the socket if the close handshake cannot get through the backlog. */
  private closeSlowConsumer(reason: string): void {
    this.close(CloseCode.tryAgainLater, reason);
    setTimeout(() => this.socket.terminate(), SLOW_CONSUMER_GRACE_MS).unref();
  }

  /** Writes one frame; `written` runs once ws has handed its bytes to the OS, or at once when nothing was sent. */
  private write(data: Frame, written?: () => void): void {
    if (this.closing || this.socket.readyState !== WebSocket.OPEN) {
      written?.();
      return;
    }
    if (this.socket.bufferedAmount > this.ctx.slowConsumerBytes) {
      written?.();
      this.ctx.stats.slowConsumerDisconnectsTotal += 1;
      this.ctx.log.info({ connection: this.id, user: this.userId }, "slow consumer: closing with 1013");
      this.closeSlowConsumer("slow consumer");
      return;
    }
    this.socket.send(data, { binary: false }, written && (() => written()));
    this.ctx.stats.messagesSentTotal += 1;
  }

  private sendError(code: string, message: string, ref?: string, extra: Record<string, unknown> = {}): void {
    this.ctx.stats.errorsTotal += 1;
    this.write(JSON.stringify({ type: "error", code, message, ...(ref === undefined ? {} : { ref }), ...extra }));
  }

  private receive(data: WebSocket.RawData, isBinary: boolean): void {
    if (!this.greeted && !this.closing) {
      // `connected` is the first frame a client gets: answers to early frames wait for the greeting, which
      // is queued first. Queued once: if the greeting failed (the socket is closing with 1011) the frame is
      // dropped, never queued again (re-queuing after a failed greeting would spin the event loop for ever).
      this.enqueue(async () => {
        if (this.greeted) this.receive(data, isBinary);
      });
      return;
    }
    this.ctx.stats.messagesReceivedTotal += 1;
    if (isBinary) {
      this.sendError(ErrorCode.badRequest, "binary frames are not supported: send JSON text");
      return;
    }
    let parsed: unknown;
    try {
      parsed = JSON.parse(data.toString());
    } catch {
      this.sendError(ErrorCode.badJson, "the frame is not valid JSON");
      return;
    }
    const ref = refOf(parsed);
    const type = (parsed as { type?: unknown } | null)?.type;
    if (typeof type !== "string" || !(clientFrameTypes as readonly string[]).includes(type)) {
      this.sendError(ErrorCode.unknownType, `unknown frame type: expected one of ${clientFrameTypes.join(", ")}`, ref);
      return;
    }
    const result = clientFrameSchema.safeParse(parsed);
    if (!result.success) {
      const issue = result.error.issues[0];
      const where = issue?.path.join(".") || "frame";
      this.sendError(ErrorCode.validationFailed, `${where}: ${issue?.message ?? "invalid"}`, ref);
      return;
    }
    const frame = result.data;
    if (frame.type === "ping") {
      this.sendFrame({ type: "pong", timestamp: new Date().toISOString() });
      return;
    }
    if (frame.type === "resume") {
      // Checked as it arrives: a flood of resumes is refused at once and takes no place in the queue.
      const wait = this.lastReplayAt + (this.ctx.resumeIntervalMs ?? Limits.resumeIntervalMs) - this.now();
      if (wait > 0) {
        this.ctx.stats.rateLimitedTotal += 1;
        this.sendError(ErrorCode.rateLimited, `too many resumes: try again in ${Math.ceil(wait / 1000)} s`, ref, {
          retry_after_ms: Math.ceil(wait),
        });
        return;
      }
      // Counted from now, so a second one right behind it is refused even before this one starts.
      this.lastReplayAt = this.now();
    }
    this.enqueue(() => this.handle(frame).catch((error) => this.failed(error, ref)));
  }

  private async handle(frame: Exclude<ClientFrame, { type: "ping" }>): Promise<void> {
    switch (frame.type) {
      case "send_message": {
        const { message } = await this.ctx.messages.send(
          this.userId,
          frame.chat_id,
          frame.content,
          frame.client_msg_id,
          frame.attachments,
        );
        this.sendFrame({ type: "ack", ref: frame.client_msg_id, message });
        return;
      }
      case "mark_read":
        await this.markReadSoon(frame.chat_id, frame.message_id);
        return;
      case "typing":
        await this.ctx.relayTyping(this.userId, await this.chat(frame.chat_id), frame.is_typing);
        return;
      case "resume":
        await this.replayFrom(Math.min(frame.after, await this.ctx.events.lastEventId(this.userId)));
        return;
    }
  }

  /**
   * Stores a read marker without holding up the frames behind it: the store of a chat's marker may wait up
   * to 1 s for its coalescing window (chats/read-coalescing.ts). A marker asked for while that chat's store
   * is on its way only raises the id stored next, so a burst costs one entry per chat, and the highest id
   * is stored last (CONTRACT §10: never refused, the highest stored). Past MARKS_IN_FLIGHT chats at once,
   * the queue waits (and so the socket), which bounds what a flood over many chats can hold.
   */
  private async markReadSoon(chatId: number, messageId: number): Promise<void> {
    const pending = this.marks.get(chatId);
    if (pending) {
      pending.latest = Math.max(pending.latest, messageId);
      return;
    }
    if (this.marks.size >= MARKS_IN_FLIGHT) {
      await this.ctx.chats.markRead(this.userId, chatId, messageId);
      return;
    }
    const mark = { latest: messageId };
    this.marks.set(chatId, mark);
    void (async () => {
      for (let stored = 0; mark.latest > stored; ) {
        stored = mark.latest;
        await this.ctx.chats.markRead(this.userId, chatId, stored).catch((error) => this.failed(error, undefined));
      }
      this.marks.delete(chatId);
    })();
  }

  private async chat(chatId: number): Promise<ChatRow> {
    const known = this.knownChats.get(chatId);
    if (known) return known;
    const chat = await storing(() => this.ctx.events.participantChat(chatId, this.userId));
    this.knownChats.set(chatId, chat);
    return chat;
  }

  private failed(error: unknown, ref: string | undefined): void {
    if (error instanceof RateLimitedError) {
      this.ctx.stats.rateLimitedTotal += 1;
      this.sendError(error.code, error.message, ref, { retry_after_ms: error.retryAfterMs });
      return;
    }
    if (error instanceof ChatError) {
      this.sendError(error.code, error.message, ref);
      return;
    }
    this.ctx.log.error({ err: error, connection: this.id }, "frame handling failed");
    this.sendError(ErrorCode.internal, "the server could not handle this frame: retry", ref);
  }
}

/** The `client_msg_id` of a frame, so that an error about it can say which one it answers. */
function refOf(frame: unknown): string | undefined {
  const ref = (frame as { client_msg_id?: unknown } | null)?.client_msg_id;
  return typeof ref === "string" ? ref : undefined;
}
