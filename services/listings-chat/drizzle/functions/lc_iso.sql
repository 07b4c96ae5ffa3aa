-- Shapes returned as jsonb are exactly what the API shows (db/rows.ts toMessage / toChat): timestamps in
-- UTC with milliseconds and "Z", as Date.prototype.toISOString prints them.
CREATE OR REPLACE FUNCTION lc_iso(t timestamptz) RETURNS text LANGUAGE sql STABLE AS $$
  SELECT to_char(t AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"')
$$;
