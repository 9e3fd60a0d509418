//! Tables created on the source while streaming that the rules select are picked up without
//! a restart: copied (the path of tables added by an update), then streamed, with rows
//! written throughout and none lost or doubled; a new table the rules exclude is not.

mod common;

use std::time::{Duration, Instant};

use common::Pair;

const MINUTE: Duration = Duration::from_secs(60);

#[test]
fn new_tables_are_copied_then_streamed_while_running() {
    let pair = Pair::start();
    pair.source.psql(
        "shop",
        "CREATE TABLE old (id int PRIMARY KEY, v text);
         INSERT INTO old VALUES (1, 'a')",
    );
    pair.create("cf", &["public.*", "!public.skip_*"]);
    pair.wait_synced("cf", MINUTE);

    pair.source.psql(
        "shop",
        "CREATE TABLE fresh (id int PRIMARY KEY, v text);
         CREATE TABLE skip_me (id int PRIMARY KEY);
         INSERT INTO fresh SELECT g, 'before' FROM generate_series(1, 500) g;
         INSERT INTO skip_me VALUES (1)",
    );
    // Writes go on while the table is noticed, copied and streamed.
    let started = Instant::now();
    let mut id = 500;
    let mut picked_up = None;
    while started.elapsed() < MINUTE {
        id += 1;
        pair.source.psql(
            "shop",
            &format!(
                "INSERT INTO fresh VALUES ({id}, 'during'); UPDATE fresh SET v = 'updated {id}'
                 WHERE id = {}; INSERT INTO old VALUES ({id}, 'x')",
                id - 400
            ),
        );
        let there = pair.target.psql(
            "analytics",
            "SELECT count(*) FROM pg_tables WHERE tablename = 'fresh'",
        );
        if there == "1" && picked_up.is_none() {
            picked_up = Some((started.elapsed(), id));
        }
        if let Some((_, at)) = picked_up {
            if id >= at + 20 {
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let (after, _) = picked_up.expect("the new table was never picked up");
    pair.wait_synced("cf", MINUTE);
    let report = pair.compare(&["fresh", "old"]);
    eprintln!(
        "scenario 7: new table picked up {:.1} s after its creation, {} writes during\n{report}",
        after.as_secs_f64(),
        id - 500
    );
    report.assert_identical();
    assert_eq!(
        pair.target.psql(
            "analytics",
            "SELECT count(*) FROM pg_tables WHERE tablename = 'skip_me'"
        ),
        "0"
    );
    let status = pair.status("cf");
    assert_eq!(status["state"], "running", "{status}");
    let log = pair.ferry.log();
    // The first snapshot, and the new table's copy: `old` is not copied again.
    assert_eq!(
        log.matches("snapshot done").count(),
        2,
        "tables were copied again:\n{log}"
    );
}
