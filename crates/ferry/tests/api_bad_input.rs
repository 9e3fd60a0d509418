//! Fault scenario 9, hand-written cases beyond `api_errors.rs`: malformed and deeply nested
//! JSON, 100 MB bodies (with and without a length), unicode and path-traversal ids, huge
//! numbers, wrong content types, and 1,000 concurrent create/delete requests for one id.
//! Every answer is a 4xx with a stable `error_code` or a success, never a 5xx; the server
//! never crashes; and a running changefeed streams on, identical (the oracle).

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::Pair;
use serde_json::json;

const MINUTE: Duration = Duration::from_secs(60);

/// A raw HTTP/1.1 request: `headers` are extra header lines (each ending in `\r\n`).
/// `None` when the server closed the connection before answering (allowed for bodies it
/// refuses before reading them).
fn raw(addr: &str, method: &str, path: &str, headers: &str, body: &[u8]) -> Option<(u16, String)> {
    let mut tcp = TcpStream::connect(addr).unwrap();
    tcp.set_read_timeout(Some(MINUTE)).unwrap();
    let head =
        format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n{headers}\r\n");
    tcp.write_all(head.as_bytes()).ok()?;
    // The server may answer and close before the whole body is sent.
    for chunk in body.chunks(1 << 20) {
        if tcp.write_all(chunk).is_err() {
            break;
        }
    }
    let mut response = Vec::new();
    let _ = tcp.read_to_end(&mut response);
    let text = String::from_utf8_lossy(&response).into_owned();
    let status = text.split_whitespace().nth(1)?.parse().ok()?;
    Some((status, text))
}

fn json_request(
    addr: &str,
    method: &str,
    path: &str,
    content_type: &str,
    body: &[u8],
) -> (u16, String) {
    let headers = format!(
        "Content-Type: {content_type}\r\nContent-Length: {}\r\n",
        body.len()
    );
    raw(addr, method, path, &headers, body).unwrap_or_else(|| panic!("{method} {path}: no answer"))
}

#[track_caller]
fn refused_4xx(what: &str, (status, text): (u16, String)) {
    assert!(
        (400..500).contains(&status),
        "{what}: expected a 4xx, got {status}: {text}"
    );
    assert!(
        text.contains("\"error_code\""),
        "{what}: no error_code: {text}"
    );
}

