use super::*;
use ferry_core::Lsn;

fn t(name: &str) -> TableId {
    TableId::new("public", name)
}

fn marker(table: &str, chunk: u32, lsn: u64) -> FinishedChunk {
    FinishedChunk {
        table: t(table),
        chunk,
        rows: 10,
        snapshot: Position::PgLsn(Lsn(lsn)),
    }
}

/// Documents stored before positions had kinds (bare LSN text) still read, and are
/// written back in the tagged form.
#[test]
fn state_stored_by_earlier_versions_still_reads() {
    let lsn = |v| Position::PgLsn(Lsn(v));
    let state: RuntimeState = serde_json::from_str(
        r#"{"phase":"streaming","plan":[],"added":[{"plan":{"table":{"schema":"public",
           "name":"t"},"key_column":null,"chunks":[{"index":0,"lower":null,"upper":null}],
           "estimated_rows":3},"since":"0/16B3748"}]}"#,
    )
    .unwrap();
    assert_eq!(state.added[0].since, lsn(0x16B3748));
    let doc: crate::lifecycle::LifecycleDoc =
        serde_json::from_str(r#"{"state":"paused","resume_from":"1/0"}"#).unwrap();
    assert_eq!(doc.resume_from, Some(lsn(1 << 32)));
    let config: crate::ChangefeedConfig = serde_json::from_value(serde_json::json!({
        "id": "a", "namespace": "default", "source_uri": "postgres://u@h/db",
        "sink_uri": "blackhole://", "tables": ["public.*"], "created_at_us": 0,
        "target_position": "0/20"
    }))
    .unwrap();
    assert_eq!(config.target_position, Some(lsn(0x20)));
    let again = serde_json::to_value(&state).unwrap();
    assert_eq!(
        again["added"][0]["since"],
        serde_json::json!({"kind": "pg_lsn", "value": "0/16B3748"})
    );
}

#[test]
fn a_table_to_resync_is_added_again_at_the_new_position() {
    let mut state = RuntimeState {
        phase: Some(Phase::Streaming),
        plan: vec![single_chunk_plan(t("a"), 1), single_chunk_plan(t("b"), 1)],
        resync: vec![t("a")],
        ..Default::default()
    };
    assert_eq!(take_resync(&mut state), [t("a")]);
    let got = reconcile(
        &mut state,
        &[(t("a"), 1), (t("b"), 1)],
        &Position::PgLsn(Lsn(7)),
    );
    assert_eq!(got.added, [t("a")]);
    assert!(got.removed.is_empty());
    assert!(state.resync.is_empty());
    assert_eq!(state.added[0].since, Position::PgLsn(Lsn(7)));
}

#[test]
fn reconcile_adds_new_and_forgets_unselected_tables() {
    let mut state = RuntimeState {
        phase: Some(Phase::Streaming),
        plan: vec![single_chunk_plan(t("a"), 1), single_chunk_plan(t("b"), 1)],
        added: vec![],
        divergent: vec![],
        source_ids: BTreeMap::new(),
        resync: vec![],
        held: vec![],
        dropped: vec![],
        recreated: vec![],
        stream_dropped: vec![],
    };
    let got = reconcile(
        &mut state,
        &[(t("a"), 1), (t("c"), 5)],
        &Position::PgLsn(Lsn(100)),
    );
    assert_eq!(
        got,
        Reconciled {
            added: vec![t("c")],
            removed: vec![t("b")]
        }
    );
    assert_eq!(state.plan.len(), 1);
    assert_eq!(state.added[0].since, Position::PgLsn(Lsn(100)));
    assert_eq!(state.added[0].plan.estimated_rows, 5);
    // Idempotent.
    assert!(reconcile(
        &mut state,
        &[(t("a"), 1), (t("c"), 5)],
        &Position::PgLsn(Lsn(200))
    )
    .is_empty());
    assert_eq!(state.added[0].since, Position::PgLsn(Lsn(100)));
}

#[test]
fn a_readded_table_ignores_its_old_copy() {
    let mut state = RuntimeState {
        phase: Some(Phase::Streaming),
        plan: vec![single_chunk_plan(t("a"), 1)],
        added: vec![],
        divergent: vec![],
        source_ids: BTreeMap::new(),
        resync: vec![],
        held: vec![],
        dropped: vec![],
        recreated: vec![],
        stream_dropped: vec![],
    };
    let old_copy = vec![marker("a", 0, 50)];
    reconcile(&mut state, &[], &Position::PgLsn(Lsn(80)));
    reconcile(&mut state, &[(t("a"), 1)], &Position::PgLsn(Lsn(90)));
    assert_eq!(pending_added(&state, &old_copy).len(), 1);
    assert!(skip_before(&state, &old_copy).is_empty());
    let new_copy = vec![marker("a", 0, 95)];
    assert!(pending_added(&state, &new_copy).is_empty());
    assert_eq!(
        skip_before(&state, &new_copy)[&t("a")],
        Position::PgLsn(Lsn(95))
    );
}

