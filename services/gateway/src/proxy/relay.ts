import type { Duplex } from "node:stream";

/** The other socket of a relay, kept on each socket so that one set of shared listeners serves every pipe. */
const peer = Symbol("relay peer");

type Relayed = Duplex & { [peer]: Duplex };

function forward(this: Relayed, chunk: Buffer) {
  // Backpressure: stop reading while the other side's write buffer is full, until it drains.
  if (!this[peer].write(chunk)) this.pause();
}

function resumePeer(this: Relayed) {
  this[peer].resume();
}

function endPeer(this: Relayed) {
  this[peer].end();
}

/**
 * Joins two sockets both ways: what one reads is written to the other, reading paused while the other's
 * write buffer is full, and an end passed on. It does what two `.pipe()` calls do, without their nine
 * closures per direction: the listeners are shared module functions, so an idle pipe costs its two
 * sockets and little else (with tens of thousands of idle pipes per gateway, that is the memory that counts).
 * Errors and closes are left to the caller.
 */
export function relay(a: Duplex, b: Duplex): void {
  (a as Relayed)[peer] = b;
  (b as Relayed)[peer] = a;
  for (const side of [a, b]) {
    side.on("data", forward);
    side.on("drain", resumePeer);
    side.on("end", endPeer);
  }
}

/** An `error` listener for any socket: destroys it (shared, so that no socket needs a closure of its own). */
export function destroyOnError(this: Duplex): void {
  this.destroy();
}
