use presswork_proto::v1::Role;
use prost::Message;

use crate::store::UserRecord;

use super::*;

/// Every method of every service the server registers must be in the access table, so
/// nothing is left open (or shut) by accident.
#[test]
fn every_served_method_is_in_the_access_table() {
    let sets: [&[u8]; 4] = [
        presswork_proto::v1::FILE_DESCRIPTOR_SET,
        tonic_health::pb::FILE_DESCRIPTOR_SET,
        tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET,
        tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET,
    ];
    let mut methods = Vec::new();
    for set in sets {
        let set = prost_types::FileDescriptorSet::decode(set).expect("descriptor set decodes");
        for file in set.file {
            for service in &file.service {
                for method in &service.method {
                    methods.push(format!(
                        "/{}.{}/{}",
                        file.package(),
                        service.name(),
                        method.name()
                    ));
                }
            }
        }
    }
    assert!(
        methods.len() >= 13,
        "descriptor sets list the served methods: {methods:?}"
    );
    let missing: Vec<_> = methods
        .iter()
        .filter(|m| required_access(m).is_none())
        .collect();
    assert!(
        missing.is_empty(),
        "methods missing from the access table: {missing:?}"
    );
    assert_eq!(
        required_access("/presswork.v1.JobService/DropAllJobs"),
        None
    );
}

#[test]
fn only_administrators_may_cancel() {
    assert_eq!(
        required_access("/presswork.v1.JobService/CancelJob"),
        Some(Access::User(Role::Administrator))
    );
    assert!(role_allows(Role::Administrator, Role::Administrator));
    assert!(!role_allows(Role::Operator, Role::Administrator));
    assert!(!role_allows(Role::Viewer, Role::Administrator));
    assert!(role_allows(Role::Operator, Role::Operator));
    assert!(!role_allows(Role::Viewer, Role::Operator));
    assert!(role_allows(Role::Viewer, Role::Viewer));
    assert!(!role_allows(Role::Unspecified, Role::Viewer));
    assert_eq!(
        required_access("/presswork.v1.WorkerService/Connect"),
        Some(Access::Worker)
    );
}

#[test]
fn passwords_hash_with_argon2id_and_verify() {
    let hash = hash_password("correct horse").unwrap();
    assert!(hash.starts_with("$argon2id$"), "{hash}");
    assert!(verify_password("correct horse", &hash));
    assert!(!verify_password("wrong horse", &hash));
    assert!(!verify_password("correct horse", "not a hash"));
}

#[test]
fn signing_keys_must_be_long_enough() {
    assert_eq!(parse_signing_key(&"ab".repeat(32)).unwrap(), vec![0xab; 32]);
    assert!(parse_signing_key("short").is_err());
    assert_eq!(parse_signing_key(&"x".repeat(40)).unwrap().len(), 40);
    assert_eq!(unhex(&hex(&[1, 2, 255])), Some(vec![1, 2, 255]));
}

/// An authenticator on a fresh SQLite store with one user, `ada`.
async fn authenticator() -> (tempfile::TempDir, Arc<Authenticator>) {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("auth.db").display());
    let store = Store::connect(&url).await.unwrap();
    store
        .add_user(
            &UserRecord {
                username: "ada".into(),
                password_hash: hash_password("ada-password").unwrap(),
                role: Role::Administrator,
                disabled: false,
                credential_version: 0,
            },
            0,
        )
        .await
        .unwrap();
    let auth = Authenticator::new(
        store,
        AuthSettings {
            signing_key: Some(vec![7; 32]),
            token_ttl: Duration::from_secs(60),
            worker_tokens: Vec::new(),
            trusted_proxies: Vec::new(),
        },
    )
    .await
    .unwrap();
    (dir, auth)
}

#[tokio::test]
async fn overlong_names_and_passwords_are_refused_before_anything_is_kept() {
    let (_dir, auth) = authenticator().await;
    let source = Some(IpAddr::from([192, 0, 2, 1]));
    let long_name = "n".repeat(1 << 20);
    let status = auth
        .login(&long_name, "whatever-pw", source)
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
    assert!(status.message().contains("at most 256"), "{status:?}");
    let status = auth
        .login("ada", &"p".repeat(MAX_PASSWORD_BYTES + 1), source)
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
    // The longest name allowed is checked as usual.
    let status = auth
        .login(&"n".repeat(MAX_USERNAME_BYTES), "whatever-pw", source)
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unauthenticated, "{status:?}");
    assert_eq!(auth.tracked_sign_in_keys(), (1, 1));
}

/// One address sending many distinct names keeps about its per-minute budget of them (a cell
/// comes back every two seconds), not one per name: the address's limit is checked before a
/// name is stored, and only failures are stored.
#[tokio::test]
async fn many_distinct_names_from_one_address_keep_the_tables_bounded() {
    let (_dir, auth) = authenticator().await;
    let source = Some(IpAddr::from([192, 0, 2, 1]));
    let mut codes = std::collections::BTreeMap::new();
    for n in 0..1000 {
        let name = format!("{n:0>200}");
        let code = auth
            .login(&name, "whatever-pw", source)
            .await
            .unwrap_err()
            .code();
        *codes.entry(format!("{code:?}")).or_insert(0) += 1;
    }
    let (sources, pairs) = auth.tracked_sign_in_keys();
    assert_eq!(sources, 1);
    assert!(pairs < 200, "{pairs} names kept; answers: {codes:?}");
}

/// Failing from one address locks that (user, address) only: the user still signs in from
/// another address, and a success clears the pair.
#[tokio::test]
async fn failures_from_one_address_do_not_lock_the_user_out_elsewhere() {
    let (_dir, auth) = authenticator().await;
    let attacker = Some(IpAddr::from([203, 0, 113, 7]));
    let user = Some(IpAddr::from([198, 51, 100, 9]));
    for _ in 0..sign_in::FREE_FAILURES {
        let status = auth
            .login("ada", "wrong-password", attacker)
            .await
            .unwrap_err();
        assert_eq!(status.code(), tonic::Code::Unauthenticated);
    }
    let status = auth
        .login("ada", "ada-password", attacker)
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status:?}");
    auth.login("ada", "ada-password", user)
        .await
        .expect("ada signs in from her own address");
    // Her own earlier failures are cleared by her success.
    auth.login("ada", "wrong-password", user).await.unwrap_err();
    auth.login("ada", "ada-password", user).await.unwrap();
    assert_eq!(auth.tracked_sign_in_keys().1, 1, "only the attacker's pair");
}

/// A token carries the credential version; a new password ends the tokens issued before.
#[tokio::test]
async fn a_new_password_ends_earlier_tokens() {
    let (_dir, auth) = authenticator().await;
    let source = Some(IpAddr::from([192, 0, 2, 1]));
    let (token, _, _) = auth.login("ada", "ada-password", source).await.unwrap();
    auth.user_caller(&token).await.expect("a fresh token works");
    auth.store
        .set_user_password("ada", &hash_password("new-password").unwrap())
        .await
        .unwrap();
    let status = auth.user_caller(&token).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unauthenticated);
    assert!(
        status.message().contains("password was changed"),
        "{status:?}"
    );
    let (token, _, _) = auth.login("ada", "new-password", source).await.unwrap();
    auth.user_caller(&token).await.expect("the new token works");
}
