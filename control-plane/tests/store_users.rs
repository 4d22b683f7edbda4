//! Store conformance for users: the same behaviour on SQLite and PostgreSQL.

#[macro_use]
mod support;

use presswork_control_plane::store::{Store, UserRecord};
use presswork_proto::v1::Role;

fn user(name: &str) -> UserRecord {
    UserRecord {
        username: name.into(),
        password_hash: "$argon2id$not-a-real-hash".into(),
        role: Role::Viewer,
        disabled: false,
        // The store starts every user at version 0, whatever is given.
        credential_version: 0,
    }
}

async fn version(store: &Store, name: &str) -> i64 {
    store
        .user(name)
        .await
        .unwrap()
        .expect("the user exists")
        .credential_version
}

/// A new password, and disabling or enabling, raise the credential version (ending earlier
/// tokens); a role change does not (roles are read on every call). Each user has their own.
async fn credential_changes_raise_the_version(store: Store) {
    store.add_user(&user("ada"), 1).await.unwrap();
    store.add_user(&user("otto"), 1).await.unwrap();
    assert_eq!(version(&store, "ada").await, 0);

    store
        .set_user_password("ada", "$argon2id$another")
        .await
        .unwrap();
    assert_eq!(version(&store, "ada").await, 1);
    let ada = store.user("ada").await.unwrap().unwrap();
    assert_eq!(ada.password_hash, "$argon2id$another");

    store.set_user_disabled("ada", true).await.unwrap();
    store.set_user_disabled("ada", false).await.unwrap();
    assert_eq!(version(&store, "ada").await, 3);

    store.set_user_role("ada", Role::Operator).await.unwrap();
    assert_eq!(version(&store, "ada").await, 3);

    assert_eq!(version(&store, "otto").await, 0, "otto's is untouched");
    let listed = store.users().await.unwrap();
    assert_eq!(
        listed
            .iter()
            .map(|u| (u.username.as_str(), u.credential_version))
            .collect::<Vec<_>>(),
        [("ada", 3), ("otto", 0)]
    );
}

conformance!(credential_changes_raise_the_version);
