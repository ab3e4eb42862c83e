-- `record_visits`: a batch of visits in one statement. The store installs
-- it at every start, with the quoted schema in place of each `{s}` and the
-- text of store_rows.sql in place of each store_rows marker in braces.
DROP FUNCTION IF EXISTS {s}.record_visits(
    uuid[], uuid[], bigint[], bigint[], bigint[], bigint[], bigint, integer);
CREATE OR REPLACE FUNCTION {s}.record_visits(
    apps uuid[], cmids uuid[], ats bigint[], window_starts bigint[],
    n_policies bigint[], capacities bigint[], max_clients bigint, batch integer,
    granularity bigint)
RETURNS TABLE (visit integer, tally_clients bigint, tally_max_n_policy bigint,
               tally_admitted boolean)
LANGUAGE plpgsql AS $fn$
DECLARE
    -- Per application of the batch (index k, by application ID):
    -- its latest window, its rows (the counter), the aged ones
    -- among them, the largest live N policy (NULL: to be read
    -- again) and what the counter gains.
    u_apps uuid[];
    u_window bigint[];
    u_held bigint[];
    u_aged bigint[];
    u_max_n bigint[];
    u_delta bigint[];
    -- Per visit (index i): its client's row after it, whether
    -- that row is still to be written (by this visit, the last of
    -- its client so far) and whether it is new.
    s_seen bigint[] := ARRAY[]::bigint[];
    s_n bigint[] := ARRAY[]::bigint[];
    s_pending boolean[] := ARRAY[]::boolean[];
    s_fresh boolean[] := ARRAY[]::boolean[];
    dirty boolean := false;
    evicted boolean := false;
    r record;
    k integer;
    v_k integer;
    v_seen bigint;
    v_n bigint;
    v_pending boolean;
    v_fresh boolean;
    v_new boolean;
    v_app uuid;
    v_count bigint;
