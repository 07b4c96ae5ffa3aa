import { EventEmitter } from "node:events";
import type { ChatEvent } from "@listings-chat/shared";
import { pino } from "pino";
import { describe, expect, it, vi } from "vitest";
import type WebSocket from "ws";
import { Connection, type ConnectionContext } from "../src/hub/connection.ts";
import { createStats } from "../src/ops/stats.ts";

/** Enough of a ws socket for a Connection: records what is sent and how it was closed. */
class FakeSocket extends EventEmitter {
  readyState = 1;
  bufferedAmount = 0;
  readonly OPEN = 1;
  readonly CLOSED = 3;
  sent: string[] = [];
  closedWith: number | undefined;
  /** When set, a client that does not read: write callbacks wait here until the test runs them. */
  unflushed: Array<() => void> | undefined;
  /** Whether the connection stopped reading the socket, and how often it flipped. */
  paused = false;
  pauses = 0;
  /** The payloads of the pings the server sent. */
  pings: Buffer[] = [];
  terminated = false;
  send(data: string | Buffer, _options: { binary: boolean }, cb?: () => void) {
    this.sent.push(data.toString());
    if (this.unflushed && cb) this.unflushed.push(cb);
    else cb?.();
  }
  pause() {
    this.paused = true;
    this.pauses += 1;
  }
  resume() {
    this.paused = false;
  }
  ping(payload: Buffer) {
    this.pings.push(payload);
  }
  close(code: number) {
    this.closedWith = code;
    this.readyState = 3;
  }
  terminate() {
    this.terminated = true;
    this.readyState = 3;
  }
  frames() {
    return this.sent.map((s) => JSON.parse(s) as { type: string; event_id?: number });
  }
  eventIds() {
    return this.frames().flatMap((f) => (f.event_id === undefined ? [] : [f.event_id]));
  }
}

const event = (id: number): ChatEvent => ({
  type: "message_read",
  event_id: id,
  chat_id: 1,
  message_id: id,
  read_by: 2,
  read_at: "2026-01-01T00:00:00.000Z",
});

/** Events per page of the controlled log: a page of 5 says more may follow. */
const PAGE = 5;

/** A log whose page reads wait until the test releases them, so interleavings are chosen, not hoped for. */
function controlledLog(last: number) {
  const reads: Array<{
    after: number;
    release: (events: ChatEvent[]) => void;
    fail: (e: Error) => void;
  }> = [];
  const events: ConnectionContext["events"] = {
    lastEventId: async () => last,
    readPage: (_userId, after) =>
      new Promise((resolve, reject) =>
        reads.push({ after, release: (page) => resolve({ events: page, more: page.length === PAGE }), fail: reject }),
      ),
    participantChat: async () => {
      throw new Error("not used");
    },
  };
  return { events, reads };
}

function connectionWith(events: ConnectionContext["events"], overrides: Partial<ConnectionContext> = {}) {
  const socket = new FakeSocket();
  const ctx: ConnectionContext = {
    events,
    chats: {} as ConnectionContext["chats"],
    messages: {} as ConnectionContext["messages"],
    stats: createStats(),
    log: pino({ level: "silent" }),
    slowConsumerBytes: 1024 * 1024,
    relayTyping: async () => {},
    ...overrides,
  };
  const connection = new Connection(socket as unknown as WebSocket, 2, ctx);
  return { socket, connection, ctx };
}

const range = (from: number, to: number) => Array.from({ length: to - from + 1 }, (_, i) => event(from + i));
const deliver = (connection: Connection, id: number) =>
  connection.deliverEvent(id, Buffer.from(JSON.stringify(event(id))));

