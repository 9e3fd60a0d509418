//! The OpenAPI document passes openapi-spec-validator (fault scenario 9): every response has
//! a description, every operationId is unique, schemas are valid. Both variants are checked:
//! as a server without tokens serves it, and with the bearer scheme. Runs when `python3`
//! (with `venv`) is available; `scripts/openapi-validate` installs the validator into a venv
//! under `target/` once (a few seconds), later runs take well under a second.

use std::path::Path;
use std::process::Command;

#[test]
fn the_openapi_document_passes_openapi_spec_validator() {
    let python = Command::new("python3")
        .args(["-m", "venv", "--help"])
        .output();
    if !python.is_ok_and(|o| o.status.success()) {
        eprintln!("openapi_valid: python3 with venv not found; skipped");
        return;
    }
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"));
    let mut files = Vec::new();
    for bearer in [false, true] {
        let path = dir.join(format!("openapi-bearer-{bearer}.json"));
        std::fs::write(&path, ferry_api::openapi_json(bearer)).unwrap();
        files.push(path);
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let output = Command::new(root.join("scripts/openapi-validate"))
        .args(&files)
        .env(
            "FERRY_OPENAPI_VENV",
            root.join("target/openapi-validator-venv"),
        )
        .output()
        .expect("run scripts/openapi-validate");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    eprintln!("{stdout}");
    assert!(
        output.status.success(),
        "the OpenAPI document is not valid:\n{stdout}\n{stderr}"
    );
}

/// What the validator cannot know: `PUT` takes partial updates (a merge patch for changefeeds,
/// optional fields for sources), so its request schema requires nothing; and every operation
/// has its own operationId.
#[test]
fn put_bodies_require_nothing_and_operation_ids_are_unique() {
    let doc: serde_json::Value = serde_json::from_str(&ferry_api::openapi_json(true)).unwrap();
    let schemas = &doc["components"]["schemas"];
    let mut ids = std::collections::HashSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            let id = operation["operationId"].as_str().unwrap_or_default();
            assert!(
                ids.insert(id.to_owned()),
                "{method} {path}: operationId {id} twice"
            );
            if method != "put" {
                continue;
            }
            let reference = operation["requestBody"]["content"]["application/json"]["schema"]
                ["$ref"]
                .as_str()
                .unwrap();
            let name = reference.rsplit('/').next().unwrap();
            let required = &schemas[name]["required"];
            assert!(
                required.is_null() || required.as_array().is_some_and(|r| r.is_empty()),
                "PUT {path}: {name} requires {required}, but PUT takes partial updates"
            );
        }
    }
}