#[test]
fn progress_counts_finished_chunks() {
    let mut big = single_chunk_plan(t("big"), 300);
    big.chunks = (0..3)
        .map(|index| ChunkSpec {
            index,
            lower: None,
            upper: None,
        })
        .collect();
    let mut state = RuntimeState {
        phase: Some(Phase::Snapshot),
        plan: vec![big, single_chunk_plan(t("small"), 10)],
        added: vec![],
        divergent: vec![],
        source_ids: BTreeMap::new(),
        resync: vec![],
        held: vec![],
        dropped: vec![],
        recreated: vec![],
        stream_dropped: vec![],
    };
    reconcile(
        &mut state,
        &[(t("big"), 300), (t("small"), 10), (t("new"), 7)],
        &Position::PgLsn(Lsn(10)),
    );
    let finished = vec![
        marker("big", 0, 1),
        marker("big", 2, 1),
        marker("small", 0, 1),
    ];
    let p = progress(&state, &finished);
    let names: Vec<&str> = p.iter().map(|p| p.table.as_str()).collect();
    assert_eq!(names, ["public.big", "public.new", "public.small"]);
    assert_eq!((p[0].chunks_done, p[0].rows_copied), (2, 20));
    assert_eq!(p[0].state, TableState::Pending);
    assert_eq!(p[1].state, TableState::Pending);
    assert_eq!(p[2].state, TableState::Streaming);
    // Multi-chunk tables never skip stream changes; single-chunk ones do.
    let skip = skip_before(&state, &finished);
    assert_eq!(skip.keys().collect::<Vec<_>>(), vec![&t("small")]);
}

#[test]
fn a_renamed_table_keeps_its_planned_name_until_the_stream_renames_it() {
    let mut state = RuntimeState {
        phase: Some(Phase::Streaming),
        plan: vec![single_chunk_plan(t("a"), 1), single_chunk_plan(t("b"), 1)],
        added: vec![],
        divergent: vec![],
        source_ids: BTreeMap::new(),
        resync: vec![],
        held: vec![],
        dropped: vec![],
        recreated: vec![],
        stream_dropped: vec![],
    };
    let wanted = track_renames(&mut state, &[(1, t("a"), 1), (2, t("b"), 1)]);
    assert!(reconcile(&mut state, &wanted, &Position::PgLsn(Lsn(1))).is_empty());
    // Renamed on the source: same id, new name; not a new table.
    let wanted = track_renames(&mut state, &[(1, t("a2"), 1), (2, t("b"), 1)]);
    assert_eq!(wanted[0].0, t("a"));
    assert!(reconcile(&mut state, &wanted, &Position::PgLsn(Lsn(2))).is_empty());
    assert_eq!(state.source_ids[&1], t("a"));
    rename(&mut state, &t("a"), &t("a2"));
    assert_eq!(state.plan[0].table, t("a2"));
    assert_eq!(state.source_ids[&1], t("a2"));
    // Gone from the selection (dropped, or renamed out of the rules).
    assert_eq!(unselected_ids(&state, &[1]), vec![(2, t("b"))]);
}

#[test]
fn gone_tables_are_dropped_or_created_again() {
    let mut state = RuntimeState::default();
    let now = Position::PgLsn(Lsn(9));
    let gone = [(1, t("a")), (2, t("b"))];
    // b under a new id: rebuilt, or created again, which only ids that identify tables
    // tell; a is dropped.
    let recreated = sort_gone(&mut state, &gone, &[(3, t("b"), 10)], &now, false);
    assert!(recreated.is_empty() && state.resync.is_empty());
    assert_eq!(
        state.dropped,
        vec![DroppedTable {
            id: 1,
            table: t("a"),
            until: now.clone()
        }]
    );
    let recreated = sort_gone(&mut state, &gone, &[(3, t("b"), 10)], &now, true);
    assert_eq!(recreated, vec![t("b")]);
    assert_eq!(state.resync, vec![t("b")]);
    // Seen again at a later start: remembered once, at the first position.
    sort_gone(&mut state, &gone[..1], &[], &Position::PgLsn(Lsn(20)), true);
    assert_eq!(state.dropped.len(), 1);
    assert_eq!(state.dropped[0].until, now);
}

