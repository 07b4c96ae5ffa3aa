/**
 * Fan-out (issue 12, part 3): deliveries a second when each event goes to many sockets. A seller holds
 * K sockets on the instance (each of BENCH_FANOUT_SOCKETS, "10,100,1000": 10 is the gateway's default cap
 * per user; more is a seller's devices across the gateways of a big deployment), and BENCH_FANOUT_SENDERS
 * buyers (10), each in a chat with the seller, send messages in a closed loop (the next once the ack is
 * in). Each message is stored, then delivered to the seller's K sockets and the buyer's own: K + 1
 * deliveries. The sockets connect to the instance directly: this measures the hub, the pipe's cost per
 * frame is part 1's.
 */
import { randomUUID } from "node:crypto";
import type { Socket } from "node:net";
import { clientTextFrame } from "./raw-client.ts";
import { waitForConnections } from "./sockets.ts";
import { mustOpen, type Stack } from "./stack.ts";
import { cpuSeconds, token } from "./support.ts";

const NEW_MESSAGE = Buffer.from('"new_message"');
const ACK = Buffer.from('"type":"ack"');

export interface FanoutSettings {
  socketsPerEvent: number[];
  senders: number;
  seconds: number;
}

async function createChat(stack: Stack, buyer: number, seller: number, listing: number): Promise<number> {
  const res = await fetch(`http://127.0.0.1:${stack.chat.port}/api/v1/chats`, {
    method: "POST",
    headers: { "x-internal-token": token, "x-user-id": String(buyer), "content-type": "application/json" },
    body: JSON.stringify({ listing_id: listing, seller_id: seller }),
  });
  if (!res.ok) throw new Error(`could not create a chat: ${res.status} ${await res.text()}`);
  return ((await res.json()) as { id: number }).id;
}

export async function fanoutBench(stack: Stack, settings: FanoutSettings, firstUser: number) {
  const seller = firstUser;
  const buyers = Array.from({ length: settings.senders }, (_, i) => firstUser + 1 + i);
  const chats = await Promise.all(buyers.map((buyer, i) => createChat(stack, buyer, seller, 1_000 + i)));
  let deliveries = 0;
  let acks = 0;
  let running = false;
  const onDelivery = (payload: Buffer) => {
    if (payload.includes(NEW_MESSAGE)) deliveries += 1;
  };
  const sendNext = (socket: Socket, chatId: number) =>
    socket.write(
      clientTextFrame(
        JSON.stringify({ type: "send_message", chat_id: chatId, content: "fan-out", client_msg_id: randomUUID() }),
      ),
    );
  const senders: Socket[] = [];
  for (const [i, buyer] of buyers.entries()) {
    const socket: Socket = await mustOpen(stack, "direct", buyer, (payload) => {
      if (payload.includes(ACK)) {
        acks += 1;
        if (running) sendNext(socket, chats[i]!);
      } else onDelivery(payload);
    });
    senders.push(socket);
  }
  const levels = [];
  for (const k of settings.socketsPerEvent) {
    const sellerSockets: Socket[] = [];
    for (let i = 0; i < k; i++) sellerSockets.push(await mustOpen(stack, "direct", seller, onDelivery));
    // A second unmeasured, so that the hot paths are compiled and the sockets settled.
    running = true;
    for (const [i, socket] of senders.entries()) sendNext(socket, chats[i]!);
    await new Promise((r) => setTimeout(r, 1_000));
    const before = {
      deliveries,
      acks,
      chat: stack.chat.cpuSeconds(),
      self: cpuSeconds(process.pid),
      at: performance.now(),
    };
    await new Promise((r) => setTimeout(r, settings.seconds * 1_000));
    const elapsed = (performance.now() - before.at) / 1_000;
    const delivered = deliveries - before.deliveries;
    const messages = acks - before.acks;
    const chatCpu = stack.chat.cpuSeconds() - before.chat;
    const selfCpu = cpuSeconds(process.pid) - before.self;
    running = false;
    await new Promise((r) => setTimeout(r, 500));
    levels.push({
      socketsPerEvent: k + 1,
      messagesPerSecond: Math.round(messages / elapsed),
      deliveriesPerSecond: Math.round(delivered / elapsed),
      chatCpuUsPerDelivery: Number(((chatCpu * 1e6) / Math.max(1, delivered)).toFixed(2)),
      loadGeneratorCpuUsPerDelivery: Number(((selfCpu * 1e6) / Math.max(1, delivered)).toFixed(2)),
    });
    console.error(`fan-out to ${k + 1} sockets: ${JSON.stringify(levels.at(-1))}`);
    for (const socket of sellerSockets) socket.destroy();
    await waitForConnections(stack, senders.length);
  }
  for (const socket of senders) socket.destroy();
  await waitForConnections(stack, 0);
  return { settings, levels };
}
