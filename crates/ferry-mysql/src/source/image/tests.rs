//! The image reader against `mysql_common`'s row iterator: random rows events for the real
//! TABLE_MAP of a table with a column of every type (`tablemap`'s fixture), every event kind,
//! columns left out of images, NULLs, and values of the sizes their types take.

use mysql_common::binlog::consts::{BinlogVersion, EventType};
use mysql_common::binlog::decimal::{decimal_bin_size, Decimal};
use mysql_common::binlog::events::{
    DeleteRowsEvent, DeleteRowsEventV1, FormatDescriptionEvent, UpdateRowsEvent, UpdateRowsEventV1,
    WriteRowsEvent, WriteRowsEventV1,
};
use mysql_common::binlog::row::BinlogRow;
use mysql_common::binlog::BinlogCtx;
use mysql_common::proto::MyDeserialize;
use proptest::prelude::*;

use super::*;
use crate::source::tablemap::fixture::{table_map_event, with_event};

/// An image as both readers give it: the present columns' values (as `Debug` prints them,
/// so that NaN equals NaN), in column order.
type Image = Vec<String>;

fn ours(values: &[Option<My>]) -> Image {
    values.iter().flatten().map(|v| format!("{v:?}")).collect()
}

fn theirs(mut row: BinlogRow) -> Image {
    (0..row.len())
        .map(|i| {
            format!(
                "{:?}",
                My::try_from(row.take(i).expect("not taken")).unwrap()
            )
        })
        .collect()
}

/// The row images of `rows`, read by [`ImageReader`] until the first error.
fn read_ours(rows: &RowsEventData<'_>, layout: &Layout) -> (Vec<(Image, Image)>, bool) {
    let mut reader = ImageReader::default();
    let mut images = reader.start(rows, layout).expect("the column counts match");
    let mut out = Vec::new();
    loop {
        match images.next_row() {
            Ok(true) => out.push((ours(&images.reader.before), ours(&images.reader.after))),
            Ok(false) => return (out, false),
            Err(_) => return (out, true),
        }
    }
}

/// The same by `mysql_common`'s `RowsEventData::rows`.
fn read_theirs(rows: &RowsEventData<'_>, tme: &TableMapEvent<'_>) -> (Vec<(Image, Image)>, bool) {
    let mut out = Vec::new();
    for row in rows.rows(tme) {
        match row {
            Ok((before, after)) => out.push((
                before.map(theirs).unwrap_or_default(),
                after.map(theirs).unwrap_or_default(),
            )),
            Err(_) => return (out, true),
        }
    }
    (out, false)
}

