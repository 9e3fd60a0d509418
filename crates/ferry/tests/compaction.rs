//! The sink compacts a batch's changes per key into set statements. Many changes to the
//! same rows inside one source transaction (and across transactions of one batch) must end
//! exactly as applying them one by one would.

mod common;

use std::time::Duration;

use common::Pair;

#[test]
fn many_changes_to_the_same_rows_in_one_batch_end_as_on_the_source() {
    let pair = Pair::start();
    pair.source.psql(
        "shop",
        "CREATE TABLE kv (id int PRIMARY KEY, v text, big text);
         ALTER TABLE kv ALTER COLUMN big SET STORAGE EXTERNAL;
         CREATE TABLE nk (n numeric PRIMARY KEY, v text);
         CREATE TABLE full_nokey (a int, b text);
         ALTER TABLE full_nokey REPLICA IDENTITY FULL;
         CREATE TABLE log (a int, b text);
         CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy');
         CREATE TABLE ck (m mood, t text COLLATE \"C\", n numeric, v int, PRIMARY KEY (m, t, n));
         INSERT INTO ck SELECT (ARRAY['happy', 'ok', 'sad'])[1 + g % 3]::mood, 'k' || (90 - g),
                               g / 7.0, g FROM generate_series(1, 60) g;
         INSERT INTO kv SELECT g, 'v' || g, repeat('big', 10000) FROM generate_series(1, 100) g;
         INSERT INTO nk VALUES (1.0, 'one');",
    );
    pair.create("shop", &["public.*"]);
    pair.wait_synced("shop", Duration::from_secs(60));

    // One transaction, so all of it lands in one batch.
    pair.source.psql(
        "shop",
        "BEGIN;
         -- insert, update, delete and re-insert the same key
         INSERT INTO kv VALUES (1000, 'a', 'x');
         UPDATE kv SET v = 'b' WHERE id = 1000;
         DELETE FROM kv WHERE id = 1000;
         INSERT INTO kv VALUES (1000, 'c', repeat('fresh', 5000));
         -- unchanged TOAST values: on a row the batch holds, and on one it does not
         UPDATE kv SET v = 'c2' WHERE id = 1000;
         UPDATE kv SET v = 'toast kept' WHERE id = 1;
         UPDATE kv SET v = 'toast kept twice' WHERE id = 1;
         -- a chain of key changes, with unsent TOAST values
         UPDATE kv SET id = 2001 WHERE id = 2;
         UPDATE kv SET id = 2002 WHERE id = 2001;
         UPDATE kv SET id = 2003 WHERE id = 2002;
         DELETE FROM kv WHERE id BETWEEN 10 AND 20;
         UPDATE kv SET id = id + 1000 WHERE id BETWEEN 30 AND 40;
         -- key texts the target holds equal
         UPDATE nk SET n = 1.00 WHERE n = 1.0;
         UPDATE nk SET n = 1.0, v = 'back' WHERE n = 1.00;
         -- a keyless table matched by value, interleaved with inserts
         INSERT INTO full_nokey VALUES (1, 'x'), (1, 'x'), (2, 'y');
         UPDATE full_nokey SET b = 'z' WHERE a = 2;
         INSERT INTO full_nokey VALUES (3, 'w');
         DELETE FROM full_nokey WHERE a = 1 AND ctid = (SELECT min(ctid) FROM full_nokey WHERE a = 1);
         INSERT INTO log SELECT g, 'l' FROM generate_series(1, 500) g;
         TRUNCATE log;
         INSERT INTO log VALUES (1, 'after truncate');
         -- a set whose rows come in the reverse of the key's order (the sink sorts by key)
         UPDATE ck SET v = -v;
         INSERT INTO ck SELECT 'sad', 'z' || g, -g, g FROM generate_series(1, 30) g ORDER BY g DESC;
         COMMIT;",
    );
    pair.wait_synced("shop", Duration::from_secs(60));
    for t in ["kv", "nk", "full_nokey", "log", "ck"] {
        pair.assert_same(t);
    }
}
