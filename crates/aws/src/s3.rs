//! The trail bucket as a [`LogSource`].
//!
//! An object is streamed, never held whole: `open` sends GetObject, then a
//! tokio task pumps the body into a small channel (at most [`BUFFERED_CHUNKS`]
//! chunks waiting), and [`S3Body`] reads from that channel with blocking
//! calls, as the collector does inside `spawn_blocking`. The task waits for
//! the reader before fetching more, so a 1 GB log file costs a few chunks of
//! memory. A failure halfway through reaches the reader as an `io::Error`
//! that names `s3://bucket/key`.
//!
//! [`S3Signatures`] reads a digest's signature from the object's metadata.

use std::io::{self, Read};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvError, SyncSender, TryRecvError};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_s3::primitives::ByteStream;
use tokio::runtime::{Handle, RuntimeFlavor};
use tokio::sync::Semaphore;
use trailwatch_core::integrity::SignatureSource;
use trailwatch_core::ports::{LogSource, ObjectBody, ObjectMeta, PortError};

use crate::error::{classify, source_chain, AwsResult};

/// How many chunks of an object may wait for the reader.
pub const BUFFERED_CHUNKS: usize = 4;

/// How long the body may send nothing before the download is given up.
const IDLE_TIMEOUT: Duration = Duration::from_secs(120);

/// One bucket of log files.
#[derive(Debug, Clone)]
pub struct S3Source {
    client: aws_sdk_s3::Client,
    bucket: String,
}

impl S3Source {
    pub fn new(client: aws_sdk_s3::Client, bucket: impl Into<String>) -> Self {
        S3Source { client, bucket: bucket.into() }
    }

    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    fn location(&self, key: &str) -> String {
        format!("s3://{}/{key}", self.bucket)
    }

    /// Opens an object: what [`LogSource::open`] returns, with the byte
    /// count received so far still in sight.
    pub async fn open_body(&self, key: &str) -> AwsResult<S3Body> {
        let location = self.location(key);
        if key.is_empty() {
            return Err(PortError::Invalid { what: location, message: "an empty key names no object".into() });
        }
        let out = self.client.get_object().bucket(&self.bucket).key(key).send().await.map_err(|e| classify(&format!("s3:GetObject {location}"), e))?;
        let expected = out.content_length().and_then(|n| u64::try_from(n).ok());
        Ok(S3Body::spawn(location, out.body, expected))
    }

    /// An object's size and last-modified time (HeadObject): what the
    /// ledger compares, for an object known from a notification.
    pub async fn head(&self, key: &str) -> AwsResult<ObjectMeta> {
        let location = self.location(key);
        let out = self.client.head_object().bucket(&self.bucket).key(key).send().await.map_err(|e| classify(&format!("s3:HeadObject {location}"), e))?;
        Ok(ObjectMeta {
            key: key.to_owned(),
            size: out.content_length().and_then(|n| u64::try_from(n).ok()).unwrap_or(0),
            modified: out.last_modified().and_then(|t| t.to_millis().ok()).unwrap_or(0),
        })
    }

    /// The common prefixes one level below `prefix` (`AWSLogs/o-x/` gives
    /// `AWSLogs/o-x/111122223333/`, …), every page, in key order.
    pub async fn list_delimited(&self, prefix: &str, delimiter: &str) -> AwsResult<Vec<String>> {
        let what = format!("s3:ListObjectsV2 {} (delimiter {delimiter:?})", self.location(prefix));
        let mut prefixes = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let page = self
                .client
                .list_objects_v2()
                .bucket(&self.bucket)
                .prefix(prefix)
                .delimiter(delimiter)
                .set_continuation_token(token.take())
                .send()
                .await
                .map_err(|e| classify(&what, e))?;
            prefixes.extend(page.common_prefixes().iter().filter_map(|p| p.prefix()).map(str::to_owned));
            match next_page(page.is_truncated(), page.next_continuation_token(), &what)? {
                Some(next) => token = Some(next),
                None => break,
            }
        }
        prefixes.sort_unstable();
        prefixes.dedup();
        Ok(prefixes)
    }

    /// Stores an object (tests, and tools that write to the bucket).
    pub async fn put(&self, key: &str, body: Vec<u8>) -> AwsResult<()> {
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .body(ByteStream::from(body))
            .send()
            .await
            .map_err(|e| classify(&format!("s3:PutObject {}", self.location(key)), e))?;
        Ok(())
    }
}

