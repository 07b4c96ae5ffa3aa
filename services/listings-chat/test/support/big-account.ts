/**
 * A big account, made by SQL alone (set-based, in one transaction): one seller with `chats` chats, each with
 * its own buyer and `messagesPerChat` messages (buyer and seller in turn), with everything the write
 * functions would have kept: the events in both participants' streams (dense, in order), the newest message
 * on each chat, unread counts (the seller has read nothing, the buyers everything) and their totals.
 * Where the schema has them (0023), each chat's listing and every participant's name are registered too.
 * Used by `npm run seed:big` (scripts/seed-big.ts), the plan tests and `npm run bench:big`.
 */
import type pg from "pg";

export interface BigAccount {
  sellerId: number;
  /** The buyers are `firstBuyerId` … `firstBuyerId + chats - 1`. */
  firstBuyerId: number;
  chats: number;
  messages: number;
}

export async function seedBigAccount(
  client: pg.ClientBase,
  options: { sellerId: number; chats: number; messagesPerChat: number },
): Promise<BigAccount> {
  const { sellerId, chats, messagesPerChat } = options;
  const firstBuyerId = sellerId + 1;
  const params = [sellerId, firstBuyerId, chats, messagesPerChat];
  await client.query("begin");
  try {
    // Chats, one listing each, activity spread over the last `chats` minutes.
    await client.query(
      `insert into chats (listing_id, buyer_id, seller_id, created_at, last_activity_at)
       select $1::bigint * 10 + i, $2::bigint + i - 1, $1::bigint,
              now() - make_interval(mins => $3::int - i + 1), now() - make_interval(mins => $3::int - i)
       from generate_series(1, $3::int) as i`,
      params.slice(0, 3),
    );
    await client.query(
      `create temp table seeded on commit drop as
       select id, buyer_id, seller_id, created_at, last_activity_at from chats
       where seller_id = $1 and buyer_id between $2 and $2 + $3 - 1`,
      params.slice(0, 3),
    );
    await client.query(
      `insert into chat_participants (chat_id, user_id, role, last_activity_at, last_read_message_id)
       select id, buyer_id, 'buyer', last_activity_at, null::bigint from seeded
       union all
       select id, seller_id, 'seller', last_activity_at, null::bigint from seeded`,
    );
    await client.query(
      `insert into messages (chat_id, sender_id, content, created_at)
       select s.id, case when n % 2 = 1 then s.buyer_id else s.seller_id end,
              'seeded message ' || n || ' of chat ' || s.id,
              s.created_at + make_interval(secs => n)
       from seeded s cross join generate_series(1, $1::int) as n
       order by s.id, n`,
      [messagesPerChat],
    );
    // Events: chat_created, then each message, in id order; each in both participants' streams.
    await client.query(
      `insert into chat_events (chat_id, type, message_id, payload, created_at)
       select c.id, 'chat_created', null, jsonb_build_object('chat', lc_chat_json(c)), c.created_at
       from chats c join seeded s on s.id = c.id
       union all
       select m.chat_id, 'new_message', m.id, jsonb_build_object('chat_id', m.chat_id, 'message', lc_message_json(m)), m.created_at
       from messages m join seeded s on s.id = m.chat_id`,
    );
    await client.query(
      `insert into user_events (user_id, event_id, chat_event_id)
       select u.user_id, coalesce(us.last_event_id, 0) + row_number() over (partition by u.user_id order by e.id), e.id
       from chat_events e
       join seeded s on s.id = e.chat_id
       cross join lateral (values (s.buyer_id), (s.seller_id)) as u(user_id)
       left join user_streams us on us.user_id = u.user_id`,
    );
    // Kept values: the newest message, who has written, unread counts (buyers read everything, the seller
    // nothing), totals.
    await client.query(
      `update chats c set last_message_id = m.last_id, last_activity_at = m.last_at,
         buyer_wrote = m.buyer_wrote, seller_wrote = m.seller_wrote
       from (select m.chat_id, max(m.id) as last_id, max(m.created_at) as last_at,
               bool_or(m.sender_id = s.buyer_id) as buyer_wrote, bool_or(m.sender_id = s.seller_id) as seller_wrote
             from messages m join seeded s on s.id = m.chat_id group by m.chat_id) m
       where c.id = m.chat_id`,
    );
    await client.query(
      `update chat_participants p set
         last_activity_at = c.last_activity_at,
         last_read_message_id = case when p.role = 'buyer' then c.last_message_id end,
         unread_count = case when p.role = 'seller'
           then (select count(*) from messages m where m.chat_id = c.id and m.sender_id <> p.user_id) else 0 end
       from chats c join seeded s on s.id = c.id
       where p.chat_id = c.id`,
    );
    await client.query(
      `insert into user_streams (user_id, last_event_id, unread_total)
       select ue.user_id, max(ue.event_id), coalesce((select sum(p.unread_count) from chat_participants p where p.user_id = ue.user_id), 0)
       from user_events ue
       where ue.user_id = $1 or ue.user_id between $2 and $2 + $3 - 1
       group by ue.user_id
       on conflict (user_id) do update set last_event_id = excluded.last_event_id, unread_total = excluded.unread_total`,
      params.slice(0, 3),
    );
    // What the platform registers (CONTRACT §8, since 0023): each chat's listing and every participant's name,
    // so that the chat list pays the lookups a marketplace's would (the listing, the other's name per chat).
    const { rows } = await client.query<{ people: boolean }>("select to_regclass('people') is not null as people");
    if (rows[0]?.people) {
      await client.query(
        `insert into listings (id, seller_id, title, price_minor, currency, image_url, url, status, chat_json)
         select l.*, lc_chat_listing_text(l.id, l.title, l.price_minor, l.currency, l.image_url, l.url, l.status)
         from (select s.listing_id as id, s.seller_id, 'Seeded listing ' || s.listing_id as title,
                      1000 + s.listing_id % 90000 as price_minor, 'EUR' as currency,
                      'https://img.marketplace.example/' || s.listing_id || '.jpg' as image_url,
                      'https://marketplace.example/listings/' || s.listing_id as url, 'active' as status
               from (select c.listing_id, c.seller_id from chats c join seeded sd on sd.id = c.id) s) l
         on conflict (id) do nothing`,
      );
      await client.query(
        `insert into people (user_id, display_name, avatar_url, peer_json)
         select p.*, lc_peer_text(p.user_id, p.display_name, p.avatar_url)
         from (select u.user_id, 'Seeded user ' || u.user_id as display_name,
                      'https://img.marketplace.example/u/' || u.user_id || '.jpg' as avatar_url
               from (select buyer_id as user_id from seeded union select $1::bigint) u) p
         on conflict (user_id) do nothing`,
        [sellerId],
      );
    }
    await client.query("commit");
  } catch (error) {
    await client.query("rollback");
    throw error;
  }
  await client.query("analyze");
  return { sellerId, firstBuyerId, chats, messages: chats * messagesPerChat };
}
