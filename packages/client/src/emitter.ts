/** A small typed event emitter: `on` returns the function that removes the handler. */
export class Emitter<Events> {
  private handlers = new Map<keyof Events, Set<(value: never) => void>>();

  on<K extends keyof Events>(name: K, handler: (value: Events[K]) => void): () => void {
    let set = this.handlers.get(name);
    if (!set) {
      set = new Set();
      this.handlers.set(name, set);
    }
    set.add(handler as (value: never) => void);
    return () => set.delete(handler as (value: never) => void);
  }

  protected emit<K extends keyof Events>(name: K, value: Events[K]): void {
    for (const handler of this.handlers.get(name) ?? []) {
      try {
        (handler as (value: Events[K]) => void)(value);
      } catch (error) {
        // A page handler that throws must not break delivery to the others, nor the client's state.
        console.error(`listings-chat client: a "${String(name)}" handler threw`, error);
      }
    }
  }
}