/// Bytes of one value of `column`, with content from `seed` (any content: both readers parse
/// values with the same decoder; what is compared is how they find them).
fn value_bytes(column: &ColumnLayout, seed: &[u8]) -> Vec<u8> {
    use ColumnType::*;
    let meta = |i: usize| usize::from(column.meta.get(i).copied().unwrap_or(0));
    let random = |n: usize| seed.iter().copied().cycle().take(n).collect::<Vec<u8>>();
    let prefixed = |prefix: usize, max: usize| {
        let len = usize::from(seed[0]).min(max);
        let mut out = (len as u32).to_le_bytes()[..prefix].to_vec();
        out.extend(random(len));
        out
    };
    match column.column_type {
        MYSQL_TYPE_TINY | MYSQL_TYPE_YEAR => random(1),
        MYSQL_TYPE_SHORT => random(2),
        MYSQL_TYPE_INT24 | MYSQL_TYPE_DATE | MYSQL_TYPE_NEWDATE | MYSQL_TYPE_TIME => random(3),
        MYSQL_TYPE_LONG | MYSQL_TYPE_FLOAT | MYSQL_TYPE_TIMESTAMP => random(4),
        MYSQL_TYPE_LONGLONG | MYSQL_TYPE_DOUBLE | MYSQL_TYPE_DATETIME => random(8),
        // Packed values at or above their offset: a random one below it overflows
        // `mysql_common`'s arithmetic (debug builds panic).
        MYSQL_TYPE_TIME2 => non_negative(random(3 + meta(0).div_ceil(2))),
        MYSQL_TYPE_DATETIME2 => non_negative(random(5 + meta(0).div_ceil(2))),
        MYSQL_TYPE_TIMESTAMP2 => random(4 + meta(0).div_ceil(2)),
        MYSQL_TYPE_BIT => random((meta(1) * 8 + meta(0)).div_ceil(8)),
        MYSQL_TYPE_ENUM | MYSQL_TYPE_SET => random(meta(1)),
        MYSQL_TYPE_NEWDECIMAL => {
            let (precision, scale) = (meta(0), meta(1));
            let digit = |i: usize| char::from(b'1' + seed[i % seed.len()] % 9);
            let int: String = (0..precision - scale).map(digit).collect();
            let frac: String = (0..scale).map(|i| digit(i + 7)).collect();
            let int = if int.is_empty() { "0".into() } else { int };
            let literal = if scale == 0 {
                int
            } else {
                format!("{int}.{frac}")
            };
            let mut out = Vec::new();
            Decimal::parse_str_bytes(literal.as_bytes())
                .unwrap()
                .write_bin(&mut out)
                .unwrap();
            assert_eq!(out.len(), decimal_bin_size(precision, scale), "{literal}");
            out
        }
        MYSQL_TYPE_VARCHAR | MYSQL_TYPE_VAR_STRING => {
            let max = meta(0) | meta(1) << 8;
            prefixed(if max < 256 { 1 } else { 2 }, max)
        }
        MYSQL_TYPE_STRING => {
            let max = if meta(0) & 0x30 != 0x30 {
                meta(1) | ((meta(0) & 0x30) ^ 0x30) << 4
            } else {
                meta(1)
            };
            prefixed(if max < 256 { 1 } else { 2 }, max)
        }
        MYSQL_TYPE_BLOB | MYSQL_TYPE_TINY_BLOB | MYSQL_TYPE_MEDIUM_BLOB | MYSQL_TYPE_LONG_BLOB => {
            prefixed(meta(0), 300)
        }
        other => panic!("the fixture has no {other:?} column"),
    }
}

/// A packed TIME2 or DATETIME2 of a non-negative value that is not too large.
fn non_negative(mut bytes: Vec<u8>) -> Vec<u8> {
    bytes[0] = 0x80 | (bytes[0] & 0x3f);
    bytes
}

/// One image: a NULL bitmap over the present columns, then the values of the others.
fn image_bytes(layout: &Layout, present: &[bool], nulls: &[bool], seeds: &[Vec<u8>]) -> Vec<u8> {
    let mut bitmap = Vec::new();
    let mut values = Vec::new();
    let mut index = 0;
    for (i, column) in layout.columns.iter().enumerate() {
        if !present[i] {
            continue;
        }
        if index % 8 == 0 {
            bitmap.push(0u8);
        }
        if nulls[i] {
            *bitmap.last_mut().unwrap() |= 1 << (index % 8);
        } else {
            values.extend(value_bytes(column, &seeds[i]));
        }
        index += 1;
    }
    bitmap.extend(values);
    bitmap
}

fn bitmap(bits: &[bool]) -> Vec<u8> {
    let mut out = vec![0u8; bits.len().div_ceil(8)];
    for (i, bit) in bits.iter().enumerate() {
        if *bit {
            out[i / 8] |= 1 << (i % 8);
        }
    }
    out
}

#[derive(Clone, Debug)]
struct GeneratedImage {
    nulls: Vec<bool>,
    seeds: Vec<Vec<u8>>,
}

fn generated_image(columns: usize) -> impl Strategy<Value = GeneratedImage> {
    (
        proptest::collection::vec(proptest::bool::weighted(0.2), columns),
        proptest::collection::vec(proptest::collection::vec(any::<u8>(), 1..8), columns),
    )
        .prop_map(|(nulls, seeds)| GeneratedImage { nulls, seeds })
}

/// The event kinds: MariaDB writes the v1 events, MySQL the v2 ones.
const KINDS: [EventType; 6] = [
    EventType::WRITE_ROWS_EVENT_V1,
    EventType::UPDATE_ROWS_EVENT_V1,
    EventType::DELETE_ROWS_EVENT_V1,
    EventType::WRITE_ROWS_EVENT,
    EventType::UPDATE_ROWS_EVENT,
    EventType::DELETE_ROWS_EVENT,
];

