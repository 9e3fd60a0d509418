//! `nats://host:port?stream=NAME&subject_prefix=PFX`: a NATS JetStream stream that events
//! are published into, one subject per table. Parsing only; the sink lives in
//! `ferry-connectors`.

use std::fmt;

use url::Url;

use super::events::EventOptions;
use super::UriError;

/// NATS's default client port.
pub const DEFAULT_PORT: u16 = 4222;

/// A parsed `nats://` sink URI.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NatsSinkUri {
    host: String,
    port: u16,
    stream: String,
    subject_prefix: String,
    options: EventOptions,
}

impl NatsSinkUri {
    /// The server's `host:port`.
    pub fn server(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    /// The JetStream stream the events go into.
    pub fn stream(&self) -> &str {
        &self.stream
    }

    /// The first tokens of every event's subject: `<prefix>.<schema>.<table>`.
    pub fn subject_prefix(&self) -> &str {
        &self.subject_prefix
    }

    /// The event options (`transactions=`).
    pub fn options(&self) -> EventOptions {
        self.options
    }

    /// Parses a URI whose scheme is `nats`. Refuses credentials (not supported yet: they
    /// would have to be masked and kept across updates) and unknown parameters.
    pub(super) fn parse(url: &Url) -> Result<Self, UriError> {
        let host = url
            .host_str()
            .filter(|h| !h.is_empty())
            .ok_or(UriError::Missing {
                part: "a host (nats://host:4222?stream=NAME&subject_prefix=PFX)",
            })?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        if !url.username().is_empty() || url.password().is_some() {
            return Err(UriError::InvalidParameter {
                reason: "nats:// sinks take no credentials yet: use a server that allows \
                         this client without them"
                    .into(),
            });
        }
        if !matches!(url.path(), "" | "/") {
            return Err(UriError::InvalidParameter {
                reason: "a nats:// sink has no path: name the stream with ?stream=NAME".into(),
            });
        }
        let (mut stream, mut subject_prefix) = (None, None);
        let mut options = EventOptions::default();
        for (key, value) in url.query_pairs() {
            if options.take(&key, &value, false)? {
                continue;
            }
            match key.as_ref() {
                "stream" => stream = Some(check_stream(&value)?),
                "subject_prefix" => subject_prefix = Some(check_prefix(&value)?),
                other => {
                    return Err(UriError::InvalidParameter {
                        reason: format!(
                            "unknown nats sink parameter {other:?} (known: stream, subject_prefix, \
                             transactions, schemas)"
                        ),
                    })
                }
            }
        }
        Ok(NatsSinkUri {
            host,
            port: url.port().unwrap_or(DEFAULT_PORT),
            stream: stream.ok_or(UriError::Missing {
                part: "the stream (?stream=NAME)",
            })?,
            subject_prefix: subject_prefix.ok_or(UriError::Missing {
                part: "the subject prefix (&subject_prefix=PFX)",
            })?,
            options,
        })
    }
}

/// JetStream stream names: no whitespace, `.`, `*`, `>`, path separators.
fn check_stream(name: &str) -> Result<String, UriError> {
    let bad = |c: char| c.is_whitespace() || c.is_control() || ".*>/\\".contains(c);
    if name.is_empty() || name.contains(bad) {
        return Err(UriError::InvalidParameter {
            reason: format!("stream={name}: a stream name without whitespace, '.', '*', '>', '/'"),
        });
    }
    Ok(name.to_string())
}

/// Subject tokens, literal: `*` and `>` would make every table's subject a wildcard.
fn check_prefix(prefix: &str) -> Result<String, UriError> {
    let bad_token = |t: &str| {
        t.is_empty()
            || t.contains(|c: char| c.is_whitespace() || c.is_control() || c == '*' || c == '>')
    };
    if prefix.split('.').any(bad_token) {
        return Err(UriError::InvalidParameter {
            reason: format!(
                "subject_prefix={prefix}: literal subject tokens separated by '.' (no wildcards)"
            ),
        });
    }
    Ok(prefix.to_string())
}

/// The canonical form: every parameter spelled out, so what is stored is what runs.
impl fmt::Display for NatsSinkUri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let query: String = url::form_urlencoded::Serializer::new(String::new())
            .append_pair("stream", &self.stream)
            .append_pair("subject_prefix", &self.subject_prefix)
            .finish();
        write!(
            f,
            "nats://{}?{query}{}",
            self.server(),
            self.options.query_suffix()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::SinkUri;

    fn nats(s: &str) -> Result<NatsSinkUri, UriError> {
        match s.parse::<SinkUri>()? {
            SinkUri::Nats(n) => Ok(n),
            other => panic!("not a nats sink: {other:?}"),
        }
    }

    #[test]
    fn parses_server_stream_and_prefix() {
        let n = nats("nats://127.0.0.1:4333?stream=CDC&subject_prefix=ferry.shop").unwrap();
        assert_eq!(n.server(), "127.0.0.1:4333");
        assert_eq!(n.stream(), "CDC");
        assert_eq!(n.subject_prefix(), "ferry.shop");
        assert_eq!(
            n.to_string(),
            "nats://127.0.0.1:4333?stream=CDC&subject_prefix=ferry.shop"
        );
        let d = nats("nats://broker/?subject_prefix=p&stream=S").unwrap();
        assert_eq!(d.server(), "broker:4222");
        assert_eq!(nats(&d.to_string()).unwrap(), d);
    }

    #[test]
    fn refuses_what_it_cannot_honour() {
        for bad in [
            "nats://h:4222?subject_prefix=p",
            "nats://h:4222?stream=S",
            "nats://h:4222?stream=a.b&subject_prefix=p",
            "nats://h:4222?stream=S&subject_prefix=p.*",
            "nats://h:4222?stream=S&subject_prefix=p..q",
            "nats://h:4222?stream=S&subject_prefix=p&acks=all",
            "nats://u:pw@h:4222?stream=S&subject_prefix=p",
            "nats://h:4222/S?stream=S&subject_prefix=p",
        ] {
            assert!(nats(bad).is_err(), "{bad}");
        }
    }
}
