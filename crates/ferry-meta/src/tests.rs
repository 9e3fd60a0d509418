use std::os::unix::fs::PermissionsExt;

use super::*;

/// A data directory and the key file beside it, as the server lays them out.
fn layout() -> (tempfile::TempDir, PathBuf, PathBuf) {
    let root = tempfile::tempdir().unwrap();
    let data = root.path().join("data");
    let key = root.path().join("data.secret-key");
    (root, data, key)
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

fn file_contains(path: &Path, needle: &str) -> bool {
    let bytes = std::fs::read(path).unwrap();
    bytes.windows(needle.len()).any(|w| w == needle.as_bytes())
}

#[test]
fn survives_reopen() {
    let (_root, dir, key) = layout();
    {
        let store = MetaStore::open(&dir, &key).unwrap();
        assert!(store.secret_key().generated());
        assert_eq!(
            store.get::<String>(Collection::Changefeeds, "a").unwrap(),
            None
        );
        store
            .put(Collection::Changefeeds, "default/a", &"x".to_string())
            .unwrap();
        store
            .put(Collection::Changefeeds, "default/b", &"y".to_string())
            .unwrap();
        assert!(store.delete(Collection::Changefeeds, "default/b").unwrap());
        assert!(!store.delete(Collection::Changefeeds, "default/b").unwrap());
    }
    let store = MetaStore::open(&dir, &key).unwrap();
    assert!(!store.secret_key().generated());
    let all: Vec<(String, String)> = store.list(Collection::Changefeeds).unwrap();
    assert_eq!(all, vec![("default/a".to_string(), "x".to_string())]);
    assert!(store
        .list::<String>(Collection::ChangefeedState)
        .unwrap()
        .is_empty());
}

#[test]
fn documents_are_sealed_and_files_private() {
    let (_root, dir, key) = layout();
    let store = MetaStore::open(&dir, &key).unwrap();
    let uri = "postgres://app:SENTINEL-pw@db/shop".to_string();
    store.put(Collection::Sources, "default/s", &uri).unwrap();
    assert_eq!(
        store
            .get::<String>(Collection::Sources, "default/s")
            .unwrap(),
        Some(uri)
    );
    drop(store);
    assert!(!file_contains(&dir.join(STORE_FILE), "SENTINEL"));
    assert_eq!(mode(&dir), 0o700);
    assert_eq!(mode(&dir.join(STORE_FILE)), 0o600);
    assert_eq!(mode(&key), 0o600);
}

#[test]
fn a_wrong_or_missing_key_is_refused() {
    let (root, dir, key) = layout();
    MetaStore::open(&dir, &key)
        .unwrap()
        .put(Collection::Changefeeds, "default/a", &1)
        .unwrap();
    let other = root.path().join("other.key");
    SecretKey::generate(&other).unwrap();
    let err = MetaStore::open(&dir, &other).err().unwrap();
    assert!(matches!(err, MetaError::WrongKey { .. }), "{err}");
    assert!(err.to_string().contains("other.key"), "{err}");

    std::fs::rename(&key, root.path().join("moved")).unwrap();
    let err = MetaStore::open(&dir, &key).err().unwrap();
    assert!(matches!(err, MetaError::KeyMissing { .. }), "{err}");
    assert!(!key.exists(), "no new key is generated for a sealed store");
}

#[test]
fn a_plaintext_store_is_rewritten_sealed() {
    let (_root, dir, key) = layout();
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(STORE_FILE);
    {
        // A store as Ferry wrote it before encryption: plaintext JSON, mode 0644.
        let db = Database::create(&path).unwrap();
        let doc = serde_json::to_vec("postgres://app:SENTINEL-pw@db/shop").unwrap();
        write_raw(&db, Collection::Sources.table(), "default/s", &doc).unwrap();
        write_raw(&db, Collection::Changefeeds.table(), "default/c", b"7").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    assert!(file_contains(&path, "SENTINEL"));
    let store = MetaStore::open(&dir, &key).unwrap();
    assert_eq!(
        store
            .get::<String>(Collection::Sources, "default/s")
            .unwrap(),
        Some("postgres://app:SENTINEL-pw@db/shop".to_string())
    );
    assert_eq!(
        store
            .get::<u32>(Collection::Changefeeds, "default/c")
            .unwrap(),
        Some(7)
    );
    drop(store);
    assert!(!file_contains(&path, "SENTINEL"));
    assert_eq!(mode(&path), 0o600);
    assert_eq!(mode(&dir), 0o700);
    assert!(!path.with_extension("redb.sealing").exists());
    let store = MetaStore::open(&dir, &key).unwrap();
    assert_eq!(store.list::<u32>(Collection::Changefeeds).unwrap().len(), 1);
}
