//! The least-privilege roles of docs/security.md ("Privileges Ferry needs") are enough for
//! a changefeed: snapshot, stream, and delete (slot and publications dropped).

mod common;

use std::time::Duration;

use common::Pair;
use ferry_testkit::wait_for;
use serde_json::json;

const MINUTE: Duration = Duration::from_secs(60);

#[test]
fn least_privilege_roles_replicate() {
    let pair = Pair::start();
    // Source: the application owns its table; Ferry's role may log in and replicate, may
    // create publications in the database, and is a member of the owner's role (adding a
    // table to a publication needs its ownership).
    pair.source.psql(
        "shop",
        "CREATE ROLE app NOLOGIN;
         CREATE TABLE public.orders (id int PRIMARY KEY, note text);
         ALTER TABLE public.orders OWNER TO app;
         INSERT INTO public.orders SELECT g, 'n' || g FROM generate_series(1, 100) g;
         CREATE ROLE ferry_source LOGIN REPLICATION;
         GRANT CREATE ON DATABASE shop TO ferry_source;
         GRANT app TO ferry_source;",
    );
    // Target: creates `_ferry` and missing schemas (CREATE on the database) and its tables
    // in `public` (CREATE on that schema, which PostgreSQL 15 grants to no one by default).
    pair.target.psql(
        "analytics",
        "CREATE ROLE ferry_sink LOGIN;
         GRANT CREATE ON DATABASE analytics TO ferry_sink;
         GRANT CREATE ON SCHEMA public TO ferry_sink;",
    );
    let as_role = |uri: String, role: &str| {
        uri.replacen("postgres://ferry@", &format!("postgres://{role}@"), 1)
    };
    let source_uri = as_role(pair.source.uri("shop"), "ferry_source");
    let sink_uri = as_role(pair.target.uri("analytics"), "ferry_sink");
    assert!(source_uri.contains("ferry_source@"), "{source_uri}");

    // What create would refuse, `?dry_run=true` (`ferry changefeed check`) refuses too: a
    // role without CREATE on the database, a role that does not own a table, a role without
    // REPLICATION; each named with what to do.
    pair.source.psql(
        "shop",
        "CREATE ROLE no_create LOGIN REPLICATION; GRANT app TO no_create;
         CREATE ROLE no_owner LOGIN REPLICATION; GRANT CREATE ON DATABASE shop TO no_owner;
         CREATE ROLE no_repl LOGIN; GRANT CREATE ON DATABASE shop TO no_repl; GRANT app TO no_repl;",
    );
    for (role, says) in [
        ("no_create", "GRANT CREATE ON DATABASE shop TO no_create"),
        ("no_owner", "does not own public.orders (owned by app)"),
        ("no_repl", "lacks the REPLICATION attribute"),
    ] {
        for path in ["/api/v2/changefeeds?dry_run=true", "/api/v2/changefeeds"] {
            let (code, body) = pair.ferry.post(
                path,
                &json!({
                    "id": "refused",
                    "source_uri": as_role(pair.source.uri("shop"), role),
                    "sink_uri": pair.target.uri("analytics"),
                    "tables": ["public.orders"],
                }),
            );
            assert_eq!(code, 400, "{role} {path}: {body}");
            assert_eq!(body["error_code"], json!("SOURCE_UNUSABLE"), "{body}");
            let message = body["error_msg"].as_str().unwrap_or_default();
            assert!(message.contains(says), "{role}: {message}");
        }
    }

    let (code, body) = pair.ferry.post(
        "/api/v2/changefeeds",
        &json!({
            "id": "least",
            "source_uri": source_uri,
            "sink_uri": sink_uri,
            "tables": ["public.orders"],
        }),
    );
    assert_eq!(code, 201, "{body}\n{}", pair.ferry.log());
    pair.wait_synced("least", MINUTE);
    pair.source
        .psql("shop", "INSERT INTO public.orders VALUES (101, 'streamed')");
    wait_for("the streamed row", MINUTE, || {
        pair.target.psql(
            "analytics",
            "SELECT count(*) FROM public.orders WHERE id = 101",
        ) == "1"
    });
    pair.assert_same("public.orders");

    let (code, body) = pair.ferry.delete("/api/v2/changefeeds/least");
    assert_eq!(code, 200, "{body}");
    wait_for("the slot and publications to go", MINUTE, || {
        pair.source.psql(
            "shop",
            "SELECT (SELECT count(*) FROM pg_replication_slots)
                  + (SELECT count(*) FROM pg_publication)",
        ) == "0"
    });
}