describe("Connection replay and live hand-over", () => {
  it("holds live events back during the replay, then sends only what the replay did not, in order", async () => {
    const { events, reads } = controlledLog(12);
    const { socket, connection } = connectionWith(events);
    const opened = connection.open(0);

    await vi.waitFor(() => expect(reads).toHaveLength(1));
    expect(reads[0]?.after).toBe(0);
    deliver(connection, 13); // committed while the first page is being read
    reads[0]?.release(range(1, 5));

    await vi.waitFor(() => expect(reads).toHaveLength(2));
    expect(reads[1]?.after).toBe(5);
    deliver(connection, 14);
    reads[1]?.release(range(6, 10));

    await vi.waitFor(() => expect(reads).toHaveLength(3));
    expect(reads[2]?.after).toBe(10);
    // The replay's last page already sees 13, which is also held back: it must go out once.
    reads[2]?.release(range(11, 13));
    await opened;

    expect(socket.frames()[0]?.type).toBe("connected");
    expect(socket.eventIds()).toEqual(range(1, 14).map((e) => e.event_id));

    deliver(connection, 14); // a repeat from the bus is dropped
    deliver(connection, 15);
    expect(socket.eventIds()).toEqual(range(1, 15).map((e) => e.event_id));
  });

  it("reads the next page only once the socket has taken the last one (a slow reader holds one page)", async () => {
    const { events, reads } = controlledLog(12);
    const { socket, connection } = connectionWith(events);
    socket.unflushed = [];
    const opened = connection.open(0);
    await vi.waitFor(() => expect(reads).toHaveLength(1));
    reads[0]?.release(range(1, 5));
    await vi.waitFor(() => expect(socket.eventIds()).toHaveLength(5));
    await new Promise((r) => setTimeout(r, 20));
    // Written, but not taken by the OS yet: no second read.
    expect(reads).toHaveLength(1);
    for (const flushed of socket.unflushed.splice(0)) flushed();
    await vi.waitFor(() => expect(reads).toHaveLength(2));
    socket.unflushed = undefined;
    reads[1]?.release(range(6, 8));
    await opened;
    expect(socket.eventIds()).toEqual(range(1, 8).map((e) => e.event_id));
  });

  it("lets held-back live events go past the slow-consumer limit, and reads them from the stream instead", async () => {
    const { events, reads } = controlledLog(3);
    const { socket, connection } = connectionWith(events, { slowConsumerBytes: 300 });
    const opened = connection.open(0);
    await vi.waitFor(() => expect(reads).toHaveLength(1));
    // A slow replay, and a busy chat meanwhile: ~90 bytes each, far more than 300 bytes of them.
    for (let id = 4; id <= 12; id++) deliver(connection, id);
    reads[0]?.release(range(1, 3));
    // The page was the end of the stream when it was read, but live events were let go: read on.
    await vi.waitFor(() => expect(reads).toHaveLength(2));
    expect(reads[1]?.after).toBe(3);
    reads[1]?.release(range(4, 12));
    await opened;
    expect(socket.eventIds()).toEqual(range(1, 12).map((e) => e.event_id));
    deliver(connection, 13);
    expect(socket.eventIds()).toEqual(range(1, 13).map((e) => e.event_id));
  });

  it("stops replaying when the client has gone", async () => {
    const { events, reads } = controlledLog(20);
    const { socket, connection } = connectionWith(events);
    const opened = connection.open(0);
    await vi.waitFor(() => expect(reads).toHaveLength(1));
    socket.readyState = 3;
    reads[0]?.release(range(1, 5)); // a full page: more would follow
    await opened;
    await new Promise((r) => setTimeout(r, 20));
    expect(reads).toHaveLength(1);
  });

  it("sends nothing live until the replay is done", async () => {
    const { events, reads } = controlledLog(3);
    const { socket, connection } = connectionWith(events);
    const opened = connection.open(0);
    await vi.waitFor(() => expect(reads).toHaveLength(1));
    deliver(connection, 4);
    deliver(connection, 5);
    expect(socket.eventIds()).toEqual([]);
    reads[0]?.release(range(1, 3));
    await opened;
    expect(socket.eventIds()).toEqual([1, 2, 3, 4, 5]);
  });

  it("queues a resume frame behind the opening replay and restarts the stream at its cursor", async () => {
    const { events, reads } = controlledLog(6);
    const { socket, connection } = connectionWith(events);
    // Opened without `after=` (it would count as the first replay and the resume would be refused).
    const opened = connection.open(undefined);
    await vi.waitFor(() => expect(reads).toHaveLength(1));
    socket.emit("message", Buffer.from(JSON.stringify({ type: "resume", after: 2 })), false);
    deliver(connection, 7);
    reads[0]?.release([]);
    await opened;
    await vi.waitFor(() => expect(reads).toHaveLength(2));
    expect(reads[1]?.after).toBe(2);
    deliver(connection, 8);
    reads[1]?.release(range(3, 7)); // a full page: the replay reads on
    await vi.waitFor(() => expect(reads).toHaveLength(3));
    expect(reads[2]?.after).toBe(7);
    reads[2]?.release(range(8, 8));
    await vi.waitFor(() => expect(socket.eventIds()).toEqual([7, 3, 4, 5, 6, 7, 8]));
  });

  it("closes with 1011 instead of going live with a hole when the log cannot be read", async () => {
    const { events, reads } = controlledLog(9);
    const { socket, connection } = connectionWith(events);
    const opened = connection.open(0);
    await vi.waitFor(() => expect(reads).toHaveLength(1));
    deliver(connection, 10);
    reads[0]?.fail(new Error("database went away"));
    await opened;
    expect(socket.closedWith).toBe(1011);
    expect(socket.eventIds()).toEqual([]);
  });

  it("closes a slow consumer with 1013 once its backlog passes the limit", async () => {
    const { events, reads } = controlledLog(0);
    const { socket, connection, ctx } = connectionWith(events);
    const opened = connection.open(undefined);
    await vi.waitFor(() => expect(reads).toHaveLength(1));
    reads[0]?.release([]);
    await opened;
    deliver(connection, 1);
    socket.bufferedAmount = ctx.slowConsumerBytes + 1;
    deliver(connection, 2);
    expect(socket.closedWith).toBe(1013);
    expect(ctx.stats.slowConsumerDisconnectsTotal).toBe(1);
    expect(socket.eventIds()).toEqual([1]);
  });
});

