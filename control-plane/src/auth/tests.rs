use presswork_proto::v1::Role;
use prost::Message;

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
