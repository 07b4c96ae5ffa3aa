-- A deleted message's photos go with it (CONTRACT §11), whoever deletes it (its sender, the platform, and any
-- later path): the message keeps no attachments, and its uploads become due for the sweeper (media/sweeper.ts),
-- which removes their objects from the storage and then the rows. A trigger, so that no way of deleting a
-- message can forget it; it fires only for a message with photos that is being deleted (the WHEN clause), so
-- text messages and edits pay nothing. Lock order: the message's row is held by the UPDATE that fired this,
-- then its uploads rows (no send ever takes an attached upload: lc_send_messages claims unattached ones only).
CREATE OR REPLACE FUNCTION lc_release_message_photos() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  UPDATE uploads u SET sweep_after = now() WHERE u.message_id = NEW.id;
  NEW.attachments := NULL;
  RETURN NEW;
END
$$;
--> statement-breakpoint
CREATE OR REPLACE TRIGGER messages_release_photos BEFORE UPDATE OF deleted_at ON messages
FOR EACH ROW WHEN (OLD.deleted_at IS NULL AND NEW.deleted_at IS NOT NULL AND OLD.attachments IS NOT NULL)
EXECUTE FUNCTION lc_release_message_photos();
