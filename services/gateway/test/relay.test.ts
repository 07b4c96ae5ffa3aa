import { createHash, randomBytes } from "node:crypto";
import { type AddressInfo, createServer, connect as netConnect, type Socket } from "node:net";
import { afterEach, describe, expect, it } from "vitest";
import { relay } from "../src/proxy/relay.ts";

const closers: Array<() => void> = [];
afterEach(() => {
  for (const close of closers.splice(0)) close();
});

/** A connected pair of TCP sockets on loopback: [the outside end, the end the relay holds]. */
async function tcpPair(): Promise<[Socket, Socket]> {
  const server = createServer({ allowHalfOpen: true });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const accepted = new Promise<Socket>((resolve) => server.once("connection", resolve));
  const outside = netConnect({ port: (server.address() as AddressInfo).port, host: "127.0.0.1", allowHalfOpen: true });
  const inside = await accepted;
  closers.push(() => {
    outside.destroy();
    inside.destroy();
    server.close();
  });
  return [outside, inside];
}

/** Everything `socket` reads until its end. */
function readAll(socket: Socket): Promise<Buffer> {
  const chunks: Buffer[] = [];
  socket.on("data", (chunk: Buffer) => chunks.push(chunk));
  return new Promise((resolve) => socket.once("end", () => resolve(Buffer.concat(chunks))));
}

const digest = (data: Buffer) => createHash("sha256").update(data).digest("hex");

describe("relay (the gateway's two-way pipe)", () => {
  it("passes bytes both ways, intact and in order, and passes each end on", async () => {
    const [client, clientSide] = await tcpPair();
    const [instance, instanceSide] = await tcpPair();
    relay(clientSide, instanceSide);
    const toInstance = randomBytes(300_000);
    const toClient = randomBytes(200_000);
    const atInstance = readAll(instance);
    const atClient = readAll(client);
    client.end(toInstance);
    instance.end(toClient);
    expect(digest(await atInstance)).toBe(digest(toInstance));
    expect(digest(await atClient)).toBe(digest(toClient));
  });

  it("stops reading from one side while the other does not read, and loses nothing when it does", async () => {
    const [client, clientSide] = await tcpPair();
    const [instance, instanceSide] = await tcpPair();
    relay(clientSide, instanceSide);
    instance.pause(); // a consumer that stopped reading
    const sent = randomBytes(32 * 1024 * 1024);
    client.end(sent);
    // The relay stops reading the client's side once the instance's side holds a full buffer…
    const deadline = Date.now() + 10_000;
    while (!clientSide.isPaused() && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    expect(clientSide.isPaused()).toBe(true);
    await new Promise((r) => setTimeout(r, 200));
    // …so what it holds stays near one buffer's worth, not the 32 MiB sent (the rest waits in the kernel).
    expect(instanceSide.writableLength).toBeLessThan(4 * 1024 * 1024);
    const received = readAll(instance);
    instance.resume();
    expect(digest(await received)).toBe(digest(sent));
  });
});
