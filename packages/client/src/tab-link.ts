/**
 * One connection for all of a user's tabs in one browser: the tab that holds a Web Lock leads (it owns the
 * WebSocket, or polls), and tells the others what it hears over a BroadcastChannel; when it closes, the browser
 * releases its lock and the next tab leads. Both are browser features (and Node's): without them each tab
 * connects on its own, as before.
 */

/** What travels between the tabs of one user. */
export type TabMessage =
  /** Leader → followers: something the client emitted (an event, typing, presence, counts, the banner …). */
  | { kind: "emit"; name: string; value: unknown }
  /**
   * Leader → followers: its mode, so that every tab shows the same, and where its stream stands: a follower that
   * heard no event yet starts from there when it leads (so a hand-over before the first event loses nothing).
   */
  | { kind: "mode"; mode: string; lastEventId: number | undefined }
  /** A tab that just opened asks the leader to say where it stands. */
  | { kind: "hello" }
  /** Follower → leader: what only a socket can carry. */
  | { kind: "typing"; chatId: number; isTyping: boolean }
  /** Follower → leader: "Retry now" pressed in another tab. */
  | { kind: "retry" };

/** The two browser features the link needs; the page's own by default, injectable for tests. */
export interface TabEnvironment {
  BroadcastChannel: new (
    name: string,
  ) => {
    postMessage(message: unknown): void;
    close(): void;
    onmessage: ((event: { data: unknown }) => void) | null;
  };
  locks: {
    request(name: string, options: { signal?: AbortSignal }, callback: () => Promise<void>): Promise<unknown>;
  };
}

/** The page's BroadcastChannel and Web Locks, when it has both. */
export function browserTabEnvironment(): TabEnvironment | undefined {
  const g = globalThis as {
    BroadcastChannel?: TabEnvironment["BroadcastChannel"];
    navigator?: { locks?: TabEnvironment["locks"] };
  };
  if (!g.BroadcastChannel || !g.navigator?.locks) return undefined;
  return { BroadcastChannel: g.BroadcastChannel, locks: g.navigator.locks };
}

export interface TabLinkHandlers {
  /** This tab holds the lock now: it must connect, and speak for the others. */
  onLead(): void;
  onMessage(message: TabMessage): void;
}

export class TabLink {
  private readonly name: string;
  private readonly handlers: TabLinkHandlers;
  private readonly env: TabEnvironment;
  private channel: InstanceType<TabEnvironment["BroadcastChannel"]> | undefined;
  private readonly abort = new AbortController();
  private releaseLock: (() => void) | undefined;
  /** Whether this tab holds the lock (and so the connection). */
  leading = false;

  constructor(name: string, handlers: TabLinkHandlers, env: TabEnvironment) {
    this.name = name;
    this.handlers = handlers;
    this.env = env;
  }

  /** Joins the user's tabs: listens, asks the leader where it stands, and waits in line for the lock. */
  start(): void {
    const channel = new this.env.BroadcastChannel(this.name);
    this.channel = channel;
    channel.onmessage = (event) => this.handlers.onMessage(event.data as TabMessage);
    this.post({ kind: "hello" });
    this.env.locks
      .request(this.name, { signal: this.abort.signal }, () => {
        if (this.abort.signal.aborted) return Promise.resolve();
        this.leading = true;
        this.handlers.onLead();
        // Held until this tab stops (or closes: the browser then releases it).
        return new Promise<void>((resolve) => {
          this.releaseLock = resolve;
        });
      })
      // Stopped while waiting in line: the request is withdrawn.
      .catch(() => {});
  }

  post(message: TabMessage): void {
    try {
      this.channel?.postMessage(message);
    } catch {
      // A closed channel (the page is going away): the other tabs will hear from the next leader.
    }
  }

  /** Leaves: gives up the lock (the next tab leads) or the place in line, and stops listening. */
  stop(): void {
    this.abort.abort();
    this.releaseLock?.();
    this.releaseLock = undefined;
    this.leading = false;
    if (this.channel) {
      this.channel.onmessage = null;
      this.channel.close();
      this.channel = undefined;
    }
  }
}
