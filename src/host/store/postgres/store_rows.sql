-- Part of record_visits.sql: writes the rows the batch's visits left
-- pending (one per client, its last visit's) in one upsert. A row the batch
-- took for new but found (written without the application's lock, by
-- hand) is counted once: the counter's gain is lowered.
FOR v_app, v_count IN
    WITH p AS (SELECT a, c, t, m, f
               FROM unnest(apps, cmids, s_seen, s_n, s_pending, s_fresh)
                   AS u(a, c, t, m, p, f)
               WHERE p),
         w AS (INSERT INTO {s}.clients AS o (application_id, cmid, last_seen, n_policy)
               SELECT a, c, t, m FROM p
               ON CONFLICT (application_id, cmid) DO UPDATE
                   SET last_seen = GREATEST(o.last_seen, EXCLUDED.last_seen),
                       n_policy = EXCLUDED.n_policy
               RETURNING o.application_id, o.cmid, o.xmax = 0 AS inserted)
    SELECT w.application_id, count(*) FROM w
    JOIN p ON p.a = w.application_id AND p.c = w.cmid
    WHERE p.f AND NOT w.inserted GROUP BY 1
LOOP
    v_k := array_position(u_apps, v_app);
    u_held[v_k] := u_held[v_k] - v_count;
    u_delta[v_k] := u_delta[v_k] - v_count;
END LOOP;
