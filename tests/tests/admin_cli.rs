//! `presswork-control-plane users …` as an administrator runs it in a shell pipeline.

use std::process::{Command, Stdio};

use presswork_tests::cluster::CONTROL_PLANE_BINARY;
use presswork_tests::process::binary_path;

/// Runs `presswork-control-plane --database <database> users <args>` with `stdin`.
fn users(database: &str, args: &[&str], stdin: &str, stdout: Stdio) -> std::process::Output {
    use std::io::Write;
    let mut child = Command::new(binary_path(CONTROL_PLANE_BINARY))
        .args(["--database", database, "users"])
        .args(args)
        .stdin(Stdio::piped())
        .stdout(stdout)
        .stderr(Stdio::piped())
        .spawn()
        .expect("start presswork-control-plane users");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin.as_bytes())
        .expect("write stdin");
    child.wait_with_output().expect("the command finishes")
}

/// `users list | head -1`: once `head` has its line and exits, the list meets a closed pipe.
/// It ends quietly, with success, instead of panicking. The pipe's reader is closed before
/// the command writes, so every line it writes meets the closed pipe (with a reader that
/// closes after the first line, whether the rest meets it depends on timing).
#[test]
fn users_list_into_a_closed_pipe_ends_quietly() {
    let dir = tempfile::tempdir().expect("temp dir");
    let database = format!("sqlite://{}", dir.path().join("p.db").display());
    for user in ["ada", "otto"] {
        let added = users(
            &database,
            &["add", "--username", user, "--role", "viewer"],
            "a-long-enough-password\n",
            Stdio::null(),
        );
        assert!(added.status.success(), "{added:?}");
    }

    let (reader, writer) = std::io::pipe().expect("a pipe");
    drop(reader);
    let listed = users(&database, &["list"], "", Stdio::from(writer));
    let stderr = String::from_utf8_lossy(&listed.stderr);
    assert!(
        !stderr.contains("panicked") && !stderr.contains("Broken pipe"),
        "stderr: {stderr}"
    );
    assert_ne!(listed.status.code(), Some(101), "a panic's exit status");
    assert!(listed.status.success(), "{:?}: {stderr}", listed.status);

    // With a reader, the list is complete.
    let listed = users(&database, &["list"], "", Stdio::piped());
    let stdout = String::from_utf8_lossy(&listed.stdout);
    assert!(listed.status.success());
    assert_eq!(stdout.lines().count(), 3, "{stdout}");
}
