//! The committed stand-in shard program is what its source builds to.

use std::process::Command;

#[test]
fn the_committed_stand_in_matches_a_fresh_build_when_clang_16_is_present() {
    let clang = Command::new("clang-16").arg("--version").output();
    if !matches!(clang, Ok(ref out) if out.status.success()) {
        eprintln!(
            "SKIPPED: clang-16 is not installed (apt-get install -y clang-16 to run this check)"
        );
        return;
    }
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/shard-program/build.sh");
    let out = Command::new("bash")
        .args([script, "--check"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