/// The continuation token of the next page; an error when S3 says there is
/// more but gives no token (listing again would loop forever).
fn next_page(truncated: Option<bool>, token: Option<&str>, what: &str) -> AwsResult<Option<String>> {
    match (truncated.unwrap_or(false), token) {
        (false, _) => Ok(None),
        (true, Some(token)) if !token.is_empty() => Ok(Some(token.to_owned())),
        (true, _) => Err(PortError::backend(what, "the listing is truncated but has no continuation token", false)),
    }
}

#[async_trait]
impl LogSource for S3Source {
    fn locate(&self, key: &str) -> String {
        self.location(key)
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, PortError> {
        let what = format!("s3:ListObjectsV2 {}", self.location(prefix));
        let mut objects = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let page = self
                .client
                .list_objects_v2()
                .bucket(&self.bucket)
                .prefix(prefix)
                .set_continuation_token(token.take())
                .send()
                .await
                .map_err(|e| classify(&what, e))?;
            for object in page.contents() {
                let Some(key) = object.key() else { continue };
                if key.ends_with('/') {
                    continue; // a folder marker made by the console: no log file
                }
                objects.push(ObjectMeta {
                    key: key.to_owned(),
                    size: object.size().and_then(|s| u64::try_from(s).ok()).unwrap_or(0),
                    // A time out of range is as good as unknown: 0 still tells changes apart.
                    modified: object.last_modified().and_then(|t| t.to_millis().ok()).unwrap_or(0),
                });
            }
            match next_page(page.is_truncated(), page.next_continuation_token(), &what)? {
                Some(next) => token = Some(next),
                None => break,
            }
        }
        // General purpose buckets list in key order already; directory buckets do not.
        objects.sort_unstable_by(|a, b| a.key.cmp(&b.key));
        Ok(objects)
    }

    async fn open(&self, key: &str) -> Result<ObjectBody, PortError> {
        Ok(Box::new(self.open_body(key).await?))
    }
}

/// The signature algorithm CloudTrail names in a digest's metadata, the only one checked.
pub const SIGNATURE_ALGORITHM: &str = "SHA256withRSA";

/// Digest signatures as CloudTrail stores them: the digest object's user
/// metadata `signature` (hex; `x-amz-meta-signature` on the wire) and
/// `signature-algorithm`, read with HeadObject.
#[derive(Debug, Clone)]
pub struct S3Signatures {
    source: S3Source,
}

impl S3Signatures {
    pub fn new(client: aws_sdk_s3::Client, bucket: impl Into<String>) -> Self {
        S3Signatures { source: S3Source::new(client, bucket) }
    }

    /// Signatures of the digests in `source`'s bucket.
    pub fn of(source: &S3Source) -> Self {
        S3Signatures { source: source.clone() }
    }
}

#[async_trait]
impl SignatureSource for S3Signatures {
    async fn signature(&self, digest_key: &str) -> Result<Option<String>, PortError> {
        let location = self.source.location(digest_key);
        if digest_key.is_empty() {
            return Err(PortError::Invalid { what: location, message: "an empty key names no object".into() });
        }
        let out = self
            .source
            .client
            .head_object()
            .bucket(&self.source.bucket)
            .key(digest_key)
            .send()
            .await
            .map_err(|e| classify(&format!("s3:HeadObject {location}"), e))?;
        let metadata = |name: &str| out.metadata().and_then(|m| m.iter().find(|(k, _)| k.eq_ignore_ascii_case(name))).map(|(_, v)| v.trim());
        if let Some(algorithm) = metadata("signature-algorithm").filter(|a| !a.eq_ignore_ascii_case(SIGNATURE_ALGORITHM)) {
            return Err(PortError::Invalid {
                what: location,
                message: format!("the digest is signed with {algorithm:?}, not {SIGNATURE_ALGORITHM}: its signature cannot be checked"),
            });
        }
        Ok(metadata("signature").filter(|s| !s.is_empty()).map(str::to_owned))
    }
}

