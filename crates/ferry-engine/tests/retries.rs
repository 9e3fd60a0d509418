//! The retry policy against a real source: a changefeed whose sink stays unreachable
//! retries with growing delays (state `error`, `last_warning`), then gives up (`failed`,
//! `last_error` with a hint) once the configured time is over; the failure survives an
//! engine restart, and the operator's resume starts a new streak. Also the server limits:
//! most changefeeds, longest name.

use std::sync::Arc;
use std::time::Duration;

use ferry_core::{parse_postgres_uri, TableFilter};
use ferry_engine::{ChangefeedConfig, Engine, EngineOptions, FeedState, RetryPolicy};
use ferry_meta::MetaStore;
use ferry_testkit::{wait_for_async, PgCluster};

fn options() -> EngineOptions {
    EngineOptions {
        retry: RetryPolicy {
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_millis(400),
            give_up_after: Duration::from_secs(2),
        },
        ..EngineOptions::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_back_off_then_give_up_and_failure_persists() {
    let source = PgCluster::start();
    source.create_database("shop");
    source.psql("shop", "CREATE TABLE t (id int PRIMARY KEY)");
    let dir = tempfile::tempdir().unwrap();
    let meta =
        Arc::new(MetaStore::open(&dir.path().join("data"), &dir.path().join("key")).unwrap());
    let engine = Engine::start(
        meta.clone(),
        options(),
        Arc::new(ferry_connectors::Registry),
    )
    .unwrap();
    let config = ChangefeedConfig {
        id: "cf".into(),
        namespace: "default".into(),
        source: None,
        source_uri: parse_postgres_uri(&source.uri("shop")).unwrap(),
        // Nothing listens on port 1: every attempt fails transiently.
        sink_uri: "postgres://u:secret@127.0.0.1:1/db".parse().unwrap(),
        tables: TableFilter::default(),
        options: Default::default(),
        created_at_us: 0,
        target_position: None,
        snapshot_only: false,
    };
    engine.create(config, true).await.unwrap();

    let status = || engine.status("default", "cf").unwrap();
    wait_for_async("state error", Duration::from_secs(30), || async {
        status().state == FeedState::Error
    })
    .await;
    let warning = status().last_warning.unwrap();
    assert!(warning.contains("(retry "), "{warning}");
    assert!(!warning.contains("secret"), "{warning}");

    wait_for_async("state failed", Duration::from_secs(30), || async {
        status().state == FeedState::Failed
    })
    .await;
    let error = status().last_error.unwrap();
    assert!(error.starts_with("gave up after retrying for"), "{error}");
    assert!(error.contains("Hint: fix the cause"), "{error}");

    // The failure is persisted: a new engine on the same store shows it and does not run.
    engine.shutdown().await;
    drop(engine);
    let engine = Engine::start(meta, options(), Arc::new(ferry_connectors::Registry)).unwrap();
    let restored = engine.status("default", "cf").unwrap();
    assert_eq!(restored.state, FeedState::Failed);
    assert_eq!(restored.last_error.as_deref(), Some(error.as_str()));

    // Resume: a new streak, which gives up again.
    let resumed = engine.resume("default", "cf", None).await.unwrap();
    assert_eq!(resumed.state, FeedState::Running);
    wait_for_async("failed again", Duration::from_secs(30), || async {
        engine.status("default", "cf").unwrap().state == FeedState::Failed
    })
    .await;
    engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_limits_refuse_more_changefeeds_and_long_names() {
    let source = PgCluster::start();
    source.create_database("shop");
    let dir = tempfile::tempdir().unwrap();
    let meta =
        Arc::new(MetaStore::open(&dir.path().join("data"), &dir.path().join("key")).unwrap());
    let limits = EngineOptions {
        max_changefeeds: 1,
        max_name_length: 8,
        ..EngineOptions::default()
    };
    let engine = Engine::start(meta, limits, Arc::new(ferry_connectors::Registry)).unwrap();
    let config = |id: &str| ChangefeedConfig {
        id: id.into(),
        namespace: "default".into(),
        source: None,
        source_uri: parse_postgres_uri(&source.uri("shop")).unwrap(),
        sink_uri: "blackhole://".parse().unwrap(),
        tables: TableFilter::default(),
        options: Default::default(),
        created_at_us: 0,
        target_position: None,
        snapshot_only: false,
    };
    let long = engine
        .create(config("much-too-long"), false)
        .await
        .unwrap_err();
    assert!(long.to_string().contains("at most 8"), "{long}");
    engine.create(config("one"), false).await.unwrap();
    let over = engine.create(config("two"), false).await.unwrap_err();
    assert!(
        matches!(over, ferry_engine::EngineError::TooManyChangefeeds(1)),
        "{over}"
    );
    // Deleting one makes room.
    assert!(engine.delete("default", "one").await.unwrap());
    engine.create(config("two"), false).await.unwrap();
    engine.shutdown().await;
}