BEGIN
    IF coalesce(cardinality(apps), 0) = 0 THEN
        RETURN;
    END IF;
    IF apps[1] = ALL (apps) THEN
        u_apps := ARRAY[apps[1]];
        u_window := ARRAY[(SELECT max(w) FROM unnest(window_starts) AS w)];
    ELSE
        SELECT array_agg(a ORDER BY a), array_agg(w ORDER BY a)
            INTO u_apps, u_window
            FROM (SELECT a, max(w) AS w FROM unnest(apps, window_starts) AS v(a, w)
                  GROUP BY a) AS g;
    END IF;
    u_held := array_fill(0::bigint, ARRAY[cardinality(u_apps)]);
    u_aged := u_held;
    u_max_n := u_held;
    u_delta := u_held;
    -- The lock order: the applications' locks, by application ID,
    -- before any row. Each application's tally is read once; the
    -- visits then keep it up to date.
    FOR k IN 1 .. cardinality(u_apps) LOOP
        PERFORM pg_advisory_xact_lock(hashtextextended('{s}.' || u_apps[k]::text, 0));
        SELECT count(*) INTO v_count FROM {s}.clients c
            WHERE c.application_id = u_apps[k] AND c.last_seen <= u_window[k];
        IF v_count > 0 THEN
            v_count := v_count - {s}.prune_clients(u_apps[k], u_window[k], batch);
        END IF;
        u_aged[k] := v_count;
        SELECT coalesce((SELECT a.clients FROM {s}.applications a
                         WHERE a.application_id = u_apps[k]), 0),
               coalesce((SELECT c.n_policy FROM {s}.clients c
                         WHERE c.application_id = u_apps[k]
                           AND c.last_seen > u_window[k]
                         ORDER BY c.n_policy DESC LIMIT 1), 0)
            INTO v_count, v_n;
        u_held[k] := v_count;
        u_max_n[k] := v_n;
    END LOOP;
    -- Every visit's stored row in one look-up; a client's later
    -- visits in the batch start from its earlier one's row.
    FOR r IN
        -- LATERAL with LIMIT (never flattened into a join): one probe of
        -- the primary key per visit, whatever the table's statistics said
        -- when the plan was cached (a join could keep a plan made for an
        -- empty table: a scan of every row, every batch).
        SELECT u.i::integer AS i, c.last_seen, c.n_policy,
               (lag(u.i) OVER (PARTITION BY u.a, u.c ORDER BY u.i))::integer AS prev
        FROM unnest(apps, cmids) WITH ORDINALITY AS u(a, c, i)
        LEFT JOIN LATERAL (
            SELECT s.last_seen, s.n_policy FROM {s}.clients s
            WHERE s.application_id = u.a AND s.cmid = u.c LIMIT 1) AS c ON true
        ORDER BY u.i
    LOOP
        visit := r.i;
        k := array_position(u_apps, apps[visit]);
        IF r.prev IS NOT NULL AND (s_pending[r.prev] OR NOT evicted) THEN
            v_seen := s_seen[r.prev];
            v_n := s_n[r.prev];
            v_pending := s_pending[r.prev];
            v_fresh := s_fresh[r.prev];
            s_pending[r.prev] := false;
        ELSIF evicted THEN
            -- An eviction may have taken a row looked up above, or one an
            -- earlier visit of this client left as it was: the table says.
            SELECT c.last_seen, c.n_policy INTO v_seen, v_n FROM {s}.clients c
                WHERE c.application_id = apps[visit] AND c.cmid = cmids[visit];
            v_pending := false;
            v_fresh := false;
        ELSE
            v_seen := r.last_seen;
            v_n := r.n_policy;
            v_pending := false;
            v_fresh := false;
        END IF;
        tally_admitted := true;
        v_new := false;
        IF v_seen > u_window[k] THEN
            -- Counted. A renewal within the granularity, same N
            -- policy, changes no tally: nothing is written.
            IF granularity <= 0 OR v_n <> n_policies[visit]
               OR v_seen < ats[visit] - granularity THEN
                IF v_n > n_policies[visit] AND v_n >= u_max_n[k] THEN
                    u_max_n[k] := NULL;
                END IF;
                v_seen := GREATEST(v_seen, ats[visit]);
                v_n := n_policies[visit];
                v_pending := true;
            END IF;
        ELSIF capacities[visit] IS NOT NULL
              AND u_held[k] - u_aged[k] >= capacities[visit] THEN
            tally_admitted := false;
        ELSE
            -- Unknown, or aged out of the window: a new client.
            IF v_seen IS NULL THEN
                u_held[k] := u_held[k] + 1;
                u_delta[k] := u_delta[k] + 1;
                v_fresh := true;
                v_new := true;
            ELSE
                u_aged[k] := u_aged[k] - 1;
            END IF;
            v_seen := GREATEST(v_seen, ats[visit]);
            v_n := n_policies[visit];
            v_pending := true;
        END IF;
        IF v_pending AND u_max_n[k] IS NOT NULL THEN
            u_max_n[k] := GREATEST(u_max_n[k], v_n);
        END IF;
        s_seen[visit] := v_seen;
        s_n[visit] := v_n;
        s_pending[visit] := v_pending;
        s_fresh[visit] := v_fresh;
        dirty := dirty OR v_pending;
        IF (v_new AND u_held[k] > max_clients) OR u_max_n[k] IS NULL THEN
            -- Rare: the rows are written now, then the client seen
            -- longest ago gives way, or the largest N policy is
            -- read again.
            {store_rows}
            s_pending := array_fill(false, ARRAY[visit]);
            s_fresh := s_pending;
            dirty := false;
            IF v_new AND u_held[k] > max_clients THEN
                DELETE FROM {s}.clients WHERE application_id = apps[visit] AND cmid = (
                    SELECT c.cmid FROM {s}.clients c WHERE c.application_id = apps[visit]
                    ORDER BY c.last_seen LIMIT 1)
                    RETURNING last_seen, n_policy INTO v_seen, v_n;
                IF FOUND THEN
                    evicted := true;
                    u_held[k] := u_held[k] - 1;
                    u_delta[k] := u_delta[k] - 1;
                    IF v_seen <= u_window[k] THEN
                        u_aged[k] := u_aged[k] - 1;
                    ELSIF v_n >= u_max_n[k] THEN
                        u_max_n[k] := NULL;
                    END IF;
                END IF;
            END IF;
            IF u_max_n[k] IS NULL THEN
                u_max_n[k] := coalesce((SELECT c.n_policy FROM {s}.clients c
                    WHERE c.application_id = apps[visit] AND c.last_seen > u_window[k]
                    ORDER BY c.n_policy DESC LIMIT 1), 0);
            END IF;
        END IF;
        tally_clients := u_held[k] - u_aged[k];
        tally_max_n_policy := u_max_n[k];
        RETURN NEXT;
    END LOOP;
    IF dirty THEN
        {store_rows}
    END IF;
    IF EXISTS (SELECT 1 FROM unnest(u_delta) AS d WHERE d <> 0) THEN
        INSERT INTO {s}.applications AS o (application_id, clients)
            SELECT a, d FROM unnest(u_apps, u_delta) AS u(a, d) WHERE d <> 0
            ON CONFLICT (application_id) DO UPDATE
                SET clients = GREATEST(o.clients + EXCLUDED.clients, 0);
    END IF;
END
$fn$;