describe("Connection presence: one frame per change, newest report wins", () => {
  async function opened() {
    const { events, reads } = controlledLog(0);
    const { socket, connection } = connectionWith(events);
    const open = connection.open(undefined);
    await vi.waitFor(() => expect(reads).toHaveLength(1));
    reads[0]?.release([]);
    await open;
    const presence = () =>
      socket
        .frames()
        .filter((f) => f.type === "presence")
        .map((f) => f as unknown as { user_id: number; online: boolean });
    return { connection, presence };
  }

  it("does not repeat 'online' when the snapshot and the announcement both say it", async () => {
    const { connection, presence } = await opened();
    connection.applyPresence(7, true, 10); // the announcement reached the socket before its snapshot
    connection.applyPresence(7, true, 10); // the snapshot, read after the join
    connection.showPresence();
    connection.applyPresence(7, true, 10); // the same announcement again (another instance's copy)
    expect(presence()).toEqual([{ type: "presence", user_id: 7, online: true }]);
  });

  it("lets a snapshot older than an announcement lose, before and after presence is shown", async () => {
    const { connection, presence } = await opened();
    connection.applyPresence(7, false, 11); // offline announced
    connection.applyPresence(7, true, 10); // a snapshot read before that
    connection.showPresence();
    expect(presence()).toEqual([]);
    connection.applyPresence(8, true, 20);
    connection.applyPresence(8, false, 21);
    connection.applyPresence(8, true, 20); // a late copy of the older report
    expect(presence().map((p) => [p.user_id, p.online])).toEqual([
      [8, true],
      [8, false],
    ]);
  });

  it("says nothing about contacts that are offline and were never shown online", async () => {
    const { connection, presence } = await opened();
    connection.applyPresence(9, false, 0);
    connection.showPresence();
    connection.applyPresence(9, false, 3);
    expect(presence()).toEqual([]);
    connection.applyPresence(9, true, 4);
    connection.applyPresence(9, false, 5);
    connection.applyPresence(9, true, 6);
    expect(presence().map((p) => p.online)).toEqual([true, false, true]);
  });
});

