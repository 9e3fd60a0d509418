//! One directory of event files: numbered JSON-lines files appended in order, a manifest
//! of the snapshot chunks they hold, and an owner mark.
//!
//! # Layout
//! ```text
//! DIR/00000000000000000000.jsonl   closed (fsynced when the next one began)
//! DIR/00000000000000000001.jsonl.gz  closed and compressed (`compress=gzip`, [`super::compress`])
//! DIR/00000000000000000002.jsonl   being written, under its final name
//! DIR/.ferry-chunks.jsonl          snapshot chunks whose events are durable
//! DIR/.ferry-owner                 the changefeed that writes DIR
//! ```
//! Names sort bytewise in event order (20 digits hold any `u64`). Opening cuts a torn last
//! line (a crash mid-write) off the newest file before anything is appended to it. A file
//! is closed once it holds [`Rotation::max_bytes`], or is [`Rotation::max_age`] old and not
//! empty at a write or a sync.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use ferry_core::FinishedChunk;

use super::compress::{self, Compressor};
use crate::event_sink::{marker_json, parse_marker};

/// When a file is closed and the next begun, and what becomes of closed files.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Rotation {
    /// Close a file once it holds this many bytes.
    pub(crate) max_bytes: u64,
    /// Close a non-empty file once it is this old.
    pub(crate) max_age: Option<Duration>,
    /// Gzip closed files.
    pub(crate) gzip: bool,
}

impl Rotation {
    /// By size only, no compression.
    #[cfg(test)]
    pub(crate) fn bytes(max_bytes: u64) -> Self {
        Rotation {
            max_bytes,
            max_age: None,
            gzip: false,
        }
    }
}

const CHUNKS_FILE: &str = ".ferry-chunks.jsonl";
const OWNER_FILE: &str = ".ferry-owner";
const EXTENSION: &str = ".jsonl";
const DIGITS: usize = 20;

/// A place in the files: where a batch began, to take it back. Ordered by file, then
/// offset.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Mark {
    seq: u64,
    len: u64,
}

/// The open directory. One per directory per process, shared by a changefeed's sinks.
#[derive(Debug)]
pub(crate) struct EventDir {
    dir: PathBuf,
    rotation: Rotation,
    /// When the current file was begun (or opened).
    begun: Instant,
    compressor: Compressor,
    seq: u64,
    file: BufWriter<File>,
    /// Bytes in the current file, buffered ones included.
    len: u64,
    /// A file was created since the directory was last fsynced.
    dir_dirty: bool,
    /// Everything before it is fsynced and may be a recorded chunk's: never taken back.
    durable: Mark,
    /// Closed files below this sequence number were handed to the compressor.
    compressed_below: u64,
}

/// The file name of sequence number `seq`.
pub(crate) fn file_name(seq: u64) -> String {
    format!("{seq:0DIGITS$}{EXTENSION}")
}

fn parse_file_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(EXTENSION)?;
    (digits.len() == DIGITS && digits.bytes().all(|c| c.is_ascii_digit()))
        .then(|| digits.parse().ok())
        .flatten()
}

impl EventDir {
    /// Opens (creating) `dir` for changefeed `feed`: refuses a directory another changefeed
    /// writes; cuts a torn last line.
    pub(crate) fn open(dir: &Path, rotation: Rotation, feed: &str) -> Result<Self, OpenError> {
        fs::create_dir_all(dir)?;
        let owner_path = dir.join(OWNER_FILE);
        match fs::read_to_string(&owner_path) {
            Ok(owner) if owner.trim() == feed => {}
            Ok(owner) => return Err(OpenError::Owned(owner.trim().to_string())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                write_durably(&owner_path, feed.as_bytes())?;
                sync_dir(dir)?;
            }
            Err(e) => return Err(e.into()),
        }
        compress::recover(dir)?;
        let newest = fs::read_dir(dir)?
            .filter_map(|e| {
                let name = e.ok()?.file_name().into_string().ok()?;
                let compressed = name.ends_with(compress::GZ);
                parse_file_name(name.trim_end_matches(compress::GZ)).map(|seq| (seq, compressed))
            })
            .max();
        let (seq, created) = match newest {
            Some((seq, false)) => (seq, false),
            // Only compressed files (the plain newest one removed by hand): a new one.
            Some((seq, true)) => (seq + 1, true),
            None => (0, true),
        };
        let path = dir.join(file_name(seq));
        let mut file = OpenOptions::new()
            .create(true)
            .read(true)
            .write(true)
            .truncate(false)
            .open(&path)?;
        let len = complete_length(&mut file)?;
        if len != file.metadata()?.len() {
            tracing::warn!(file = %path.display(), kept = len, "cut a torn last line");
            file.set_len(len)?;
            file.sync_data()?;
        }
        file.seek(SeekFrom::Start(len))?;
        if created {
            sync_dir(dir)?;
        }
        let opened = EventDir {
            dir: dir.to_path_buf(),
            rotation,
            begun: Instant::now(),
            compressor: Compressor::default(),
            seq,
            file: BufWriter::with_capacity(256 * 1024, file),
            len,
            dir_dirty: false,
            durable: Mark { seq, len },
            compressed_below: seq,
        };
        opened.compress_closed();
        Ok(opened)
    }