/// What the pump sends the reader.
enum Piece {
    Chunk(Vec<u8>),
    End,
    Failed(String),
}

/// An object's bytes as they arrive: a blocking [`Read`].
///
/// Read it from a blocking thread (`spawn_blocking`, a plain thread) or a
/// multi-threaded runtime's task; on a current-thread runtime's own thread
/// the download could never run, and the read would wait forever.
pub struct S3Body {
    location: String,
    pieces: Receiver<Piece>,
    /// One permit for each chunk the pump may fetch ahead of the reader.
    permits: Arc<Semaphore>,
    chunk: Vec<u8>,
    offset: usize,
    state: BodyState,
    received: Arc<AtomicU64>,
}

enum BodyState {
    Reading,
    Done,
    Failed(io::ErrorKind, String),
}

impl S3Body {
    /// Starts the pump of `body` on the current runtime.
    fn spawn(location: String, body: ByteStream, expected: Option<u64>) -> S3Body {
        let (sender, pieces) = std::sync::mpsc::sync_channel(BUFFERED_CHUNKS + 1);
        let permits = Arc::new(Semaphore::new(BUFFERED_CHUNKS));
        let received = Arc::new(AtomicU64::new(0));
        tokio::spawn(pump(body, sender, permits.clone(), received.clone(), expected));
        S3Body { location, pieces, permits, chunk: Vec::new(), offset: 0, state: BodyState::Reading, received }
    }

    /// Where the object lives: `s3://bucket/key`.
    pub fn location(&self) -> &str {
        &self.location
    }

    /// Bytes taken from the network so far, read or waiting to be read.
    pub fn received(&self) -> u64 {
        self.received.load(Ordering::Relaxed)
    }

    /// The next piece, waiting for it if none is there yet.
    fn next_piece(&self) -> Result<Piece, RecvError> {
        match self.pieces.try_recv() {
            Ok(piece) => return Ok(piece),
            Err(TryRecvError::Disconnected) => return Err(RecvError),
            Err(TryRecvError::Empty) => {}
        }
        match Handle::try_current() {
            // On a worker thread, let the runtime move its other tasks (the
            // pump among them) to another thread while this one waits.
            Ok(handle) if handle.runtime_flavor() == RuntimeFlavor::MultiThread => tokio::task::block_in_place(|| self.pieces.recv()),
            _ => self.pieces.recv(),
        }
    }

    fn fail(&mut self, kind: io::ErrorKind, message: String) -> io::Error {
        self.state = BodyState::Failed(kind, message.clone());
        io::Error::new(kind, message)
    }
}

impl Read for S3Body {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            if self.offset < self.chunk.len() {
                let n = buf.len().min(self.chunk.len() - self.offset);
                buf[..n].copy_from_slice(&self.chunk[self.offset..self.offset + n]);
                self.offset += n;
                return Ok(n);
            }
            match &self.state {
                BodyState::Reading => {}
                BodyState::Done => return Ok(0),
                BodyState::Failed(kind, message) => return Err(io::Error::new(*kind, message.clone())),
            }
            if buf.is_empty() {
                return Ok(0);
            }
            match self.next_piece() {
                Ok(Piece::Chunk(chunk)) => {
                    self.permits.add_permits(1);
                    self.chunk = chunk;
                    self.offset = 0;
                }
                Ok(Piece::End) => {
                    self.state = BodyState::Done;
                    self.chunk = Vec::new();
                    return Ok(0);
                }
                Ok(Piece::Failed(reason)) => {
                    let message = format!("{}: reading the object failed: {reason}", self.location);
                    return Err(self.fail(io::ErrorKind::Other, message));
                }
                Err(RecvError) => {
                    // The pump went away without a word: its runtime shut down.
                    let message = format!("{}: the download stopped before the end of the object", self.location);
                    return Err(self.fail(io::ErrorKind::UnexpectedEof, message));
                }
            }
        }
    }
}