describe("Connection frames that come before the greeting", () => {
  it("greets with the end the hub read when it started following the stream, without reading it again", async () => {
    let endReads = 0;
    const events: ConnectionContext["events"] = {
      lastEventId: async () => {
        endReads += 1;
        return 99;
      },
      readPage: async () => ({ events: [], more: false }),
      participantChat: async () => {
        throw new Error("not used");
      },
    };
    const { socket, connection } = connectionWith(events);
    await connection.open(undefined, Promise.resolve(7));
    expect(socket.frames()[0]).toMatchObject({ type: "connected", last_event_id: 7 });
    expect(endReads).toBe(0);
    const { socket: second, connection: again } = connectionWith(events);
    await again.open(undefined, Promise.resolve(undefined));
    expect(second.frames()[0]).toMatchObject({ type: "connected", last_event_id: 99 });
    expect(endReads).toBe(1);
  });

  it("answers them after the greeting, in order, when the greeting waits on something", async () => {
    const { events, reads } = controlledLog(0);
    const { socket, connection } = connectionWith(events);
    let follow!: () => void;
    const followed = new Promise<undefined>((resolve) => {
      follow = () => resolve(undefined);
    });
    const opened = connection.open(undefined, followed);
    // The client pings at once, while the hub is still following the user's stream.
    socket.emit("message", Buffer.from(JSON.stringify({ type: "ping" })), false);
    socket.emit("message", Buffer.from(JSON.stringify({ type: "ping" })), false);
    await new Promise((resolve) => setTimeout(resolve, 20));
    expect(socket.frames()).toEqual([]);
    follow();
    await vi.waitFor(() => expect(reads).toHaveLength(1));
    reads[0]?.release([]);
    await opened;
    await vi.waitFor(() => expect(socket.frames().map((f) => f.type)).toEqual(["connected", "pong", "pong"]));
  });

  it("drops them when the greeting fails (the socket closes with 1011), and the process goes on", async () => {
    const failing: ConnectionContext["events"] = {
      lastEventId: async () => {
        throw new Error("database went away");
      },
      readPage: async () => ({ events: [], more: false }),
      participantChat: async () => {
        throw new Error("not used");
      },
    };
    const { socket, connection } = connectionWith(failing);
    const opened = connection.open(undefined).catch(() => "failed");
    socket.emit("message", Buffer.from(JSON.stringify({ type: "ping" })), false);
    expect(await opened).toBe("failed");
    // Timers still run: the event loop is not spinning on the dropped frame.
    await new Promise((resolve) => setTimeout(resolve, 20));
    socket.emit("message", Buffer.from(JSON.stringify({ type: "ping" })), false);
    await new Promise((resolve) => setTimeout(resolve, 20));
    expect(socket.frames()).toEqual([]);
  });
});

const frame = (body: unknown) => Buffer.from(JSON.stringify(body));

