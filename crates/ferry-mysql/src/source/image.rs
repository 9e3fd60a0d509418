//! Row images of a rows event, read with a column layout taken once from the TABLE_MAP, and
//! turned into rows of canonical text.
//!
//! ```text
//! rows event: columns-present bitmap(s), then one entry per row:
//!   WRITE: after image      DELETE: before image      UPDATE: before image, after image
//! image:      NULL bitmap over the present columns ((present + 7) / 8 bytes, LSB first),
//!             then each present, non-NULL value in column order
//! ```
//!
//! `mysql_common`'s row iterator describes every column again for every image it reads: it
//! walks the TABLE_MAP's optional metadata and builds a `Column` (schema, table and column
//! names, flags, character set) per column per image, a dozen allocations per value that
//! Ferry never looks at. Here [`Layout::read`] takes from the TABLE_MAP what a value's
//! decoding needs (real type, metadata bytes, signedness) once, and [`ImageReader`] walks the
//! bitmaps above; each value is still parsed by `mysql_common`'s own value decoder
//! (`BinlogValue`), so the binary forms of values stay the driver's.
//!
//! [`canonical_row`] writes an image's values as canonical text into one buffer shared by
//! many rows and splits each value off it: a `Bytes` per value without an allocation each.
//!
//! # Invariant
//! For any event, the reader gives the values `RowsEventData::rows` gives, image by image (a
//! property test compares the two), and consumes the rows data as it does.

use std::io;

use bytes::BytesMut;
use ferry_core::{ErrorClass, Row, SourceError, TableSchema, Value};
use mysql_async::binlog::events::{OptionalMetaExtractor, RowsEventData, TableMapEvent};
use mysql_async::binlog::value::BinlogValue;
use mysql_async::consts::ColumnType;
use mysql_async::Value as My;
use mysql_common::io::ParseBuf;

use super::types::Kind;
use super::values::{write_canonical, Origin};

/// How each column of a table's row images is decoded.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Layout {
    columns: Vec<ColumnLayout>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct ColumnLayout {
    /// The real type (ENUM and SET unwrapped from `MYSQL_TYPE_STRING`).
    column_type: ColumnType,
    /// The column's metadata bytes in the TABLE_MAP event.
    meta: Vec<u8>,
    /// From the SIGNEDNESS field (numeric columns).
    unsigned: bool,
}

fn invalid(what: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what)
}

impl Layout {
    /// The layout `tme` describes, read as `mysql_common` reads it for each row.
    pub(crate) fn read(tme: &TableMapEvent<'_>) -> io::Result<Self> {
        let meta = OptionalMetaExtractor::new(tme.iter_optional_meta())?;
        let mut signedness = meta.iter_signedness();
        let count = tme.columns_count() as usize;
        let mut columns = Vec::with_capacity(count);
        for i in 0..count {
            let column_type = tme
                .get_column_type(i)
                .map_err(invalid)?
                .ok_or_else(|| invalid("No column type"))?;
            let unsigned = column_type.is_numeric_type() && signedness.next().unwrap_or_default();
            columns.push(ColumnLayout {
                column_type,
                meta: tme.get_column_metadata(i).unwrap_or_default().to_vec(),
                unsigned,
            });
        }
        Ok(Self { columns })
    }

    /// Number of columns.
    pub(crate) fn len(&self) -> usize {
        self.columns.len()
    }
}

/// Reads the images of rows events into reusable buffers: per image, a value per column,
/// `None` for a column the image leaves out.
#[derive(Debug, Default)]
pub(crate) struct ImageReader {
    before_present: Vec<bool>,
    after_present: Vec<bool>,
    /// The before and after image of the row read last.
    before: Vec<Option<My>>,
    after: Vec<Option<My>>,
}

/// The images of one rows event being read.
pub(crate) struct Images<'r, 'e> {
    reader: &'r mut ImageReader,
    layout: &'r Layout,
    has_before: bool,
    has_after: bool,
    data: ParseBuf<'e>,
}

impl ImageReader {
    /// Starts reading `rows`, whose table `layout` describes.
    pub(crate) fn start<'r, 'e>(
        &'r mut self,
        rows: &'e RowsEventData<'e>,
        layout: &'r Layout,
    ) -> io::Result<Images<'r, 'e>> {
        let columns = rows.num_columns() as usize;
        if columns != layout.len() {
            return Err(invalid(format!(
                "a rows event of {columns} columns where its TABLE_MAP event has {}",
                layout.len()
            )));
        }
        let before = rows.columns_before_image();
        let after = rows.columns_after_image();
        self.before_present.clear();
        self.after_present.clear();
        if let Some(bits) = before {
            self.before_present.extend(bits.iter().by_vals());
        }
        if let Some(bits) = after {
            self.after_present.extend(bits.iter().by_vals());
        }
        Ok(Images {
            reader: self,
            layout,
            has_before: before.is_some(),
            has_after: after.is_some(),
            data: ParseBuf(rows.rows_data()),
        })
    }
}

