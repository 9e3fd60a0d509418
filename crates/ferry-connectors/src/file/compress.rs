//! Gzip of closed event files (`compress=gzip`): `N.jsonl` becomes `N.jsonl.gz`, so names
//! still sort in event order.
//!
//! ```text
//! N.jsonl ──► N.jsonl.gz.tmp (fsynced) ──► rename to N.jsonl.gz (dir fsynced) ──► N.jsonl removed
//! ```
//! Only files wholly before the durable mark are compressed (a rollback never reaches
//! them), one at a time, on a thread of its own so writing goes on. A crash leaves at most
//! a `.tmp` (removed when the directory opens) or both forms of one file (the plain one
//! removed then): a consumer always finds every event exactly once under a final name.

use std::fs::{self, File};
use std::io::{self, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use flate2::write::GzEncoder;
use flate2::Compression;

/// The suffix of a compressed file.
pub(super) const GZ: &str = ".gz";
const TMP: &str = ".tmp";

/// Finishes what a crash interrupted: removes `.tmp` files, and the plain form of a file
/// whose compressed form is complete.
pub(super) fn recover(dir: &Path) -> io::Result<()> {
    for entry in fs::read_dir(dir)? {
        let name = entry?.file_name();
        let Some(name) = name.to_str() else { continue };
        if name.ends_with(TMP) {
            fs::remove_file(dir.join(name))?;
        } else if let Some(plain) = name.strip_suffix(GZ) {
            match fs::remove_file(dir.join(plain)) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
        }
    }
    Ok(())
}

/// Compresses closed files in the background, one run at a time.
#[derive(Debug, Default)]
pub(super) struct Compressor {
    running: Arc<AtomicBool>,
}

impl Compressor {
    /// Compresses `files` (plain, closed, durable) on a thread, unless a run is going on
    /// (the next call picks up what this one skipped).
    pub(super) fn start(&self, dir: PathBuf, files: Vec<String>) {
        if files.is_empty() || self.running.swap(true, Ordering::AcqRel) {
            return;
        }
        let running = self.running.clone();
        std::thread::spawn(move || {
            for name in files {
                if let Err(e) = compress(&dir, &name) {
                    tracing::warn!(file = %name, error = %e, "could not gzip a closed event file; it stays plain");
                    break;
                }
            }
            running.store(false, Ordering::Release);
        });
    }

    /// Waits for a running compression to end (tests).
    #[cfg(test)]
    pub(super) fn wait(&self) {
        while self.running.load(Ordering::Acquire) {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    }
}

fn compress(dir: &Path, name: &str) -> io::Result<()> {
    let plain = dir.join(name);
    let gz = dir.join(format!("{name}{GZ}"));
    let tmp = dir.join(format!("{name}{GZ}{TMP}"));
    let mut input = BufReader::new(File::open(&plain)?);
    let mut encoder = GzEncoder::new(BufWriter::new(File::create(&tmp)?), Compression::fast());
    io::copy(&mut input, &mut encoder)?;
    let mut out = encoder.finish()?;
    out.flush()?;
    out.get_ref().sync_all()?;
    fs::rename(&tmp, &gz)?;
    File::open(dir)?.sync_all()?;
    fs::remove_file(&plain)?;
    File::open(dir)?.sync_all()
}
