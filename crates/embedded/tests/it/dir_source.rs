use std::fs;
use std::io::Read;
use std::path::Path;

use trailwatch_core::ports::{LogSource, PortError};
use trailwatch_embedded::DirSource;

const DAY: &str = "AWSLogs/o-a1b2c3d4e5/111122223333/CloudTrail/us-east-1/2024/01/15/";

fn put(root: &Path, key: &str, bytes: &[u8]) {
    let path = root.join(key);
    fs::create_dir_all(path.parent().expect("keys have a folder")).expect("create folder");
    fs::write(path, bytes).expect("write");
}

fn keys(listed: &[trailwatch_core::ports::ObjectMeta]) -> Vec<&str> {
    listed.iter().map(|m| m.key.as_str()).collect()
}

#[tokio::test]
async fn files_being_written_and_hidden_files_are_not_listed() {
    let dir = tempfile::tempdir().expect("temp dir");
    let root = dir.path();
    let done = format!("{DAY}111122223333_CloudTrail_us-east-1_20240115T1200Z_a.json.gz");
    put(root, &done, b"gz");
    put(root, &format!("{DAY}111122223333_CloudTrail_us-east-1_20240115T1205Z_b.json.gz.tmp"), b"half");
    put(root, &format!("{DAY}111122223333_CloudTrail_us-east-1_20240115T1210Z_c.json.gz.partial"), b"half");
    put(root, &format!("{DAY}.111122223333_CloudTrail_us-east-1_20240115T1215Z_d.json.gz"), b"rsync temp");
    put(root, &format!("{DAY}.tmp/111122223333_CloudTrail_us-east-1_20240115T1220Z_e.json.gz"), b"staged");
    put(root, ".sync/state", b"x");

    let source = DirSource::new(root);
    assert_eq!(keys(&source.list("").await.expect("list")), vec![done.as_str()]);
    assert_eq!(keys(&source.list(DAY).await.expect("list")), vec![done.as_str()]);
    assert!(source.list(&format!("{DAY}.tmp/")).await.expect("list").is_empty(), "nothing is listed inside a hidden folder");
}

#[tokio::test]
async fn a_prefix_lists_only_its_subtree_in_key_order() {
    let dir = tempfile::tempdir().expect("temp dir");
    let root = dir.path();
    let org = "AWSLogs/o-a1b2c3d4e5/";
    let wanted =
        [format!("{org}111122223333/CloudTrail/eu-west-1/2024/01/15/x.json.gz"), format!("{org}111122223333/CloudTrail/us-east-1/2024/01/15/y.json.gz")];
    let sibling = format!("{org}1111222233334/CloudTrail/us-east-1/2024/01/15/z.json.gz");
    let other = format!("{org}444455556666/CloudTrail/us-east-1/2024/01/15/w.json.gz");
    for key in wanted.iter().chain([&sibling, &other]) {
        put(root, key, b"data");
    }
    let source = DirSource::new(root);

    let listed = source.list(&format!("{org}111122223333/")).await.expect("list");
    assert_eq!(keys(&listed), vec![wanted[0].as_str(), wanted[1].as_str()]);
    assert!(listed.iter().all(|m| m.size == 4 && m.modified > 1_600_000_000_000), "sizes and modification times are listed: {listed:?}");

    // Like S3, a prefix is a string prefix, not a folder: without the slash it also matches the longer name.
    let listed = source.list(&format!("{org}111122223333")).await.expect("list");
    assert_eq!(keys(&listed), vec![wanted[0].as_str(), wanted[1].as_str(), sibling.as_str()]);

    let listed = source.list(&format!("{org}111122223333/CloudTrail/us-")).await.expect("list");
    assert_eq!(keys(&listed), vec![wanted[1].as_str()]);
    assert!(source.list("AWSLogs/o-nothere/").await.expect("list").is_empty(), "a prefix with no objects lists nothing");
}

#[tokio::test]
async fn listing_is_in_key_order_not_directory_order() {
    let dir = tempfile::tempdir().expect("temp dir");
    let root = dir.path();
    // `-` sorts before `/`: the file `a-b` comes before everything in the folder `a`.
    for key in ["a/x", "a-b", "a0"] {
        put(root, key, b"1");
    }
    let source = DirSource::new(root);
    assert_eq!(keys(&source.list("").await.expect("list")), vec!["a-b", "a/x", "a0"]);
}

#[tokio::test]
async fn opening_reads_the_file_and_a_missing_one_is_named() {
    let dir = tempfile::tempdir().expect("temp dir");
    let root = dir.path();
    let key = format!("{DAY}a.json.gz");
    put(root, &key, b"\x1f\x8b bytes");
    let source = DirSource::new(root);

    let mut body = Vec::new();
    source.open(&key).await.expect("open").read_to_end(&mut body).expect("read");
    assert_eq!(body, b"\x1f\x8b bytes");
    assert_eq!(source.locate(&key), root.join(&key).display().to_string());

    let missing = format!("{DAY}gone.json.gz");
    match source.open(&missing).await {
        Err(e @ PortError::NotFound { .. }) => assert!(e.to_string().contains(&missing), "{e}"),
        Err(e) => panic!("expected not found, got {e}"),
        Ok(_) => panic!("a missing file opened"),
    }
    assert!(matches!(source.open(DAY.trim_end_matches('/')).await, Err(PortError::NotFound { .. })), "a folder is not an object");
    assert!(matches!(source.open("../outside").await, Err(PortError::Invalid { .. })), "keys cannot leave the root");
}

#[tokio::test]
async fn a_missing_trail_directory_is_an_error_naming_it() {
    let dir = tempfile::tempdir().expect("temp dir");
    let root = dir.path().join("no-such-trail");
    let err = DirSource::new(&root).list("").await.expect_err("missing root");
    assert!(matches!(err, PortError::NotFound { .. }) && err.to_string().contains("no-such-trail"), "{err}");
}

#[cfg(unix)]
#[tokio::test]
async fn links_to_files_are_listed_and_links_to_folders_are_not_followed() {
    let dir = tempfile::tempdir().expect("temp dir");
    let root = dir.path();
    let real = format!("{DAY}a.json.gz");
    put(root, &real, b"data");
    std::os::unix::fs::symlink(root.join(&real), root.join(format!("{DAY}b.json.gz"))).expect("file link");
    // A link back up the tree would make an endless walk if it were followed.
    std::os::unix::fs::symlink(root.join("AWSLogs"), root.join(format!("{DAY}loop"))).expect("folder link");

    let source = DirSource::new(root);
    let listed = source.list("").await.expect("list");
    assert_eq!(keys(&listed), vec![real.clone(), format!("{DAY}b.json.gz")]);
    assert_eq!(listed[1].size, 4, "a link is listed as the file it points to");
    assert!(source.list(&format!("{DAY}loop/")).await.expect("list").is_empty());
}
