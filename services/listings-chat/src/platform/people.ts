import { sql } from "drizzle-orm";
import type { Database } from "../db/client.ts";
import { executeWrite } from "../db/retry.ts";
import { people } from "../db/schema.ts";

/** What chat lists show of a person (CONTRACT §8), as `PUT /internal/chat/users/:id` answers it. */
export interface Person {
  id: number;
  display_name: string | null;
  avatar_url: string | null;
}

/** Stores (or replaces) what chats show of user `id`; read from then on, no event (CONTRACT §8). */
export async function putPerson(db: Database, id: number, fields: Omit<Person, "id">): Promise<Person> {
  await executeWrite(
    db,
    // With what chats show of them (peer_json), which the chat list embeds as it is.
    sql`insert into ${people} (user_id, display_name, avatar_url, peer_json)
        values (${id}, ${fields.display_name}, ${fields.avatar_url},
          lc_peer_text(${id}, ${fields.display_name}, ${fields.avatar_url}))
        on conflict (user_id) do update
        set display_name = excluded.display_name, avatar_url = excluded.avatar_url, peer_json = excluded.peer_json,
          updated_at = now()`,
  );
  return { id, ...fields };
}
