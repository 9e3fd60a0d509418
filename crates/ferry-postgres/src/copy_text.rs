//! PostgreSQL's `COPY … (FORMAT text)` encoding, both ways: rows of
//! [`ferry_core::Value`]s to COPY text for `COPY … FROM STDIN` ([`encode_row`]), and COPY
//! text from `COPY … TO STDOUT` back to rows ([`decode_rows`]).
//!
//! One row per line (`\n`), fields separated by a tab, `\N` for NULL. In a value a
//! backslash, tab, newline, carriage return, backspace, form feed and vertical tab are
//! written as a backslash escape (`\\`, `\t`, `\n`, `\r`, `\b`, `\f`, `\v`); reading also
//! takes octal (`\123`) and hex (`\x4f`) escapes and any other escaped byte as itself, as
//! PostgreSQL does. A field without a backslash is passed on without a copy.

use bytes::{BufMut, Bytes, BytesMut};
use ferry_core::snapshot::ByteStream;
use ferry_core::{ErrorClass, Row, RowStream, SourceError, Value};
use futures::stream::StreamExt;

/// Appends `row` to `out` as one line of COPY text.
///
/// [`Value::Unchanged`] never occurs in a snapshot; it is written as NULL would be if it
/// did, but callers must not pass it.
pub fn encode_row(row: &Row, out: &mut BytesMut) {
    for (i, value) in row.iter().enumerate() {
        if i > 0 {
            out.put_u8(b'\t');
        }
        match value {
            Value::Text(text) => encode_field(text, out),
            Value::Null | Value::Unchanged => out.put_slice(b"\\N"),
        }
    }
    out.put_u8(b'\n');
}

fn encode_field(text: &[u8], out: &mut BytesMut) {
    out.reserve(text.len());
    let mut start = 0;
    for (i, &c) in text.iter().enumerate() {
        let escaped = match c {
            b'\\' => b'\\',
            b'\t' => b't',
            b'\n' => b'n',
            b'\r' => b'r',
            0x08 => b'b',
            0x0c => b'f',
            0x0b => b'v',
            _ => continue,
        };
        out.put_slice(&text[start..i]);
        out.put_slice(&[b'\\', escaped]);
        start = i + 1;
    }
    out.put_slice(&text[start..]);
}

/// A COPY text line that does not fit the table.
#[derive(Debug, thiserror::Error)]
#[error("a COPY text row has {found} fields where the table has {expected} columns")]
pub struct WidthError {
    found: usize,
    expected: usize,
}

/// Decodes one line (without its `\n`) of `columns` fields.
pub fn decode_line(line: Bytes, columns: usize) -> Result<Row, WidthError> {
    let mut row = Vec::with_capacity(columns);
    // A table without columns still has a line per row: an empty one.
    if columns > 0 {
        for field in line.split(|&c| c == b'\t') {
            row.push(decode_field(&line, field));
        }
    }
    if row.len() != columns {
        return Err(WidthError {
            found: row.len(),
            expected: columns,
        });
    }
    Ok(row)
}

fn decode_field(line: &Bytes, field: &[u8]) -> Value {
    if field == b"\\N" {
        return Value::Null;
    }
    if !field.contains(&b'\\') {
        return Value::Text(line.slice_ref(field));
    }
    let mut out = BytesMut::with_capacity(field.len());
    let mut i = 0;
    while i < field.len() {
        let c = field[i];
        i += 1;
        if c != b'\\' || i == field.len() {
            out.put_u8(c);
            continue;
        }
        let e = field[i];
        i += 1;
        match e {
            b'b' => out.put_u8(0x08),
            b'f' => out.put_u8(0x0c),
            b'n' => out.put_u8(b'\n'),
            b'r' => out.put_u8(b'\r'),
            b't' => out.put_u8(b'\t'),
            b'v' => out.put_u8(0x0b),
            b'0'..=b'7' => {
                let mut byte = u32::from(e - b'0');
                for _ in 0..2 {
                    match field.get(i) {
                        Some(&d @ b'0'..=b'7') => {
                            byte = byte * 8 + u32::from(d - b'0');
                            i += 1;
                        }
                        _ => break,
                    }
                }
                out.put_u8(byte as u8);
            }
            b'x' if field.get(i).is_some_and(u8::is_ascii_hexdigit) => {
                let mut byte = 0u32;
                for _ in 0..2 {
                    match field.get(i).and_then(|d| (*d as char).to_digit(16)) {
                        Some(d) => {
                            byte = byte * 16 + d;
                            i += 1;
                        }
                        None => break,
                    }
                }
                out.put_u8(byte as u8);
            }
            other => out.put_u8(other),
        }
    }
    Value::Text(out.freeze())
}

