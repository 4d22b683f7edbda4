//! The SQLite store holds the token signing key and password hashes: its files must be private
//! to the control plane's user whatever the umask.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use presswork_control_plane::store::Store;

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{} should exist: {e}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

#[tokio::test]
async fn a_new_sqlite_database_and_its_wal_and_shm_are_private() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let db = dir.path().join("presswork.db");
    let url = format!("sqlite://{}", db.display());
    let store = Store::connect(&url).await.expect("open a fresh store");
    // The migrations wrote through the WAL: both side files exist while the store is open.
    let wal = dir.path().join("presswork.db-wal");
    let shm = dir.path().join("presswork.db-shm");
    for path in [&db, &wal, &shm] {
        assert_eq!(
            format!("{:o}", mode(path)),
            "600",
            "{} must be readable by its owner only",
            path.display()
        );
    }
    store.close().await;
}
