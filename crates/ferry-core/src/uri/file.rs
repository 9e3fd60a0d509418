//! `file:///DIR?format=debezium-json[&max_file_bytes=N][&max_file_seconds=S][&compress=gzip]`:
//! a directory of JSON-lines event files. Parsing only; the sink that writes them lives in `ferry-connectors`.

use std::fmt;
use std::path::{Path, PathBuf};

use url::Url;

use super::events::EventOptions;
use super::UriError;

/// Why 64 MiB: large enough that a busy changefeed makes few files, small enough that a
/// consumer can ship or load one file at a time.
pub const DEFAULT_MAX_FILE_BYTES: u64 = 64 * 1024 * 1024;

/// The event formats a file sink writes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum FileFormat {
    /// Debezium's JSON envelope without schemas, one event per line.
    #[default]
    DebeziumJson,
}

impl FileFormat {
    /// The name in the URI's `format=` parameter.
    pub fn as_str(self) -> &'static str {
        match self {
            FileFormat::DebeziumJson => "debezium-json",
        }
    }
}

/// A parsed `file://` sink URI.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileSinkUri {
    dir: PathBuf,
    format: FileFormat,
    max_file_bytes: u64,
    max_file_seconds: Option<u64>,
    gzip: bool,
    options: EventOptions,
}

impl FileSinkUri {
    /// The directory the event files go into (absolute).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The format of the events.
    pub fn format(&self) -> FileFormat {
        self.format
    }

    /// A file is closed once it is this old and holds an event (checked at each write and
    /// commit), `None`: by size only.
    pub fn max_file_seconds(&self) -> Option<u64> {
        self.max_file_seconds
    }

    /// Whether closed files are gzipped (`compress=gzip`).
    pub fn gzip(&self) -> bool {
        self.gzip
    }

    /// The event options (`transactions=`).
    pub fn options(&self) -> EventOptions {
        self.options
    }

    /// A file is closed, and the next begun, once it holds this many bytes.
    pub fn max_file_bytes(&self) -> u64 {
        self.max_file_bytes
    }

    /// Parses a URI whose scheme is `file`; refuses hosts, relative paths and unknown
    /// parameters (a typo must not silently fall back to a default).
    pub(super) fn parse(url: &Url) -> Result<Self, UriError> {
        if url
            .host_str()
            .is_some_and(|h| !h.is_empty() && h != "localhost")
        {
            return Err(UriError::InvalidParameter {
                reason: "a file:// sink writes a local directory: use file:///absolute/dir".into(),
            });
        }
        let dir = url.to_file_path().map_err(|()| UriError::Missing {
            part: "an absolute directory path (file:///absolute/dir)",
        })?;
        if dir == Path::new("/") {
            return Err(UriError::Missing {
                part: "a directory below / (file:///absolute/dir)",
            });
        }
        let mut format = None;
        let mut max_file_bytes = DEFAULT_MAX_FILE_BYTES;
        let mut options = EventOptions::default();
        let (mut max_file_seconds, mut gzip) = (None, false);
        for (key, value) in url.query_pairs() {
            if options.take(&key, &value, false)? {
                continue;
            }
            match key.as_ref() {
                "max_file_seconds" => {
                    max_file_seconds =
                        Some(value.parse().ok().filter(|&n| n > 0).ok_or_else(|| {
                            UriError::InvalidParameter {
                                reason: format!(
                                    "max_file_seconds={value}: expected a positive integer"
                                ),
                            }
                        })?)
                }
                "compress" => {
                    gzip = match value.as_ref() {
                        "gzip" => true,
                        "none" => false,
                        other => {
                            return Err(UriError::InvalidParameter {
                                reason: format!("compress={other}: expected gzip or none"),
                            })
                        }
                    }
                }
                "format" => match value.as_ref() {
                    "debezium-json" => format = Some(FileFormat::DebeziumJson),
                    other => {
                        return Err(UriError::InvalidParameter {
                            reason: format!("format={other}: expected debezium-json"),
                        })
                    }
                },
                "max_file_bytes" => {
                    max_file_bytes = value.parse().ok().filter(|&n| n > 0).ok_or_else(|| {
                        UriError::InvalidParameter {
                            reason: format!("max_file_bytes={value}: expected a positive integer"),
                        }
                    })?
                }
                other => {
                    return Err(UriError::InvalidParameter {
                        reason: format!(
                            "unknown file sink parameter {other:?} (known: format, max_file_bytes, \
                             max_file_seconds, compress, transactions, schemas)"
                        ),
                    })
                }
            }
        }
        Ok(FileSinkUri {
            dir,
            format: format.unwrap_or_default(),
            max_file_bytes,
            max_file_seconds,
            gzip,
            options,
        })
    }
}

/// The canonical form: every parameter spelled out, so what is stored is what runs.
impl fmt::Display for FileSinkUri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let url = Url::from_directory_path(&self.dir)
            .or_else(|()| Url::from_file_path(&self.dir))
            .map_err(|()| fmt::Error)?;
        let path = url.as_str().trim_end_matches('/');
        write!(
            f,
            "{path}?format={}&max_file_bytes={}{}{}{}",
            self.format.as_str(),
            self.max_file_bytes,
            self.max_file_seconds
                .map(|s| format!("&max_file_seconds={s}"))
                .unwrap_or_default(),
            if self.gzip { "&compress=gzip" } else { "" },
            self.options.query_suffix()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::SinkUri;

    fn file(s: &str) -> Result<FileSinkUri, UriError> {
        match s.parse::<SinkUri>()? {
            SinkUri::File(f) => Ok(f),
            other => panic!("not a file sink: {other:?}"),
        }
    }

    #[test]
    fn parses_directory_and_options() {
        let f = file("file:///var/lib/ferry%20events?format=debezium-json&max_file_bytes=1000")
            .unwrap();
        assert_eq!(f.dir(), Path::new("/var/lib/ferry events"));
        assert_eq!(f.max_file_bytes(), 1000);
        assert_eq!(
            f.to_string(),
            "file:///var/lib/ferry%20events?format=debezium-json&max_file_bytes=1000"
        );
        let d = file("file:///tmp/x/").unwrap();
        assert_eq!(d.max_file_bytes(), DEFAULT_MAX_FILE_BYTES);
        assert_eq!(d.format(), FileFormat::DebeziumJson);
        // The canonical form reads back as itself.
        assert_eq!(file(&d.to_string()).unwrap(), d);
        let g = file("file:///tmp/x?compress=gzip&max_file_seconds=60").unwrap();
        assert!(g.gzip());
        assert_eq!(g.max_file_seconds(), Some(60));
        assert_eq!(file(&g.to_string()).unwrap(), g);
        assert!(g.to_string().contains("&max_file_seconds=60&compress=gzip"));
    }

    #[test]
    fn refuses_what_it_cannot_honour() {
        for bad in [
            "file:///tmp/x?format=avro",
            "file:///tmp/x?max_file_bytes=0",
            "file:///tmp/x?max_file_bytes=lots",
            "file:///tmp/x?rotate=1",
            "file:///tmp/x?compress=zstd",
            "file:///tmp/x?max_file_seconds=0",
            "file://otherhost/tmp/x",
            "file:///",
        ] {
            assert!(file(bad).is_err(), "{bad}");
        }
    }
}