/// Turns a stream of COPY text (split anywhere; PostgreSQL sends a message per row) into
/// rows of `columns` values. `what` names the chunk in errors.
pub fn decode_rows(data: ByteStream, columns: usize, what: String) -> RowStream {
    let mut partial = BytesMut::new();
    let mut failed = false;
    // `None` marks the end, where a row left unfinished is an error, never dropped.
    data.map(Some)
        .chain(futures::stream::once(futures::future::ready(None)))
        .flat_map(move |item| {
            let mut rows = Vec::new();
            if failed {
                return futures::stream::iter(rows);
            }
            match item {
                Some(Ok(bytes)) => {
                    let bytes = if partial.is_empty() {
                        bytes
                    } else {
                        partial.extend_from_slice(&bytes);
                        partial.split().freeze()
                    };
                    let mut start = 0;
                    while let Some(end) = bytes[start..].iter().position(|&c| c == b'\n') {
                        let line = bytes.slice(start..start + end);
                        start += end + 1;
                        match decode_line(line, columns) {
                            Ok(row) => rows.push(Ok(row)),
                            Err(e) => {
                                failed = true;
                                rows.push(Err(SourceError::new(
                                    what.clone(),
                                    ErrorClass::Definite,
                                    e,
                                )));
                                break;
                            }
                        }
                    }
                    if !failed {
                        partial.extend_from_slice(&bytes[start..]);
                    }
                }
                Some(Err(e)) => {
                    failed = true;
                    rows.push(Err(e));
                }
                None if !partial.is_empty() => rows.push(Err(SourceError::message(
                    format!("{what}: the COPY text ended in the middle of a row"),
                    ErrorClass::Transient,
                ))),
                None => {}
            }
            futures::stream::iter(rows)
        })
        .boxed()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn encode(row: &Row) -> Bytes {
        let mut out = BytesMut::new();
        encode_row(row, &mut out);
        out.freeze()
    }

    fn text(s: &str) -> Value {
        Value::Text(Bytes::copy_from_slice(s.as_bytes()))
    }

    #[test]
    fn escapes_what_copy_text_reserves() {
        let row = vec![text("a\tb\nc\\d\re"), Value::Null, text(""), text("\\N")];
        assert_eq!(&encode(&row)[..], b"a\\tb\\nc\\\\d\\re\t\\N\t\t\\\\N\n");
    }

    #[test]
    fn decodes_every_escape_postgresql_writes_or_reads() {
        let line = Bytes::from_static(b"\\101\\x41\\x4a\\q\\b\\f\\v\tx\\");
        assert_eq!(
            decode_line(line, 2).unwrap(),
            vec![text("AAJq\u{8}\u{c}\u{b}"), text("x\\")]
        );
    }

    #[test]
    fn an_unfinished_last_row_is_an_error() {
        let pieces: Vec<Result<Bytes, SourceError>> = vec![Ok(Bytes::from_static(b"a\nb"))];
        let decoded: Vec<Result<Row, SourceError>> = futures::FutureExt::now_or_never(
            decode_rows(futures::stream::iter(pieces).boxed(), 1, "test".into()).collect(),
        )
        .expect("a ready stream");
        assert_eq!(decoded.len(), 2);
        assert_eq!(decoded[0].as_ref().unwrap(), &vec![text("a")]);
        assert!(decoded[1].is_err());
    }

    #[test]
    fn a_row_of_the_wrong_width_is_an_error() {
        assert!(decode_line(Bytes::from_static(b"a\tb"), 3).is_err());
        assert_eq!(decode_line(Bytes::new(), 0).unwrap(), Vec::<Value>::new());
        assert_eq!(decode_line(Bytes::new(), 1).unwrap(), vec![text("")]);
    }

    fn value() -> impl Strategy<Value = Value> {
        prop_oneof![
            1 => Just(Value::Null),
            4 => "(\\PC|[\t\n\r\\\\\u{8}\u{b}\u{c}]|\\\\N)*".prop_map(|s| text(&s)),
        ]
    }

    proptest! {
        #[test]
        fn rows_round_trip(
            rows in prop::collection::vec(prop::collection::vec(value(), 3), 0..8),
            split in 1usize..17,
        ) {
            let mut all = BytesMut::new();
            for row in &rows {
                encode_row(row, &mut all);
            }
            let all = all.freeze();
            // Any message boundaries: PostgreSQL's are per row, but nothing relies on it.
            let pieces: Vec<Result<Bytes, SourceError>> = all
                .chunks(split)
                .map(|c| Ok(Bytes::copy_from_slice(c)))
                .collect();
            // Every piece is ready at once: the stream ends on the first poll.
            let decoded: Vec<Row> = futures::FutureExt::now_or_never(
                decode_rows(futures::stream::iter(pieces).boxed(), 3, "test".into())
                    .map(|r| r.unwrap())
                    .collect(),
            )
            .expect("a ready stream");
            prop_assert_eq!(decoded, rows);
        }
    }
}
