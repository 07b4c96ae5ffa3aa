/**
 * Read markers, coalesced per user and chat (CONTRACT §10: `mark_read` is never refused; of several for one
 * chat within a second, the highest message id is stored). The first is stored at once; those that come
 * while it is stored or within `windowMs` after it wait for that window to end and are stored together, as
 * their highest message id, in one store; every one of them is answered with what that store answered.
 * So a chat costs at most one store per window and user, however many markers a client sends, and a
 * marker never waits longer than the window (plus the store before it).
 */
export interface ReadCoalescingOptions<T> {
  windowMs: number;
  /** Moves the marker to `messageId`; its answer (or error) goes to every caller the store stood for. */
  store(userId: number, chatId: number, messageId: number): Promise<T>;
  /**
   * True for an error that is about the message id alone (a message not in the chat): then only the
   * callers who named that id get it, and the others are stored after the next window, as their highest.
   */
  refusesTheId?: (error: unknown) => boolean;
}

interface Waiter<T> {
  messageId: number;
  resolve(answer: T): void;
  reject(error: unknown): void;
}

/** Callers waiting for one store. */
class Batch<T> {
  readonly waiters: Waiter<T>[] = [];
  highest = 0;

  add(waiter: Waiter<T>) {
    this.waiters.push(waiter);
    this.highest = Math.max(this.highest, waiter.messageId);
  }
}

/** A chat's markers of one user: `next` gathers the callers for the store after the current window. */
interface Slot<T> {
  next?: Batch<T>;
}

export function createReadCoalescing<T>({ windowMs, store, refusesTheId = () => false }: ReadCoalescingOptions<T>) {
  const slots = new Map<string, Slot<T>>();
  /** Resolves at `end` (performance.now()), never before: a timer may fire a millisecond early by this clock. */
  async function windowEnd(end: number) {
    for (let left = end - performance.now(); left > 0; left = end - performance.now())
      await new Promise<void>((resolve) => setTimeout(resolve, Math.ceil(left)).unref());
  }

  async function storeBatch(userId: number, chatId: number, slot: Slot<T>, batch: Batch<T>) {
    try {
      const answer = await store(userId, chatId, batch.highest);
      for (const waiter of batch.waiters) waiter.resolve(answer);
    } catch (error) {
      const others = batch.waiters.filter((w) => w.messageId !== batch.highest);
      if (!refusesTheId(error) || others.length === 0) {
        for (const waiter of batch.waiters) waiter.reject(error);
        return;
      }
      for (const waiter of batch.waiters) if (waiter.messageId === batch.highest) waiter.reject(error);
      // The other ids may be good: stored after the window, like any marker that comes now.
      slot.next ??= new Batch();
      for (const waiter of others) slot.next.add(waiter);
    }
  }

  /** Stores a batch, then the window; repeats while callers came meanwhile; then forgets the chat. */
  async function run(key: string, userId: number, chatId: number, slot: Slot<T>, first: Batch<T>) {
    let batch: Batch<T> | undefined = first;
    while (batch) {
      const started = performance.now();
      await storeBatch(userId, chatId, slot, batch);
      await windowEnd(started + windowMs);
      batch = slot.next;
      slot.next = undefined;
    }
    slots.delete(key);
  }

  return {
    /** Resolves with the answer of the store that covered this marker (maybe for a higher message id). */
    markRead(userId: number, chatId: number, messageId: number): Promise<T> {
      return new Promise<T>((resolve, reject) => {
        const waiter = { messageId, resolve, reject };
        const key = `${userId}:${chatId}`;
        const busy = slots.get(key);
        if (busy) {
          busy.next ??= new Batch();
          busy.next.add(waiter);
          return;
        }
        const slot: Slot<T> = {};
        slots.set(key, slot);
        const batch = new Batch<T>();
        batch.add(waiter);
        void run(key, userId, chatId, slot, batch);
      });
    },
    /** Chats with a store or a window in progress (for tests: it returns to 0). */
    pending: () => slots.size,
  };
}
