//! A writer killed half-way (the failpoint aborts the process) leaves the old file whole.

use std::process::Command;

#[test]
fn a_writer_aborted_half_way_leaves_the_old_file() {
    if let Ok(path) = std::env::var("ATOMIC_FILE_CHILD") {
        // The child: replace the file with 1 MiB, aborted half-way.
        atomic_file::write(path.as_ref(), &vec![7u8; 1 << 20]).unwrap();
        unreachable!("the failpoint aborts first");
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("data.rec");
    atomic_file::write(&path, b"the old file").unwrap();
    let status = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "a_writer_aborted_half_way_leaves_the_old_file",
            "--nocapture",
        ])
        .env("ATOMIC_FILE_CHILD", &path)
        .env("ARCFACE_ABORT_WRITING", ".rec")
        .status()
        .unwrap();
    assert!(!status.success(), "the child was to be aborted");
    assert_eq!(std::fs::read(&path).unwrap(), b"the old file");
}