impl Drop for S3Body {
    fn drop(&mut self) {
        // Wakes a pump waiting for room, which then stops downloading.
        self.permits.close();
    }
}

/// Moves the body into the channel, a chunk for each permit the reader gives back.
async fn pump(mut body: ByteStream, sender: SyncSender<Piece>, permits: Arc<Semaphore>, received: Arc<AtomicU64>, expected: Option<u64>) {
    let mut total = 0u64;
    loop {
        let Ok(permit) = permits.acquire().await else {
            return; // the reader was dropped
        };
        let piece = match tokio::time::timeout(IDLE_TIMEOUT, body.next()).await {
            Ok(Some(Ok(bytes))) => {
                total += bytes.len() as u64;
                received.fetch_add(bytes.len() as u64, Ordering::Relaxed);
                permit.forget(); // given back by the reader once it takes the chunk
                Piece::Chunk(Vec::from(bytes))
            }
            Ok(Some(Err(e))) => Piece::Failed(source_chain(&e)),
            Ok(None) => match expected {
                Some(length) if length != total => Piece::Failed(format!("the body ended after {total} of {length} bytes")),
                _ => Piece::End,
            },
            Err(_) => Piece::Failed(format!("no data for {} s after {total} bytes", IDLE_TIMEOUT.as_secs())),
        };
        let last = !matches!(piece, Piece::Chunk(_));
        // The channel holds one more piece than there are permits: never full.
        if sender.try_send(piece).is_err() || last {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body_of(pieces: Vec<Piece>) -> S3Body {
        let (sender, receiver) = std::sync::mpsc::sync_channel(pieces.len() + 1);
        for piece in pieces {
            sender.try_send(piece).unwrap();
        }
        drop(sender);
        S3Body {
            location: "s3://trail/AWSLogs/a.json.gz".into(),
            pieces: receiver,
            permits: Arc::new(Semaphore::new(0)),
            chunk: Vec::new(),
            offset: 0,
            state: BodyState::Reading,
            received: Arc::new(AtomicU64::new(0)),
        }
    }

    #[test]
    fn chunks_are_read_in_order_and_the_end_is_eof() {
        let mut body = body_of(vec![Piece::Chunk(b"hello ".to_vec()), Piece::Chunk(Vec::new()), Piece::Chunk(b"world".to_vec()), Piece::End]);
        let mut text = String::new();
        body.read_to_string(&mut text).unwrap();
        assert_eq!(text, "hello world");
        assert_eq!(body.read(&mut [0; 8]).unwrap(), 0, "stays at the end");
        assert_eq!(body.permits.available_permits(), 3, "each chunk taken gives its permit back");
    }

    #[test]
    fn a_failure_mid_stream_names_the_object_and_stays() {
        let mut body = body_of(vec![Piece::Chunk(b"abc".to_vec()), Piece::Failed("connection reset".into())]);
        let mut out = Vec::new();
        let err = body.read_to_end(&mut out).unwrap_err();
        assert_eq!(out, b"abc");
        assert!(err.to_string().contains("s3://trail/AWSLogs/a.json.gz"), "{err}");
        assert!(err.to_string().contains("connection reset"), "{err}");
        assert!(body.read(&mut [0; 8]).is_err(), "a failed body does not pretend to end");
    }

    #[test]
    fn a_pump_that_vanished_is_an_unexpected_eof() {
        let mut body = body_of(vec![Piece::Chunk(b"abc".to_vec())]);
        let mut out = Vec::new();
        let err = body.read_to_end(&mut out).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
        assert!(err.to_string().starts_with("s3://trail/AWSLogs/a.json.gz: "), "{err}");
    }

    #[test]
    fn a_truncated_listing_needs_a_token() {
        assert_eq!(next_page(Some(false), Some("t"), "list").unwrap(), None);
        assert_eq!(next_page(None, None, "list").unwrap(), None);
        assert_eq!(next_page(Some(true), Some("t"), "list").unwrap(), Some("t".to_owned()));
        assert!(next_page(Some(true), None, "list").is_err());
    }
}