#[test]
fn bad_input_gets_4xx_and_leaves_a_running_changefeed_alone() {
    let pair = Pair::start();
    let ferry = &pair.ferry;
    pair.source.psql(
        "shop",
        "CREATE TABLE t (id int PRIMARY KEY, v text); INSERT INTO t VALUES (1, 'a');",
    );
    pair.create("cf", &["public.t"]);
    pair.wait_synced("cf", MINUTE);
    let addr = ferry.url().trim_start_matches("http://").to_owned();
    let addr = addr.as_str();
    let json_type = "application/json";
    let body_routes = [
        ("POST", "/api/v2/changefeeds"),
        ("PUT", "/api/v2/changefeeds/cf"),
        ("POST", "/api/v2/sources"),
        ("POST", "/api/v2/verify-table"),
    ];

    // Malformed JSON.
    let nested_arrays = "[".repeat(100_000);
    let nested_objects = "{\"options\":".repeat(10_000) + "1" + &"}".repeat(10_000);
    let malformed: [&[u8]; 9] = [
        b"",
        b"{",
        b"{\"id\": \"x\",}",
        b"{\"id\": \"x\"} trailing",
        b"\xff\xfe{\"id\": 1}",
        b"{\"id\": \"\x00\"}",
        b"\xef\xbb\xbf{\"id\": \"bom\"}",
        nested_arrays.as_bytes(),
        nested_objects.as_bytes(),
    ];
    for (method, route) in body_routes {
        for body in malformed {
            let what = format!(
                "{method} {route} with {:?}",
                String::from_utf8_lossy(&body[..body.len().min(20)])
            );
            refused_4xx(&what, json_request(addr, method, route, json_type, body));
        }
    }

    // 100 MB bodies: with a Content-Length the server refuses before reading; chunked, it
    // stops at the limit. Either way a 413 or a closed connection, never a 5xx or a crash.
    let huge = vec![b' '; 100 << 20];
    for (method, route) in body_routes {
        let headers = format!(
            "Content-Type: {json_type}\r\nContent-Length: {}\r\n",
            huge.len()
        );
        if let Some((status, text)) = raw(addr, method, route, &headers, &huge) {
            assert_eq!(status, 413, "{method} {route} 100 MB: {text}");
        }
        let mut chunked = Vec::with_capacity(huge.len() + 1024);
        for chunk in huge.chunks(1 << 20) {
            chunked.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
            chunked.extend_from_slice(chunk);
            chunked.extend_from_slice(b"\r\n");
        }
        chunked.extend_from_slice(b"0\r\n\r\n");
        let headers = format!("Content-Type: {json_type}\r\nTransfer-Encoding: chunked\r\n");
        if let Some((status, text)) = raw(addr, method, route, &headers, &chunked) {
            assert_eq!(status, 413, "{method} {route} 100 MB chunked: {text}");
        }
        assert_eq!(ferry.get("/api/v2/health").0, 200, "the server survives");
    }

    // Unicode and path-traversal ids, in the path and in bodies.
    let odd_ids = [
        "..",
        "%2e%2e",
        "..%2f..%2fetc%2fpasswd",
        "%2e%2e%2f%2e%2e%2fdata",
        "caf%C3%A9",
        "%F0%9F%9A%80",
        "a%00b",
        "%ff%fe",
        "x%20y",
        "%E2%80%AE",
    ];
    let long_id = "x".repeat(10_000);
    for id in odd_ids.iter().copied().chain([long_id.as_str()]) {
        for (method, suffix) in [
            ("GET", ""),
            ("PUT", ""),
            ("DELETE", ""),
            ("GET", "/status"),
            ("POST", "/pause"),
        ] {
            let path = format!("/api/v2/changefeeds/{id}{suffix}");
            refused_4xx(
                &format!("{method} {path}"),
                json_request(addr, method, &path, json_type, b"{}"),
            );
            let path = format!("/api/v2/sources/{id}{suffix}");
            if suffix != "/pause" {
                let (status, text) = json_request(addr, method, &path, json_type, b"{}");
                assert!(
                    (400..500).contains(&status),
                    "{method} {path}: {status} {text}"
                );
            }
        }
    }
    for id in [
        "..",
        "../../etc/passwd",
        "café",
        "🚀",
        "a\u{0}b",
        "\u{202e}x",
        "",
        " ",
    ] {
        let body =
            json!({"id": id, "source_uri": pair.source.uri("shop"), "sink_uri": "blackhole://"});
        refused_4xx(
            &format!("create {id:?}"),
            json_request(
                addr,
                "POST",
                "/api/v2/changefeeds",
                json_type,
                body.to_string().as_bytes(),
            ),
        );
        let body = json!({"name": id, "uri": pair.source.uri("shop")});
        refused_4xx(
            &format!("source {id:?}"),
            json_request(
                addr,
                "POST",
                "/api/v2/sources",
                json_type,
                body.to_string().as_bytes(),
            ),
        );
    }

    // Huge and odd numbers where counts are expected.
    for number in [
        "1e400",
        "18446744073709551616",
        "-1",
        "1.5",
        "99999999999999999999999999999",
        "-0",
        "NaN",
        "Infinity",
    ] {
        let body = format!("{{\"options\": {{\"batch_max_rows\": {number}}}}}");
        let what = format!("batch_max_rows {number}");
        refused_4xx(
            &what,
            json_request(
                addr,
                "PUT",
                "/api/v2/changefeeds/cf",
                json_type,
                body.as_bytes(),
            ),
        );
    }

    // Wrong content types: the body is read as JSON whatever the header says (clients such
    // as `curl -d` send form types); a body that is not JSON is refused as such, and a JSON
    // body gets the same answer as with `application/json` (409 here: a running changefeed
    // must be paused before an update).
    let put_cf =
        |headers: &str| raw(addr, "PUT", "/api/v2/changefeeds/cf", headers, b"{}").unwrap();
    let baseline = put_cf("Content-Type: application/json\r\nContent-Length: 2\r\n");
    assert_eq!(baseline.0, 409, "{}", baseline.1);
    for content_type in [
        "text/plain",
        "application/xml",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
        "application/json; charset=latin1",
    ] {
        refused_4xx(
            content_type,
            json_request(
                addr,
                "POST",
                "/api/v2/changefeeds",
                content_type,
                b"id=x&sink_uri=blackhole://",
            ),
        );
        let answer = put_cf(&format!(
            "Content-Type: {content_type}\r\nContent-Length: 2\r\n"
        ));
        assert_eq!(answer.0, baseline.0, "{content_type}: {}", answer.1);
    }
    let no_type = put_cf("Content-Length: 2\r\n");
    assert_eq!(no_type.0, baseline.0, "{}", no_type.1);

    // 1,000 concurrent creates and deletes of one id. A create answers with what it created,
    // even when a concurrent delete removes it at once (it used to look again and answer
    // 404 CHANGEFEED_NOT_FOUND for a changefeed it had created: 7 of 500 creates here).
    let create_body = json!({"id": "race", "start": false, "source_uri": pair.source.uri("shop"), "sink_uri": "blackhole://"}).to_string();
    // Each answer as `status error_code` (`status` alone for a success).
    let answer = |(status, text): (u16, String)| match text.split_once("\"error_code\":\"") {
        Some((_, rest)) => format!("{status} {}", rest.split('"').next().unwrap_or_default()),
        None => status.to_string(),
    };
    let answers: Vec<String> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..20)
            .map(|w| {
                let create_body = &create_body;
                let answer = &answer;
                s.spawn(move || {
                    (0..50)
                        .map(|i| {
                            if (w + i) % 2 == 0 {
                                answer(json_request(
                                    addr,
                                    "POST",
                                    "/api/v2/changefeeds",
                                    "application/json",
                                    create_body.as_bytes(),
                                ))
                            } else {
                                answer(json_request(
                                    addr,
                                    "DELETE",
                                    "/api/v2/changefeeds/race",
                                    "application/json",
                                    b"",
                                ))
                            }
                        })
                        .collect::<Vec<String>>()
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().unwrap())
            .collect()
    });
    let mut by_answer = std::collections::BTreeMap::new();
    for answer in &answers {
        *by_answer.entry(answer.as_str()).or_insert(0) += 1;
    }
    let server_errors = answers.iter().filter(|a| a.starts_with('5')).count();
    eprintln!(
        "scenario 9: 1,000 concurrent create/delete of one id: {by_answer:?}; {server_errors} 5xx"
    );
    assert_eq!(answers.len(), 1000);
    assert_eq!(server_errors, 0, "{by_answer:?}\n{}", ferry.log());
    for answer in by_answer.keys() {
        assert!(
            ["200", "201", "409 CHANGEFEED_ALREADY_EXISTS"].contains(answer),
            "{by_answer:?}"
        );
    }
    // Whatever won, the id is in one consistent state, and deleting it works.
    let (status, _) = ferry.get("/api/v2/changefeeds/race");
    if status == 200 {
        assert_eq!(ferry.delete("/api/v2/changefeeds/race").0, 200);
    }
    assert_eq!(ferry.get("/api/v2/changefeeds/race").0, 404);

    // The running changefeed streamed on.
    assert_eq!(
        pair.status("cf")["state"],
        json!("running"),
        "{}",
        pair.status("cf")
    );
    pair.source.psql(
        "shop",
        "INSERT INTO t SELECT g, 'after' FROM generate_series(2, 100) g",
    );
    pair.wait_synced("cf", MINUTE);
    let report = pair.compare(&["t"]);
    eprintln!("scenario 9: the running changefeed afterwards:\n{report}");
    report.assert_identical();
}
