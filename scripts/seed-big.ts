/**
 * `npm run seed:big`: a seller with 100,000 chats and 300,000 messages (SEED_CHATS, SEED_MESSAGES_PER_CHAT)
 * on the PostgreSQL of DATABASE_URL (migrated first), made by SQL alone in a minute or two. The last line
 * printed is the seller's user id; the buyers are the ids after it.
 */
import pg from "pg";
import { openDatabase } from "../services/listings-chat/src/db/client.ts";
import { seedBigAccount } from "../services/listings-chat/test/support/big-account.ts";

const url = process.env.DATABASE_URL;
if (!url) {
  console.error("seed:big needs DATABASE_URL (a PostgreSQL it may write to)");
  process.exit(1);
}
const chats = Number(process.env.SEED_CHATS ?? 100_000);
const messagesPerChat = Number(process.env.SEED_MESSAGES_PER_CHAT ?? 3);
// Ids well above any a test or a person picks, different on every run.
const sellerId = 7_000_000_000 + Math.floor(Math.random() * 1_000) * 1_000_000;

const database = await openDatabase({ url });
await database.close();
const client = new pg.Client({ connectionString: url, statement_timeout: 0 });
await client.connect();
const started = performance.now();
const account = await seedBigAccount(client, { sellerId, chats, messagesPerChat });
await client.end();
console.error(
  `seeded ${account.chats} chats and ${account.messages} messages for seller ${account.sellerId} in ${Math.round((performance.now() - started) / 1000)} s (buyers ${account.firstBuyerId} …)`,
);
console.log(account.sellerId);
