//! The power-cut file system keeps exactly what was synced: these cases are what the power-cut test of the
//! server relies on (a file system that kept too much would let a missing fsync pass).

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::Path;

use presence_testkit::powercut::PowerCut;

fn sync_dir(path: &Path) {
    File::open(path).unwrap().sync_all().unwrap();
}

/// Mounts `backing`, runs `changes` on the mount, cuts the power, and returns what the backing holds.
fn after_cut(backing: &Path, changes: impl FnOnce(&Path)) -> std::collections::BTreeMap<String, Vec<u8>> {
    let mountpoint = tempfile::tempdir().unwrap();
    let mount = PowerCut::mount(backing, mountpoint.path()).unwrap();
    changes(mountpoint.path());
    mount.cut().unwrap();
    let mut files = std::collections::BTreeMap::new();
    let mut stack = vec![backing.to_owned()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let entry = entry.unwrap();
            let name = entry.path().strip_prefix(backing).unwrap().to_str().unwrap().to_owned();
            if entry.file_type().unwrap().is_dir() {
                files.insert(format!("{name}/"), Vec::new());
                stack.push(entry.path());
            } else {
                files.insert(name, std::fs::read(entry.path()).unwrap());
            }
        }
    }
    files
}

#[test]
fn only_synced_bytes_and_synced_names_survive_the_cut() {
    let backing = tempfile::tempdir().unwrap();
    let files = after_cut(backing.path(), |mnt| {
        // Synced file, synced name: kept.
        let mut kept = File::create(mnt.join("kept")).unwrap();
        kept.write_all(b"durable").unwrap();
        kept.sync_all().unwrap();
        // Bytes written after the sync: lost.
        kept.write_all(b" and not").unwrap();
        // A name synced whose bytes never were: an empty file.
        File::create(mnt.join("empty")).unwrap().write_all(b"never synced").unwrap();
        std::fs::create_dir(mnt.join("sub")).unwrap();
        sync_dir(mnt);
        // A file synced whose name never was: lost.
        let mut nameless = File::create(mnt.join("nameless")).unwrap();
        nameless.write_all(b"synced bytes").unwrap();
        nameless.sync_all().unwrap();
        // A file in a synced directory whose own entries were never synced: lost.
        let mut inner = File::create(mnt.join("sub/inner")).unwrap();
        inner.write_all(b"inner").unwrap();
        inner.sync_all().unwrap();
    });
    let names: Vec<&str> = files.keys().map(String::as_str).collect();
    assert_eq!(names, ["empty", "kept", "sub/"]);
    assert_eq!(files["kept"], b"durable");
    assert_eq!(files["empty"], b"");
}

#[test]
fn overwrites_truncations_renames_and_removals_wait_for_their_sync() {
    let backing = tempfile::tempdir().unwrap();
    std::fs::write(backing.path().join("data"), vec![b'a'; 10_000]).unwrap();
    std::fs::write(backing.path().join("gone"), b"removed, but not durably").unwrap();
    std::fs::write(backing.path().join("old-name"), b"renamed").unwrap();
    let files = after_cut(backing.path(), |mnt| {
        assert_eq!(std::fs::read(mnt.join("data")).unwrap(), vec![b'a'; 10_000], "the backing is mounted");
        let data = OpenOptions::new().write(true).open(mnt.join("data")).unwrap();
        data.write_all_at(b"bbbb", 4_100).unwrap();
        data.sync_data().unwrap();
        data.write_all_at(b"cccc", 0).unwrap(); // lost
        std::fs::remove_file(mnt.join("gone")).unwrap(); // not durable: the file stays
        std::fs::rename(mnt.join("old-name"), mnt.join("new-name")).unwrap(); // not durable either
    });
    let mut expected = vec![b'a'; 10_000];
    expected[4_100..4_104].copy_from_slice(b"bbbb");
    assert_eq!(files["data"], expected);
    assert_eq!(files["gone"], b"removed, but not durably");
    assert_eq!(files["old-name"], b"renamed");
    assert!(!files.contains_key("new-name"));

    let files = after_cut(backing.path(), |mnt| {
        let data = OpenOptions::new().write(true).open(mnt.join("data")).unwrap();
        data.set_len(100).unwrap();
        data.sync_all().unwrap();
        std::fs::remove_file(mnt.join("gone")).unwrap();
        std::fs::rename(mnt.join("old-name"), mnt.join("new-name")).unwrap();
        std::fs::hard_link(mnt.join("new-name"), mnt.join("linked")).unwrap();
        sync_dir(mnt);
        data.set_len(50).unwrap(); // lost
    });
    let names: Vec<&str> = files.keys().map(String::as_str).collect();
    assert_eq!(names, ["data", "linked", "new-name"]);
    assert_eq!(files["data"], vec![b'a'; 100]);
    assert_eq!(files["new-name"], b"renamed");
    assert_eq!(files["linked"], b"renamed");
}