/// Bit `i` of a binlog bitmap: bit 0 is the lowest bit of the first byte.
fn bit(bytes: &[u8], i: usize) -> bool {
    bytes.get(i / 8).is_some_and(|b| b & (1 << (i % 8)) != 0)
}

impl Images<'_, '_> {
    /// Reads the next row into the reader's `before` and `after` (emptied for an image the
    /// event does not have); `Ok(false)` after the last row.
    pub(crate) fn next_row(&mut self) -> io::Result<bool> {
        let reader = &mut *self.reader;
        reader.before.clear();
        reader.after.clear();
        if self.data.is_empty() {
            return Ok(false);
        }
        if self.has_before {
            read_image(
                self.layout,
                &reader.before_present,
                &mut self.data,
                &mut reader.before,
            )?;
        }
        if self.has_after {
            read_image(
                self.layout,
                &reader.after_present,
                &mut self.data,
                &mut reader.after,
            )?;
        }
        Ok(true)
    }
}

impl Images<'_, '_> {
    /// The before and after image of the row read last, a value per column (`None` where
    /// the image leaves the column out); an image the event does not have is empty.
    pub(crate) fn values(&mut self) -> (&mut [Option<My>], &mut [Option<My>]) {
        (&mut self.reader.before, &mut self.reader.after)
    }
}

/// One image at the start of `data`: its NULL bitmap over the `present` columns, then their
/// values.
fn read_image(
    layout: &Layout,
    present: &[bool],
    data: &mut ParseBuf<'_>,
    out: &mut Vec<Option<My>>,
) -> io::Result<()> {
    let count = present.iter().filter(|p| **p).count();
    let nulls: &[u8] = data
        .checked_eat(count.div_ceil(8))
        .ok_or_else(|| io::Error::new(io::ErrorKind::UnexpectedEof, "a row's NULL bitmap"))?;
    let mut index = 0;
    for (column, present) in layout.columns.iter().zip(present) {
        if !present {
            out.push(None);
            continue;
        }
        let null = bit(nulls, index);
        index += 1;
        if null {
            out.push(Some(My::NULL));
            continue;
        }
        // The decoder wants the metadata to live as long as its input: a copy of the cursor
        // with a shorter life reads the value, then the cursor moves past it.
        let mut value_data = ParseBuf(data.0);
        let ctx = (
            column.column_type,
            column.meta.as_slice(),
            column.unsigned,
            false,
        );
        let value: BinlogValue<'_> = value_data.parse(ctx)?;
        out.push(Some(My::try_from(value).map_err(invalid)?));
        let used = data.0.len() - value_data.0.len();
        data.0 = &data.0[used..];
    }
    Ok(())
}

/// Bytes the value buffer holds free before a row is decoded into it: a fresh chunk is
/// taken when less is left (values longer than that grow it as they are written).
const TEXT_ROOM: usize = 256;

/// The value buffer's chunk: the values of many rows share one allocation.
pub(crate) const TEXT_CHUNK: usize = 16 * 1024;

/// A row image in canonical text; each value is split off `text`, the buffer they share.
pub(crate) fn canonical_row(
    values: &mut [Option<My>],
    kinds: &[Kind],
    schema: &TableSchema,
    text: &mut BytesMut,
) -> Result<Row, SourceError> {
    let mut out = Vec::with_capacity(kinds.len());
    if text.capacity() < TEXT_ROOM {
        text.reserve(TEXT_CHUNK);
    }
    for (i, kind) in kinds.iter().enumerate() {
        let name = &schema.columns[i].name;
        let value = values.get_mut(i).and_then(Option::take).ok_or_else(|| {
            SourceError::message(
                format!("the binlog row of {} lacks column {name}", schema.id),
                ErrorClass::Definite,
            )
            .with_hint("set binlog_row_image=FULL on the source, then re-sync the changefeed")
        })?;
        if value == My::NULL {
            out.push(Value::Null);
            continue;
        }
        write_canonical(value, kind, Origin::Binlog, text)
            .map_err(|b| b.into_error(&schema.id.to_string(), name))?;
        out.push(Value::Text(text.split().freeze()));
    }
    Ok(out)
}

#[cfg(test)]
mod tests;