    /// Whether the current file is due to close.
    fn full(&self) -> bool {
        self.len >= self.rotation.max_bytes
            || self.len > 0
                && self
                    .rotation
                    .max_age
                    .is_some_and(|age| self.begun.elapsed() >= age)
    }

    /// With `compress=gzip`, gzips the closed files before the durable mark still plain.
    fn compress_closed(&self) {
        if !self.rotation.gzip {
            return;
        }
        let mut plain: Vec<String> = fs::read_dir(&self.dir)
            .map(|entries| {
                entries
                    .filter_map(|e| e.ok()?.file_name().into_string().ok())
                    .filter(|n| n.ends_with(EXTENSION))
                    .filter(|n| parse_file_name(n).is_some_and(|seq| seq < self.durable.seq))
                    .collect()
            })
            .unwrap_or_default();
        plain.sort();
        self.compressor.start(self.dir.clone(), plain);
    }

    /// Appends one event line (`line` has no newline), beginning the next file first when
    /// the current one is full.
    pub(crate) fn append(&mut self, line: &[u8]) -> io::Result<()> {
        if self.full() {
            self.rotate()?;
        }
        self.file.write_all(line)?;
        self.file.write_all(b"\n")?;
        self.len += line.len() as u64 + 1;
        Ok(())
    }

    /// Where the next line goes.
    pub(crate) fn mark(&self) -> Mark {
        Mark {
            seq: self.seq,
            len: self.len,
        }
    }

    /// Makes everything appended durable: data, then the directory entries of new files.
    pub(crate) fn sync(&mut self) -> io::Result<()> {
        self.file.flush()?;
        self.file.get_ref().sync_data()?;
        if self.dir_dirty {
            sync_dir(&self.dir)?;
            self.dir_dirty = false;
        }
        self.durable = self.mark();
        if self.rotation.max_age.is_some() && self.full() {
            // Closed by age: what it holds is durable, the new file empty.
            self.rotate()?;
            self.durable = self.mark();
        }
        if self.durable.seq > self.compressed_below {
            self.compressed_below = self.durable.seq;
            self.compress_closed();
        }
        Ok(())
    }

    /// Takes back everything appended since `mark` and not fsynced since: files begun
    /// after it go, its file is cut to where it was. What a sync made durable after `mark`
    /// stays (a snapshot chunk of another worker may have recorded it meanwhile); the
    /// batch's own events before it come again with the same ids.
    pub(crate) fn rollback(&mut self, mark: Mark) -> io::Result<()> {
        let mark = mark.max(self.durable);
        // Whatever is buffered is discarded with the file's tail below.
        let _ = self.file.flush();
        for seq in mark.seq + 1..=self.seq {
            match fs::remove_file(self.dir.join(file_name(seq))) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
        }
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(self.dir.join(file_name(mark.seq)))?;
        file.set_len(mark.len)?;
        file.seek(SeekFrom::Start(mark.len))?;
        file.sync_data()?;
        sync_dir(&self.dir)?;
        self.file = BufWriter::with_capacity(256 * 1024, file);
        self.seq = mark.seq;
        self.len = mark.len;
        self.dir_dirty = false;
        self.durable = mark;
        Ok(())
    }

    fn rotate(&mut self) -> io::Result<()> {
        self.file.flush()?;
        self.file.get_ref().sync_data()?;
        let next = self.seq + 1;
        let file = OpenOptions::new()
            .create_new(true)
            .write(true)
            .open(self.dir.join(file_name(next)))?;
        self.file = BufWriter::with_capacity(256 * 1024, file);
        self.seq = next;
        self.len = 0;
        self.begun = Instant::now();
        self.dir_dirty = true;
        Ok(())
    }

