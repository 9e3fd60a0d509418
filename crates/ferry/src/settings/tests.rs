//! Unit tests of the settings layers and their validation.

use super::*;

fn write(name: &str, text: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(name);
    std::fs::write(&path, text).unwrap();
    (dir, path)
}

fn env(vars: &[(&str, &str)]) -> Vec<(String, String)> {
    vars.iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn defaults_are_the_engines() {
    let settings = Settings::load(None, env(&[]), &[]).unwrap();
    assert_eq!(settings.engine_options(), EngineOptions::default());
    assert_eq!(settings.addr.to_string(), DEFAULT_ADDR);
    let key = settings.secret_key_path().unwrap();
    assert_eq!(key, std::path::absolute("ferry-data.secret-key").unwrap());
    let set = Settings::load(None, env(&[("FERRY_SECRET_KEY_FILE", "/k")]), &[]).unwrap();
    assert_eq!(set.secret_key_path().unwrap(), PathBuf::from("/k"));
    let err = Settings::load(None, env(&[("FERRY_DATA_DIR", "/")]), &[]).unwrap_err();
    assert!(
        err.to_string().starts_with("secret_key_file must be set"),
        "{err}"
    );
}

#[test]
fn file_then_env_then_flags() {
    let (_dir, path) = write(
        "ferry.toml",
        "addr = \"127.0.0.1:9000\"\nmax_changefeeds = 7\nmax_name_length = 40\n\
         [log]\nformat = \"json\"\n[retry]\ninitial_backoff = \"2s\"\nmax_backoff = \"1m\"\n",
    );
    let settings = Settings::load(
        Some(&path),
        env(&[
            ("FERRY_MAX_CHANGEFEEDS", "8"),
            ("FERRY_RETRY_GIVE_UP_AFTER", "2h"),
            ("FERRY_MAX_NAME_LENGTH", "50"),
            ("FERRY_UNRELATED", "x"),
            ("FERRY_REPLICATION_TIMEOUT", "5s"),
        ]),
        &[("max_name_length", "60".into())],
    )
    .unwrap();
    assert_eq!(settings.addr.port(), 9000, "file over default");
    assert_eq!(settings.max_changefeeds, 8, "env over file");
    assert_eq!(settings.max_name_length, 60, "flag over env");
    assert_eq!(settings.log.format, LogFormat::Json);
    assert_eq!(settings.retry.initial_backoff, Duration::from_secs(2));
    assert_eq!(settings.retry.give_up_after, Duration::from_secs(7200));
    assert_eq!(
        settings.engine_options().replication_timeout,
        Duration::from_secs(5)
    );
    assert_eq!(settings.log.level, DEFAULT_LOG_LEVEL, "default kept");
}

#[test]
fn yaml_and_toml_agree() {
    let (_a, toml_path) = write(
        "f.toml",
        "data_dir = \"/tmp/x\"\n[retry]\nmax_backoff = \"90s\"\n",
    );
    let (_b, yaml_path) = write("f.yml", "data_dir: /tmp/x\nretry:\n  max_backoff: 90s\n");
    let a = Settings::from_file(&toml_path).unwrap();
    let b = Settings::from_file(&yaml_path).unwrap();
    assert_eq!(a, b);
    assert_eq!(a.retry.max_backoff, Duration::from_secs(90));
    let (_c, empty) = write("empty.yaml", "");
    assert_eq!(Settings::from_file(&empty).unwrap(), Settings::default());
}

#[test]
fn unknown_keys_are_named() {
    for (name, text, key) in [
        ("a.toml", "adr = \"127.0.0.1:1\"\n", "adr"),
        ("b.toml", "[retry]\ngive_up = \"1s\"\n", "give_up"),
        ("c.yaml", "log:\n  colour: true\n", "colour"),
    ] {
        let (_dir, path) = write(name, text);
        let err = Settings::from_file(&path).unwrap_err().to_string();
        assert!(err.contains(key), "{err}");
    }
    let (_dir, path) = write("ferry.ini", "addr = 1");
    assert!(matches!(
        Settings::from_file(&path),
        Err(SettingsError::UnknownFormat { .. })
    ));
}

#[test]
fn validation_names_the_field() {
    let cases: &[(&[(&str, &str)], &str)] = &[
        (
            &[("FERRY_MAX_CHANGEFEEDS", "0")],
            "max_changefeeds must be > 0",
        ),
        (
            &[("FERRY_MAX_NAME_LENGTH", "129")],
            "max_name_length must be between",
        ),
        (
            &[("FERRY_RETRY_INITIAL_BACKOFF", "0s")],
            "retry.initial_backoff must be > 0",
        ),
        (
            &[
                ("FERRY_RETRY_INITIAL_BACKOFF", "2m"),
                ("FERRY_RETRY_MAX_BACKOFF", "1m"),
            ],
            "retry.max_backoff must be >= retry.initial_backoff",
        ),
        (
            &[("FERRY_RETRY_GIVE_UP_AFTER", "0s")],
            "retry.give_up_after must be > 0",
        ),
        (
            &[("FERRY_REPLICATION_TIMEOUT", "500ms")],
            "replication_timeout must be at least 1s",
        ),
        (
            &[("FERRY_LOG", "info,[bad")],
            "log.level is not a log filter",
        ),
        (
            &[("FERRY_LOG_FORMAT", "xml")],
            "environment variable FERRY_LOG_FORMAT",
        ),
        (
            &[("FERRY_ADDR", "nowhere")],
            "environment variable FERRY_ADDR",
        ),
        (
            &[("FERRY_RETRY_MAX_BACKOFF", "soon")],
            "FERRY_RETRY_MAX_BACKOFF",
        ),
    ];
    for (vars, expected) in cases {
        let err = Settings::load(None, env(vars), &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains(expected), "{vars:?}: {err}");
    }
    let err = Settings::load(None, env(&[]), &[("max_changefeeds", "-1".into())])
        .unwrap_err()
        .to_string();
    assert!(err.starts_with("flag --max-changefeeds:"), "{err}");
}

#[test]
fn non_loopback_needs_tokens_or_the_insecure_flag() {
    let err = Settings::load(None, env(&[("FERRY_ADDR", "0.0.0.0:8300")]), &[])
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with("addr 0.0.0.0:8300 is not a loopback address"),
        "{err}"
    );
    for addr in ["127.0.0.1:1", "127.3.4.5:1", "[::1]:1"] {
        Settings::load(None, env(&[("FERRY_ADDR", addr)]), &[]).unwrap();
    }
    for allowed in [
        &[("FERRY_ADDR", "[::]:1"), ("FERRY_INSECURE_NO_AUTH", "true")][..],
        &[("FERRY_ADDR", "0.0.0.0:1"), ("FERRY_AUTH_TOKEN_FILE", "/t")][..],
    ] {
        Settings::load(None, env(allowed), &[]).unwrap();
    }
    let cases: &[(&[(&str, &str)], &str)] = &[
        (
            &[
                ("FERRY_AUTH_TOKEN_FILE", "/t"),
                ("FERRY_INSECURE_NO_AUTH", "1"),
            ],
            "insecure_no_auth cannot be combined",
        ),
        (&[("FERRY_METRICS_AUTH", "true")], "metrics_auth needs"),
        (&[("FERRY_METRICS_AUTH", "maybe")], "is not a boolean"),
        (&[("FERRY_TLS_CERT", "/c")], "tls.key must be set"),
        (&[("FERRY_TLS_KEY", "/k")], "tls.cert must be set"),
        (&[("FERRY_TLS_CLIENT_CA", "/ca")], "tls.client_ca needs"),
        (
            &[
                ("FERRY_TLS_CERT", "/c"),
                ("FERRY_TLS_KEY", "/k"),
                ("FERRY_TLS_ALLOWED_CN", "a"),
            ],
            "tls.allowed_cn needs",
        ),
    ];
    for (vars, expected) in cases {
        let err = Settings::load(None, env(vars), &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains(expected), "{vars:?}: {err}");
    }
    let settings = Settings::load(
        None,
        env(&[("FERRY_TLS_ALLOWED_CN", "x")]),
        &[
            ("tls.cert", "/c".into()),
            ("tls.key", "/k".into()),
            ("tls.client_ca", "/ca".into()),
            ("tls.allowed_cn", "ops, deploy".into()),
        ],
    )
    .unwrap();
    assert_eq!(
        settings.tls.allowed_cn,
        ["ops", "deploy"],
        "flags replace env"
    );
}

#[test]
fn printed_config_reads_back() {
    let settings = Settings::load(
        None,
        env(&[
            ("FERRY_RETRY_GIVE_UP_AFTER", "1h 30m"),
            ("FERRY_AUTH_TOKEN_FILE", "/etc/ferry/tokens"),
            ("FERRY_METRICS_AUTH", "true"),
            ("FERRY_TLS_CERT", "/c.pem"),
            ("FERRY_TLS_KEY", "/k.pem"),
            ("FERRY_TLS_CLIENT_CA", "/ca.pem"),
            ("FERRY_TLS_ALLOWED_CN", "ops,deploy"),
        ]),
        &[],
    )
    .unwrap();
    let (_dir, path) = write("printed.toml", &settings.to_toml());
    assert_eq!(Settings::from_file(&path).unwrap(), settings);
}