describe("Connection bounds against one socket (CONTRACT §10)", () => {
  it("stops reading the socket while 32 frames wait, and reads again once half of them are handled", async () => {
    const { events, reads } = controlledLog(0);
    const stored: Array<() => void> = [];
    const messages = {
      // A database that is slow to answer: each send waits until the test lets it finish.
      send: (_u: number, _c: number, content: string) =>
        new Promise((resolve) => stored.push(() => resolve({ message: { id: 1, content }, created: true }))),
    } as unknown as ConnectionContext["messages"];
    const { socket, connection } = connectionWith(events, { messages });
    const opened = connection.open(undefined);
    await vi.waitFor(() => expect(reads).toHaveLength(1));
    reads[0]?.release([]);
    await opened;
    await new Promise((resolve) => setImmediate(resolve)); // the greeting has left the queue
    const send = (i: number) =>
      socket.emit(
        "message",
        frame({ type: "send_message", chat_id: 1, content: `m${i}`, client_msg_id: `c${i}` }),
        false,
      );
    for (let i = 0; i < 32; i++) send(i);
    // One is being stored, 31 wait: not yet full.
    expect(connection.queued()).toBe(31);
    expect(socket.paused).toBe(false);
    send(32);
    expect(connection.queued()).toBe(32);
    expect(socket.paused).toBe(true);
    // Frames of the read in progress still arrive (ws hands over the rest of one socket read).
    send(33);
    expect(connection.queued()).toBe(33);
    // Handled one by one: reading resumes once half the queue is free, not at the first free slot.
    for (let handled = 0; connection.queued() > 16; handled++) {
      await vi.waitFor(() => expect(stored.length).toBeGreaterThan(handled));
      stored[handled]?.();
      await vi.waitFor(() => expect(connection.queued()).toBe(33 - handled - 1));
      expect(socket.paused).toBe(connection.queued() > 16);
    }
    expect(socket.paused).toBe(false);
    expect(socket.pauses).toBe(1);
    // Every frame is still handled, in order.
    await vi.waitFor(() => {
      for (const release of stored) release();
      expect(socket.frames().filter((f) => f.type === "ack")).toHaveLength(34);
    });
    const acked = socket.frames().flatMap((f) => (f.type === "ack" ? [(f as { ref?: string }).ref] : []));
    expect(acked).toEqual(Array.from({ length: 34 }, (_, i) => `c${i}`));
  });

  it("closes with 1013 a socket that does not take a replay page in time, freeing its queue", async () => {
    const { events, reads } = controlledLog(5);
    const { socket, connection, ctx } = connectionWith(events, { replayPageTimeoutMs: 50 });
    socket.unflushed = []; // the client stopped reading: no write completes
    const opened = connection.open(0);
    await vi.waitFor(() => expect(reads).toHaveLength(1));
    reads[0]?.release(range(1, 3));
    await opened;
    expect(socket.closedWith).toBe(1013);
    expect(ctx.stats.slowConsumerDisconnectsTotal).toBe(1);
    // Only the page that was written: nothing further was read for a client that does not take it.
    expect(reads).toHaveLength(1);
  });

  it("replays at most once per 10 s per socket, the upgrade's after= counting as the first", async () => {
    let clock = 1_000_000;
    const { events, reads } = controlledLog(4);
    const { socket, connection, ctx } = connectionWith(events, { now: () => clock });
    const opened = connection.open(2);
    await vi.waitFor(() => expect(reads).toHaveLength(1));
    reads[0]?.release(range(3, 4));
    await opened;
    clock += 9_999;
    socket.emit("message", frame({ type: "resume", after: 0 }), false);
    const refused = socket.frames().at(-1) as { type: string; code?: string; retry_after_ms?: number };
    expect(refused).toMatchObject({ type: "error", code: "rate_limited", retry_after_ms: 1 });
    expect(ctx.stats.rateLimitedTotal).toBe(1);
    await new Promise((resolve) => setTimeout(resolve, 20));
    expect(reads).toHaveLength(1); // nothing replayed
    clock += 1;
    socket.emit("message", frame({ type: "resume", after: 0 }), false);
    // A second one right behind the accepted one is refused even before the first has started.
    socket.emit("message", frame({ type: "resume", after: 0 }), false);
    await vi.waitFor(() => expect(reads).toHaveLength(2));
    expect(reads[1]?.after).toBe(0);
    expect(ctx.stats.rateLimitedTotal).toBe(2);
  });

  it("counts as alive only a pong that echoes one of the server's own pings", () => {
    const { socket, connection } = connectionWith(controlledLog(0).events);
    // A client that stopped reading but sends an unsolicited pong between every two pings.
    for (let beat = 0; beat < 3; beat++) {
      connection.heartbeat();
      socket.emit("pong", Buffer.from("still here"));
      socket.emit("pong", Buffer.alloc(0));
    }
    expect(socket.terminated).toBe(true);

    const { socket: honest, connection: alive } = connectionWith(controlledLog(0).events);
    for (let beat = 0; beat < 10; beat++) {
      alive.heartbeat();
      // A late pong, answering the ping before the latest, counts too.
      if (beat % 2 === 1) honest.emit("pong", honest.pings.at(-2));
    }
    expect(honest.terminated).toBe(false);
  });
});