    /// Records a snapshot chunk whose events are durable (call after [`EventDir::sync`]).
    pub(crate) fn record_chunk(&mut self, chunk: &FinishedChunk) -> io::Result<()> {
        let line = marker_json(chunk);
        let mut file = OpenOptions::new()
            .create(true)
            .read(true)
            .write(true)
            .truncate(false)
            .open(self.dir.join(CHUNKS_FILE))?;
        // A record torn by a crash goes before the next one is written.
        let len = complete_length(&mut file)?;
        file.set_len(len)?;
        file.seek(SeekFrom::Start(len))?;
        file.write_all(format!("{line}\n").as_bytes())?;
        file.sync_data()?;
        sync_dir(&self.dir)
    }

    /// The chunks recorded; a torn last line (a crash mid-record) is a chunk not finished.
    pub(crate) fn finished_chunks(&self) -> io::Result<Vec<FinishedChunk>> {
        let text = match fs::read_to_string(self.dir.join(CHUNKS_FILE)) {
            Ok(text) => text,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        let read = |line: &str| parse_marker(line.as_bytes());
        let lines: Vec<&str> = text.split_terminator('\n').collect();
        let complete = if text.ends_with('\n') {
            lines.len()
        } else {
            lines.len().saturating_sub(1)
        };
        lines[..complete]
            .iter()
            .map(|line| {
                read(line).ok_or_else(|| {
                    io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("unreadable line in {CHUNKS_FILE}"),
                    )
                })
            })
            .collect()
    }

    /// Forgets every chunk (a new first snapshot begins).
    pub(crate) fn clear_chunks(&mut self) -> io::Result<()> {
        match fs::remove_file(self.dir.join(CHUNKS_FILE)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => sync_dir(&self.dir),
        }
    }
}

