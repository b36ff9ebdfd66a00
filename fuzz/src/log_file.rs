//! The collector's reading of one log file, gzipped or plain: split into
//! records, each validated into an event, sessions captured.

use std::sync::Arc;

use trailwatch_collector::read_object;
use trailwatch_core::event::FileStatus;
use trailwatch_core::layout::classify;
use trailwatch_core::ports::ObjectMeta;
use trailwatch_core::stats::StageTimes;

const KEY: &str = "AWSLogs/o-a1b2c3d4e5/111122223333/CloudTrail/us-east-1/2024/01/15/111122223333_CloudTrail_us-east-1_20240115T1205Z_FuzzFuzzFuzz0001.json.gz";

/// Reads `data` as the object at a fixed key; checks that what was sent and
/// what the outcome says agree.
pub fn run(data: &[u8]) {
    let key: Arc<str> = KEY.into();
    let trail_key = classify(KEY).expect("the fuzz key is a log file key");
    let meta = ObjectMeta { key: KEY.into(), size: data.len() as u64, modified: 0 };
    let mut sent = 0u64;
    let (outcome, compressed) = read_object(
        &key,
        &trail_key,
        &meta,
        data,
        &mut |chunk| {
            assert!(chunk.events.iter().all(|e| !e.event_id.is_empty() && !e.event_source.is_empty() && !e.event_name.is_empty()));
            sent += chunk.events.len() as u64;
            true
        },
        &StageTimes::default(),
    )
    .expect("the receiver never goes away here");
    assert_eq!(outcome.events, sent, "the outcome counts the events sent");
    assert!(compressed <= data.len() as u64);
    match outcome.status {
        FileStatus::Done => assert!(outcome.error.is_none() && outcome.rejected.is_empty() && sent > 0, "{outcome:?}"),
        FileStatus::Partial => assert!(!outcome.rejected.is_empty() && sent > 0, "{outcome:?}"),
        FileStatus::Empty | FileStatus::Failed => assert!(outcome.error.is_some(), "{outcome:?}"),
        FileStatus::Digest => panic!("a log file is never a digest"),
    }
}
