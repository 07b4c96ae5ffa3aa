/**
 * The skewed seed of the data-layer review (issue 23): ONE long chat (100,000 messages in the review), and a
 * seller with many chats whose messages (300,000 in the review: 100,000 chats of 3) all have higher ids than
 * the long chat's. A page of the long chat is then a page at the far end of the messages' primary key, behind
 * every newer message: a plan that walks that key instead of the chat's index reads them all.
 *
 * Both parts are support/big-account.ts's `seedBigAccount` (set-based SQL, one transaction each), so they have
 * what the write functions would have kept: both participants' events and streams, the chat's newest message,
 * unread counts (the long chat's seller and the big seller have read nothing, their buyers everything).
 * The sizes are parameters (`reviewSkewedSeed`, `historySkewedSeed`).
 */
import type pg from "pg";
import { type BigAccount, seedBigAccount } from "./big-account.ts";

export interface SkewedSeedOptions {
  /** Messages of the one long chat (buyer and seller in turn, the buyer first). */
  longChatMessages: number;
  /** Chats of the big seller, whose messages take the ids after the long chat's. */
  chats: number;
  /** Messages of each of those chats: `chats * messagesPerChat` messages newer than the whole long chat. */
  messagesPerChat: number;
  /** The long chat's seller; its buyer is the next id. The big seller's ids start well after. */
  firstUserId?: number;
}

/**
 * The review's seed: `npm run seed:big` plus one 100,000-message chat behind 300,000 newer messages. 25 s to
 * seed on the 2-core CI machine when alone. Migrations need its 100,000 chats: a file that rewrites `chats`,
 * `chat_participants` or `user_streams` under an exclusive lock (0004 did) holds it 4.6 s here, 0.6 s with
 * 20,000 chats, where a 1 s limit would not see it.
 */
export const reviewSkewedSeed: SkewedSeedOptions = { longChatMessages: 100_000, chats: 100_000, messagesPerChat: 3 };

/**
 * For reads of messages alone (the history page): the same long chat behind the same 300,000 newer messages,
 * in 10,000 chats of 30 (16 s instead of 25: fewer participants, streams and chat events).
 */
export const historySkewedSeed: SkewedSeedOptions = { longChatMessages: 100_000, chats: 10_000, messagesPerChat: 30 };

export interface LongChat {
  id: number;
  sellerId: number;
  buyerId: number;
  messages: number;
  /** Its messages' ids are `firstMessageId` … `lastMessageId`, with no other chat's in between. */
  firstMessageId: number;
  lastMessageId: number;
}

export interface SkewedSeed {
  longChat: LongChat;
  /** The big seller and their chats, all newer than the long chat. */
  account: BigAccount;
  /** How long seeding took, analyzing included. */
  ms: number;
}

export async function seedSkewed(client: pg.ClientBase, options: SkewedSeedOptions): Promise<SkewedSeed> {
  const started = performance.now();
  const longSellerId = options.firstUserId ?? 80_000_000;
  const sequence = "pg_get_serial_sequence('messages', 'id')::regclass";
  // The long chat's messages take the lower ids, but the chat is seeded second: seedBigAccount counts each
  // seller's unread messages with the planner's statistics of `messages`, and after a first call that made one
  // chat of 100,000 messages they say "one chat", so every count of a second call reads the whole table
  // (minutes). So the ids of the long chat are set aside, the newer chats take the ids after them, and the long
  // chat then fills the ids set aside.
  const first = Number((await client.query<{ id: string }>(`select nextval(${sequence})::text as id`)).rows[0]!.id);
  await client.query(`select setval(${sequence}, $1::bigint)`, [first + options.longChatMessages - 1]);
  const account = await seedBigAccount(client, {
    sellerId: longSellerId + 1_000_000,
    chats: options.chats,
    messagesPerChat: options.messagesPerChat,
  });
  await client.query(`select setval(${sequence}, $1::bigint, false)`, [first]);
  // seedBigAccount gives each chat its own buyer (the id after the seller's) and listing (seller * 10 + 1).
  await seedBigAccount(client, { sellerId: longSellerId, chats: 1, messagesPerChat: options.longChatMessages });
  await client.query(`select setval(${sequence}, (select max(id) from messages))`);
  const { rows } = await client.query<{ id: string; first: string; last: string }>(
    `select c.id::text, min(m.id)::text as first, max(m.id)::text as last
     from chats c join messages m on m.chat_id = c.id where c.seller_id = $1 group by c.id`,
    [longSellerId],
  );
  const long = rows[0];
  if (!long || Number(long.first) !== first || Number(long.last) !== first + options.longChatMessages - 1) {
    throw new Error(`seedSkewed: the long chat of seller ${longSellerId} did not get the ids set aside for it`);
  }
  return {
    longChat: {
      id: Number(long.id),
      sellerId: longSellerId,
      buyerId: longSellerId + 1,
      messages: options.longChatMessages,
      firstMessageId: first,
      lastMessageId: first + options.longChatMessages - 1,
    },
    account,
    ms: Math.round(performance.now() - started),
  };
}