fn parse_rows<'a>(
    kind: EventType,
    body: &'a [u8],
    fde: &'a FormatDescriptionEvent<'a>,
) -> RowsEventData<'a> {
    let ctx = BinlogCtx::new(body.len(), fde, kind as u8);
    let buf = &mut ParseBuf(body);
    match kind {
        EventType::WRITE_ROWS_EVENT_V1 => {
            RowsEventData::WriteRowsEventV1(WriteRowsEventV1::deserialize(ctx, buf).unwrap())
        }
        EventType::UPDATE_ROWS_EVENT_V1 => {
            RowsEventData::UpdateRowsEventV1(UpdateRowsEventV1::deserialize(ctx, buf).unwrap())
        }
        EventType::DELETE_ROWS_EVENT_V1 => {
            RowsEventData::DeleteRowsEventV1(DeleteRowsEventV1::deserialize(ctx, buf).unwrap())
        }
        EventType::WRITE_ROWS_EVENT => {
            RowsEventData::WriteRowsEvent(WriteRowsEvent::deserialize(ctx, buf).unwrap())
        }
        EventType::UPDATE_ROWS_EVENT => {
            RowsEventData::UpdateRowsEvent(UpdateRowsEvent::deserialize(ctx, buf).unwrap())
        }
        _ => RowsEventData::DeleteRowsEvent(DeleteRowsEvent::deserialize(ctx, buf).unwrap()),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn images_read_as_mysql_common_reads_them(
        kind in proptest::sample::select(KINDS.to_vec()),
        before_present in proptest::collection::vec(proptest::bool::weighted(0.9), 55),
        after_present in proptest::collection::vec(proptest::bool::weighted(0.9), 55),
        rows in proptest::collection::vec((generated_image(55), generated_image(55)), 1..4),
        cut in 0usize..40,
    ) {
        with_event(&table_map_event(), |tme| {
            let layout = Layout::read(tme).unwrap();
            prop_assert_eq!(layout.len(), 55);
            let is_update = matches!(
                kind,
                EventType::UPDATE_ROWS_EVENT_V1 | EventType::UPDATE_ROWS_EVENT
            );
            let is_delete = matches!(
                kind,
                EventType::DELETE_ROWS_EVENT_V1 | EventType::DELETE_ROWS_EVENT
            );
            let has_before = is_update || is_delete;
            let has_after = !is_delete;
            let mut body = tme.table_id().to_le_bytes()[..6].to_vec();
            body.extend([0, 0]); // flags
            if !matches!(
                kind,
                EventType::WRITE_ROWS_EVENT_V1
                    | EventType::UPDATE_ROWS_EVENT_V1
                    | EventType::DELETE_ROWS_EVENT_V1
            ) {
                body.extend(2u16.to_le_bytes()); // no extra data
            }
            body.push(55);
            if has_before {
                body.extend(bitmap(&before_present));
            }
            if has_after {
                body.extend(bitmap(&after_present));
            }
            for (before, after) in &rows {
                if has_before {
                    body.extend(image_bytes(&layout, &before_present, &before.nulls, &before.seeds));
                }
                if has_after {
                    body.extend(image_bytes(&layout, &after_present, &after.nulls, &after.seeds));
                }
            }
            // Now and then a truncated event: both must stop at the same row with an error.
            if cut < 5 {
                body.truncate(body.len().saturating_sub(cut * 3 + 1));
            }
            let fde = FormatDescriptionEvent::new(BinlogVersion::Version4);
            let event = parse_rows(kind, &body, &fde);
            let (got, got_error) = read_ours(&event, &layout);
            let (want, want_error) = read_theirs(&event, tme);
            prop_assert_eq!(&got, &want);
            prop_assert_eq!(got_error, want_error);
            if cut >= 5 {
                prop_assert!(!got_error);
                prop_assert_eq!(got.len(), rows.len());
            }
            Ok(())
        })?;
    }
}

#[test]
fn a_rows_event_of_another_column_count_is_refused() {
    with_event(&table_map_event(), |tme| {
        let layout = Layout::read(tme).unwrap();
        let mut body = tme.table_id().to_le_bytes()[..6].to_vec();
        body.extend([0, 0, 3, 0b111, 0]);
        let fde = FormatDescriptionEvent::new(BinlogVersion::Version4);
        let event = parse_rows(EventType::WRITE_ROWS_EVENT_V1, &body, &fde);
        let error = ImageReader::default()
            .start(&event, &layout)
            .err()
            .expect("refused");
        assert!(error.to_string().contains("3 columns"), "{error}");
    });
}
