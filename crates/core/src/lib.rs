//! trailwatch-core: the CloudTrail model, the trail bucket's key layout, the
//! streaming record reader, and the port traits the services are written
//! against. No AWS SDK, database or HTTP here.

pub mod accounts;
pub mod alerts;
pub mod conformance;
pub mod event;
pub mod faults;
pub mod identity;
pub mod integrity;
pub mod interpose;
pub mod layout;
pub mod memory;
pub mod model;
pub mod onboarding;
pub mod ports;
pub mod reader;
pub mod retry;
pub mod rules;
pub mod stats;
pub mod time;
pub mod view;

pub use event::{Event, FileBatch, FileOutcome, FileStatus, RecordError, RejectedRecord};
pub use layout::{classify, ObjectKind, SkipReason, TrailKey};
pub use ports::{Checkpoints, HistoryStore, LogSource, PortError};