#[test]
fn a_table_dropped_in_the_stream_and_found_again_is_copied_again() {
    let mut state = RuntimeState {
        plan: vec![single_chunk_plan(t("a"), 1), single_chunk_plan(t("b"), 1)],
        ..Default::default()
    };
    for table in [t("a"), t("b"), t("c"), t("a")] {
        note(&mut state, TableNote::Dropped(&table));
    }
    assert_eq!(state.stream_dropped, [t("a"), t("b"), t("c")]);
    // a exists again; b is still gone; c is not planned.
    let selected = [(7, t("a"), 1), (8, t("c"), 1)];
    assert_eq!(created_again(&mut state, &selected), [t("a")]);
    assert!(state.stream_dropped.is_empty());
    // Created again in the stream, or followed to the name by a rename: not at the start.
    note(&mut state, TableNote::Dropped(&t("a")));
    note(&mut state, TableNote::Dropped(&t("b")));
    note(&mut state, TableNote::Recreated(&t("a")));
    note(&mut state, TableNote::Taken(&t("b")));
    assert!(state.stream_dropped.is_empty());
    note(&mut state, TableNote::Dropped(&t("c")));
    note(&mut state, TableNote::Copied(&t("c")));
    assert!(state.stream_dropped.is_empty());
    assert_eq!(state.resync, [t("a")]);
    assert_eq!(state.recreated, [t("a")]);
}

#[test]
fn swaps_are_found_before_ids_are_recorded() {
    let mut state = RuntimeState {
        plan: vec![
            single_chunk_plan(t("a"), 1),
            single_chunk_plan(t("a_new"), 1),
        ],
        ..RuntimeState::default()
    };
    let before = [(1, t("a"), 1), (2, t("a_new"), 1)];
    track_renames(&mut state, &before);
    assert_eq!(find_swaps(&state, &before), vec![]);
    // A plain rename, and a rename into a name no planned table has: no swap.
    assert_eq!(
        find_swaps(&state, &[(1, t("a_old"), 1), (2, t("a_new"), 1)]),
        vec![]
    );
    // a renamed to a_old, a_new to a.
    let swapped = [(1, t("a_old"), 1), (2, t("a"), 1)];
    assert_eq!(
        find_swaps(&state, &swapped),
        vec![Swap {
            table: t("a"),
            renamed_to: t("a_old"),
            taken_from: Some(t("a_new")),
        }]
    );
    // The table that took the name was not replicated (a new id).
    let swapped = [(1, t("a_old"), 1), (3, t("a"), 1)];
    assert_eq!(
        find_swaps(&state, &swapped),
        vec![Swap {
            table: t("a"),
            renamed_to: t("a_old"),
            taken_from: None,
        }]
    );
    // Dropped, and another took its name: not a swap (sorted as gone).
    assert_eq!(find_swaps(&state, &[(2, t("a"), 1)]), vec![]);
    // Once the stream followed the renames, the names are the target's: no swap.
    rename(&mut state, &t("a"), &t("a_old"));
    rename(&mut state, &t("a_new"), &t("a"));
    assert_eq!(
        find_swaps(&state, &[(1, t("a_old"), 1), (2, t("a"), 1)]),
        vec![]
    );
}

#[test]
fn a_table_renamed_to_a_dropped_name_or_held_is_not_created_again() {
    let mut state = RuntimeState {
        plan: vec![
            single_chunk_plan(t("a"), 1),
            single_chunk_plan(t("b"), 1),
            single_chunk_plan(t("c"), 1),
        ],
        held: vec![HeldTable {
            table: t("c"),
            error: None,
        }],
        ..Default::default()
    };
    track_renames(
        &mut state,
        &[(1, t("a"), 1), (2, t("b"), 1), (3, t("c"), 1)],
    );
    note(&mut state, TableNote::Dropped(&t("a")));
    note(&mut state, TableNote::Dropped(&t("c")));
    // b renamed to a (the stream follows it), c dropped and created again while held.
    let selected = [(2, t("a"), 1), (4, t("c"), 1)];
    assert!(created_again(&mut state, &selected).is_empty());
    assert!(state.stream_dropped.is_empty());
}

#[test]
fn a_name_is_followed_to_the_one_a_later_state_has() {
    let mut before = RuntimeState::default();
    track_renames(&mut before, &[(1, t("a"), 1), (2, t("b"), 1)]);
    let mut after = before.clone();
    after.source_ids.insert(1, t("a2"));
    assert_eq!(renamed_to(&before, &after, t("a")), t("a2"));
    assert_eq!(renamed_to(&before, &after, t("b")), t("b"));
    assert_eq!(renamed_to(&before, &after, t("z")), t("z"));
}
