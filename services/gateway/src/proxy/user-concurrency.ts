/**
 * At most `max` things at once per user (REST requests in flight, open pipes) at this gateway: one user's
 * flood of slow or heavy requests cannot take every upstream connection from the others.
 */
export function createUserConcurrency(max: number) {
  const inFlight = new Map<number, number>();
  return {
    /** A function that gives the turn back (once), or undefined when the user is at the limit. */
    tryEnter(userId: number): (() => void) | undefined {
      const n = inFlight.get(userId) ?? 0;
      if (n >= max) return undefined;
      inFlight.set(userId, n + 1);
      let left = false;
      return () => {
        if (left) return;
        left = true;
        const rest = (inFlight.get(userId) ?? 1) - 1;
        if (rest <= 0) inFlight.delete(userId);
        else inFlight.set(userId, rest);
      };
    },
  };
}