/// Gives up `feed`'s claim on `dir` (the files stay: they are the user's).
pub(crate) fn release(dir: &Path, feed: &str) -> io::Result<()> {
    let owner_path = dir.join(OWNER_FILE);
    match fs::read_to_string(&owner_path) {
        Ok(owner) if owner.trim() == feed => {
            fs::remove_file(&owner_path)?;
            sync_dir(dir)
        }
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// Why a directory cannot be written.
#[derive(Debug, thiserror::Error)]
pub(crate) enum OpenError {
    #[error("the directory is written by changefeed {0}")]
    Owned(String),
    #[error("cannot open the directory")]
    Io(#[from] io::Error),
}

/// The length of the file's complete lines: up to and including its last newline.
fn complete_length(file: &mut File) -> io::Result<u64> {
    const BLOCK: u64 = 64 * 1024;
    let mut end = file.metadata()?.len();
    let mut buf = vec![0u8; BLOCK as usize];
    while end > 0 {
        let start = end.saturating_sub(BLOCK);
        let block = &mut buf[..(end - start) as usize];
        file.seek(SeekFrom::Start(start))?;
        file.read_exact(block)?;
        if let Some(at) = block.iter().rposition(|&c| c == b'\n') {
            return Ok(start + at as u64 + 1);
        }
        end = start;
    }
    Ok(0)
}

fn write_durably(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut file = File::create(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(dir: &Path) -> Vec<(String, String)> {
        let mut names: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| parse_file_name(n).is_some())
            .collect();
        names.sort();
        names
            .into_iter()
            .flat_map(|n| {
                let text = fs::read_to_string(dir.join(&n)).unwrap();
                text.lines()
                    .map(|l| (n.clone(), l.to_string()))
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    #[test]
    fn rotates_by_size_in_name_order() {
        let tmp = tempfile::tempdir().unwrap();
        let mut dir = EventDir::open(tmp.path(), Rotation::bytes(5), "f").unwrap();
        for i in 0..5 {
            dir.append(format!("event-{i}").as_bytes()).unwrap();
        }
        dir.sync().unwrap();
        let got = lines(tmp.path());
        assert_eq!(got.len(), 5);
        assert_eq!(got[0].0, "00000000000000000000.jsonl");
        assert_eq!(got[4].0, "00000000000000000004.jsonl");
        assert!(got
            .iter()
            .enumerate()
            .all(|(i, (_, l))| *l == format!("event-{i}")));
    }

    #[test]
    fn a_torn_line_is_cut_and_rollback_takes_a_batch_back() {
        let tmp = tempfile::tempdir().unwrap();
        {
            let mut dir = EventDir::open(tmp.path(), Rotation::bytes(1 << 20), "f").unwrap();
            dir.append(b"one").unwrap();
            dir.sync().unwrap();
        }
        let path = tmp.path().join(file_name(0));
        OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap()
            .write_all(b"{\"to")
            .unwrap();
        let mut dir = EventDir::open(tmp.path(), Rotation::bytes(8), "f").unwrap();
        assert_eq!(fs::read_to_string(&path).unwrap(), "one\n");
        let mark = dir.mark();
        for _ in 0..3 {
            dir.append(b"doomed").unwrap();
        }
        dir.rollback(mark).unwrap();
        dir.append(b"two").unwrap();
        dir.sync().unwrap();
        let got: Vec<String> = lines(tmp.path()).into_iter().map(|(_, l)| l).collect();
        assert_eq!(got, ["one", "two"]);
    }

    #[test]
    fn rollback_keeps_what_another_writer_synced_after_the_mark() {
        let tmp = tempfile::tempdir().unwrap();
        let mut dir = EventDir::open(tmp.path(), Rotation::bytes(1 << 20), "f").unwrap();
        let batch = dir.mark();
        dir.append(b"batch").unwrap();
        // A snapshot worker's chunk, made durable (and recorded) while the batch is open.
        dir.append(b"chunk").unwrap();
        dir.sync().unwrap();
        dir.append(b"doomed").unwrap();
        dir.rollback(batch).unwrap();
        let got: Vec<String> = lines(tmp.path()).into_iter().map(|(_, l)| l).collect();
        assert_eq!(got, ["batch", "chunk"]);
    }

    #[test]
    fn another_changefeed_is_refused_until_released() {
        let tmp = tempfile::tempdir().unwrap();
        drop(EventDir::open(tmp.path(), Rotation::bytes(100), "ns/a").unwrap());
        assert!(matches!(
            EventDir::open(tmp.path(), Rotation::bytes(100), "ns/b"),
            Err(OpenError::Owned(o)) if o == "ns/a"
        ));
        release(tmp.path(), "ns/a").unwrap();
        EventDir::open(tmp.path(), Rotation::bytes(100), "ns/b").unwrap();
    }

    #[test]
    fn chunks_survive_reopening_and_clear() {
        let tmp = tempfile::tempdir().unwrap();
        let mut dir = EventDir::open(tmp.path(), Rotation::bytes(100), "f").unwrap();
        let chunk = FinishedChunk {
            table: ferry_core::TableId::new("public", "t"),
            chunk: 2,
            rows: 7,
            snapshot: ferry_core::Position::PgLsn(ferry_core::Lsn(0x1_0000_0010)),
        };
        dir.record_chunk(&chunk).unwrap();
        // A torn record is a chunk not finished.
        OpenOptions::new()
            .append(true)
            .open(tmp.path().join(CHUNKS_FILE))
            .unwrap()
            .write_all(b"{\"sch")
            .unwrap();
        assert_eq!(dir.finished_chunks().unwrap(), vec![chunk.clone()]);
        dir.record_chunk(&chunk).unwrap();
        assert_eq!(dir.finished_chunks().unwrap().len(), 2);
        dir.clear_chunks().unwrap();
        assert!(dir.finished_chunks().unwrap().is_empty());
    }
}

#[cfg(test)]
mod rotation_tests {
    use std::io::Read;

    use super::*;

    #[test]
    fn old_files_close_at_a_sync_and_closed_files_are_gzipped() {
        let tmp = tempfile::tempdir().unwrap();
        let rotation = Rotation {
            max_bytes: 1 << 20,
            max_age: Some(Duration::from_millis(50)),
            gzip: true,
        };
        let mut dir = EventDir::open(tmp.path(), rotation, "f").unwrap();
        dir.append(b"one").unwrap();
        dir.sync().unwrap();
        std::thread::sleep(Duration::from_millis(80));
        dir.append(b"two").unwrap();
        dir.sync().unwrap();
        std::thread::sleep(Duration::from_millis(80));
        dir.sync().unwrap();
        dir.compressor.wait();
        let mut names: Vec<String> = fs::read_dir(tmp.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| !n.starts_with('.'))
            .collect();
        names.sort();
        assert_eq!(
            names,
            [
                format!("{}.gz", file_name(0)),
                format!("{}.gz", file_name(1)),
                file_name(2)
            ]
        );
        let mut text = String::new();
        flate2::read::GzDecoder::new(File::open(tmp.path().join(&names[1])).unwrap())
            .read_to_string(&mut text)
            .unwrap();
        assert_eq!(text, "two\n");
        // Reopened, it goes on in the plain file; a half-written .tmp is gone.
        drop(dir);
        fs::write(tmp.path().join(format!("{}.gz.tmp", file_name(2))), b"x").unwrap();
        let mut dir = EventDir::open(tmp.path(), rotation, "f").unwrap();
        assert_eq!(dir.mark().seq, 2);
        dir.append(b"three").unwrap();
        dir.sync().unwrap();
        assert!(!tmp.path().join(format!("{}.gz.tmp", file_name(2))).exists());
    }
}
