/** Open WebSocket pipes per user at this gateway, with a cap (CONTRACT §3: 429 over it). */
export function createSocketCaps(maxPerUser: number) {
  const open = new Map<number, number>();
  return {
    /** Reserves a slot for `userId`; false when the user already has `maxPerUser` sockets. */
    tryAcquire(userId: number): boolean {
      const n = open.get(userId) ?? 0;
      if (n >= maxPerUser) return false;
      open.set(userId, n + 1);
      return true;
    },
    release(userId: number): void {
      const n = open.get(userId) ?? 0;
      if (n <= 1) open.delete(userId);
      else open.set(userId, n - 1);
    },
    users: () => open.size,
  };
}
