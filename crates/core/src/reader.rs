//! Streaming record reader.
//!
//! A CloudTrail log file is one JSON object, `{"Records":[{...},{...}]}`,
//! that can be hundreds of megabytes once decompressed. [`RecordReader`]
//! never holds more than one record (plus a read-ahead chunk) in memory: it
//! scans the bytes for the extent of each element of `Records` (tracking only
//! string and nesting state) and lends that slice out; the caller parses the
//! fields it needs from the slice, borrowing. The same reader accepts
//! newline-delimited records (one record object after another, as other tools
//! export them), recognized by a first object that has no `Records` key.
//!
//! [`decode`] puts a gzip decoder in front when the bytes start with the gzip
//! magic number, so callers need not know whether a file is compressed.

use std::fmt;
use std::io::{self, BufRead, BufReader, Read};

use flate2::read::MultiGzDecoder;

const CHUNK: usize = 64 * 1024;

/// What went wrong reading a file's records, and where.
#[derive(Debug)]
pub enum ReadError {
    /// The stream could not be read (I/O, or a corrupt gzip stream).
    Io { offset: u64, source: io::Error },
    /// The object holds no bytes at all.
    Empty,
    /// The bytes are not a CloudTrail log file or newline-delimited records.
    Syntax { offset: u64, message: String },
    /// The data ended in the middle of a record or before the file's end.
    Truncated { offset: u64 },
}

impl fmt::Display for ReadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReadError::Io { offset, source } => write!(f, "read failed at byte {offset} of the decompressed data: {source}"),
            ReadError::Empty => f.write_str("the object is empty (0 bytes)"),
            ReadError::Syntax { offset, message } => write!(f, "not a CloudTrail log file: {message} at byte {offset}"),
            ReadError::Truncated { offset } => write!(f, "the data ends unexpectedly at byte {offset} (truncated file)"),
        }
    }
}

impl std::error::Error for ReadError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ReadError::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// How the records were laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// `{"Records":[...]}`, as CloudTrail writes.
    LogFile,
    /// One record object after another (newline-delimited JSON).
    Lines,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Start,
    InArray { first: bool },
    AfterArray,
    Lines,
    Done,
}

/// One record's bytes, lent by the reader until the next call.
#[derive(Debug)]
pub struct RawRecord<'a> {
    /// Position of the record in the file, from 0.
    pub index: usize,
    /// Byte offset of the record in the decompressed data.
    pub offset: u64,
    pub bytes: &'a [u8],
}

/// Reads records one at a time from decompressed bytes.
pub struct RecordReader<R> {
    inner: R,
    buf: Vec<u8>,
    /// Bytes of `buf` already handed out and no longer needed.
    consumed: usize,
    /// Offset in the stream of `buf[0]`.
    base: u64,
    eof: bool,
    state: State,
    shape: Option<Shape>,
    records: usize,
}

impl<R: Read> RecordReader<R> {
    pub fn new(inner: R) -> Self {
        RecordReader { inner, buf: Vec::with_capacity(CHUNK * 2), consumed: 0, base: 0, eof: false, state: State::Start, shape: None, records: 0 }
    }

    /// The layout seen so far (known after the first record).
    pub fn shape(&self) -> Option<Shape> {
        self.shape
    }

    /// Decompressed bytes read from the stream so far.
    pub fn bytes_read(&self) -> u64 {
        self.base + self.buf.len() as u64
    }

    /// Records handed out so far.
    pub fn records(&self) -> usize {
        self.records
    }

    /// Reads more bytes into the buffer; false at end of stream.
    fn fill(&mut self) -> Result<bool, ReadError> {
        if self.eof {
            return Ok(false);
        }
        let len = self.buf.len();
        self.buf.resize(len + CHUNK, 0);
        loop {
            match self.inner.read(&mut self.buf[len..]) {
                Ok(0) => {
                    self.buf.truncate(len);
                    self.eof = true;
                    return Ok(false);
                }
                Ok(n) => {
                    self.buf.truncate(len + n);
                    return Ok(true);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    self.buf.truncate(len);
                    let offset = self.base + len as u64;
                    return Err(if e.kind() == io::ErrorKind::UnexpectedEof { ReadError::Truncated { offset } } else { ReadError::Io { offset, source: e } });
                }
            }
        }
    }

    fn offset(&self, at: usize) -> u64 {
        self.base + at as u64
    }

    /// Position of the next non-whitespace byte at or after `at`, or None at end of stream.
    fn skip_ws(&mut self, mut at: usize) -> Result<Option<usize>, ReadError> {
        loop {
            while at < self.buf.len() {
                if !matches!(self.buf[at], b' ' | b'\n' | b'\r' | b'\t') {
                    return Ok(Some(at));
                }
                at += 1;
            }
            if !self.fill()? {
                return Ok(None);
            }
        }
    }

    /// End (exclusive) of the string whose opening quote is at `at`.
    fn string_end(&mut self, at: usize) -> Result<usize, ReadError> {
        let mut i = at + 1;
        loop {
            match memchr::memchr2(b'"', b'\\', &self.buf[i.min(self.buf.len())..]) {
                Some(rel) => {
                    let j = i + rel;
                    if self.buf[j] == b'"' {
                        return Ok(j + 1);
                    }
                    // A backslash escapes the next byte, which may not be read yet.
                    while j + 1 >= self.buf.len() {
                        if !self.fill()? {
                            return Err(ReadError::Truncated { offset: self.offset(self.buf.len()) });
                        }
                    }
                    i = j + 2;
                }
                None => {
                    i = self.buf.len().max(i);
                    if !self.fill()? {
                        return Err(ReadError::Truncated { offset: self.offset(self.buf.len()) });
                    }
                }
            }
        }
    }

    /// End (exclusive) of the object or array opening at `at`.
    fn value_end(&mut self, at: usize) -> Result<usize, ReadError> {
        let mut depth = 0usize;
        let mut i = at;
        loop {
            while i < self.buf.len() {
                match self.buf[i] {
                    b'"' => {
                        i = self.string_end(i)?;
                        continue;
                    }
                    b'{' | b'[' => depth += 1,
                    b'}' | b']' => {
                        depth = depth.saturating_sub(1);
                        if depth == 0 {
                            return Ok(i + 1);
                        }
                    }
                    _ => {}
                }
                i += 1;
            }
            if !self.fill()? {
                return Err(ReadError::Truncated { offset: self.offset(self.buf.len()) });
            }
        }
    }

    fn syntax(&self, at: usize, message: impl Into<String>) -> ReadError {
        ReadError::Syntax { offset: self.offset(at), message: message.into() }
    }

    fn expect_byte(&mut self, at: usize, want: u8, what: &str) -> Result<usize, ReadError> {
        match self.skip_ws(at)? {
            Some(i) if self.buf[i] == want => Ok(i + 1),
            Some(i) => Err(self.syntax(i, format!("expected {what}, found {:?}", char::from(self.buf[i])))),
            None => Err(ReadError::Truncated { offset: self.offset(self.buf.len()) }),
        }
    }

    /// Drops the bytes already handed out, once they are a chunk's worth:
    /// moving the unread tail to the front for every record would copy the
    /// buffer once per record.
    fn compact(&mut self) {
        if self.consumed >= CHUNK {
            self.buf.drain(..self.consumed);
            self.base += self.consumed as u64;
            self.consumed = 0;
        }
    }

    /// The next record, or None after the last one.
    pub fn next_record(&mut self) -> Result<Option<RawRecord<'_>>, ReadError> {
        self.compact();
        let start = loop {
            match self.state {
                State::Done => return Ok(None),
                State::Start => {
                    let Some(open) = self.skip_ws(0)? else {
                        self.state = State::Done;
                        return Err(if self.base == 0 && self.buf.is_empty() { ReadError::Empty } else { self.syntax(self.buf.len(), "no JSON value") });
                    };
                    if self.buf[open] != b'{' {
                        self.state = State::Done;
                        return Err(self.syntax(open, format!("expected '{{', found {:?}", char::from(self.buf[open]))));
                    }
                    let key_at = self.skip_ws(open + 1)?;
                    let is_wrapper = match key_at {
                        Some(k) if self.buf[k] == b'"' => {
                            let end = self.string_end(k)?;
                            &self.buf[k..end] == b"\"Records\""
                        }
                        Some(_) => false,
                        None => {
                            self.state = State::Done;
                            return Err(ReadError::Truncated { offset: self.offset(self.buf.len()) });
                        }
                    };
                    if is_wrapper {
                        let key_at = key_at.unwrap_or(open);
                        let after_key = self.string_end(key_at)?;
                        let colon = self.expect_byte(after_key, b':', "':' after \"Records\"")?;
                        let array = self.expect_byte(colon, b'[', "'[' (Records must be an array)")?;
                        self.consumed = array;
                        self.shape = Some(Shape::LogFile);
                        self.state = State::InArray { first: true };
                    } else {
                        self.shape = Some(Shape::Lines);
                        self.state = State::Lines;
                        break open;
                    }
                }
                State::InArray { first } => {
                    let Some(mut at) = self.skip_ws(self.consumed)? else {
                        self.state = State::Done;
                        return Err(ReadError::Truncated { offset: self.offset(self.buf.len()) });
                    };
                    match self.buf[at] {
                        b']' => {
                            self.consumed = at + 1;
                            self.state = State::AfterArray;
                            continue;
                        }
                        b',' if !first => {
                            at = match self.skip_ws(at + 1)? {
                                Some(i) => i,
                                None => {
                                    self.state = State::Done;
                                    return Err(ReadError::Truncated { offset: self.offset(self.buf.len()) });
                                }
                            };
                        }
                        _ if !first => {
                            self.state = State::Done;
                            return Err(self.syntax(at, format!("expected ',' or ']' after record {}", self.records - 1)));
                        }
                        _ => {}
                    }
                    if self.buf[at] != b'{' {
                        self.state = State::Done;
                        return Err(self.syntax(at, format!("record {} of Records is not an object", self.records)));
                    }
                    self.state = State::InArray { first: false };
                    break at;
                }
                State::AfterArray => {
                    let close = self.expect_byte(self.consumed, b'}', "'}' after the Records array").inspect_err(|_| self.state = State::Done)?;
                    self.consumed = close;
                    self.state = State::Done;
                    if let Some(extra) = self.skip_ws(close)? {
                        return Err(self.syntax(extra, "unexpected data after the log file object"));
                    }
                    return Ok(None);
                }
                State::Lines => {
                    let Some(at) = self.skip_ws(self.consumed)? else {
                        self.state = State::Done;
                        return Ok(None);
                    };
                    if self.buf[at] != b'{' {
                        self.state = State::Done;
                        return Err(self.syntax(at, format!("expected a record object after record {}", self.records.saturating_sub(1))));
                    }
                    break at;
                }
            }
        };
        let end = self.value_end(start).inspect_err(|_| self.state = State::Done)?;
        self.consumed = end;
        let index = self.records;
        self.records += 1;
        Ok(Some(RawRecord { index, offset: self.offset(start), bytes: &self.buf[start..end] }))
    }
}

/// Wraps a raw object stream: gunzips it when it starts with the gzip magic
/// number, passes it through otherwise.
pub fn decode<'a>(raw: impl Read + Send + 'a) -> io::Result<Box<dyn Read + Send + 'a>> {
    let mut raw = BufReader::with_capacity(CHUNK, raw);
    let head = raw.fill_buf()?;
    if head.starts_with(&[0x1f, 0x8b]) {
        Ok(Box::new(MultiGzDecoder::new(raw)))
    } else {
        Ok(Box::new(raw))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn collect(input: &[u8]) -> (Vec<String>, Option<String>) {
        let mut reader = RecordReader::new(input);
        let mut out = Vec::new();
        loop {
            match reader.next_record() {
                Ok(Some(r)) => out.push(String::from_utf8(r.bytes.to_vec()).unwrap()),
                Ok(None) => return (out, None),
                Err(e) => return (out, Some(e.to_string())),
            }
        }
    }

    #[test]
    fn reads_log_file_records() {
        let (records, err) = collect(
            br#"{"Records":[{"eventID":"a","x":{"y":[1,2]}},
            {"eventID":"b","s":"brace } and quote \" inside"}]}"#,
        );
        assert_eq!(err, None);
        assert_eq!(records, vec![r#"{"eventID":"a","x":{"y":[1,2]}}"#, r#"{"eventID":"b","s":"brace } and quote \" inside"}"#]);
    }

    #[test]
    fn reads_newline_delimited_records() {
        let (records, err) = collect(b"{\"eventID\":\"a\"}\n{\"eventID\":\"b\"}\n\n");
        assert_eq!(err, None);
        assert_eq!(records.len(), 2);
    }

    #[test]
    fn empty_records_array_has_no_records() {
        assert_eq!(collect(br#"{"Records":[]}"#), (vec![], None));
        assert_eq!(collect(br#" { "Records" : [ ] } "#), (vec![], None));
    }

    #[test]
    fn reports_what_is_wrong_and_where() {
        let (_, err) = collect(b"");
        assert_eq!(err.as_deref(), Some("the object is empty (0 bytes)"));
        let (_, err) = collect(b"[1,2]");
        assert_eq!(err.as_deref(), Some("not a CloudTrail log file: expected '{', found '[' at byte 0"));
        let (records, err) = collect(br#"{"Records":[{"eventID":"a"},{"eventID":"b","#);
        assert_eq!(records.len(), 1, "the record before the break is still read");
        assert!(err.unwrap().contains("truncated"));
        let (_, err) = collect(br#"{"Records":{"eventID":"a"}}"#);
        assert!(err.unwrap().contains("Records must be an array"));
        let (records, err) = collect(br#"{"Records":[{"eventID":"a"}]} trailing"#);
        assert_eq!(records.len(), 1);
        assert!(err.unwrap().contains("unexpected data after the log file object at byte 30"));
    }

    #[test]
    fn records_larger_than_a_chunk_are_read_whole() {
        let big = "x".repeat(CHUNK * 3 + 17);
        let input = format!(r#"{{"Records":[{{"a":"{big}"}},{{"b":"\"{big}"}}]}}"#);
        let (records, err) = collect(input.as_bytes());
        assert_eq!(err, None);
        assert_eq!(records.len(), 2);
        assert_eq!(records[1].len(), big.len() + 10);
    }

    #[test]
    fn decode_passes_plain_json_and_gunzips_gzip() {
        use std::io::Write;
        let json = br#"{"Records":[{"eventID":"a"}]}"#;
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(json).unwrap();
        let gz = gz.finish().unwrap();
        for input in [&json[..], &gz[..]] {
            let mut out = Vec::new();
            decode(input).unwrap().read_to_end(&mut out).unwrap();
            assert_eq!(out, json);
        }
    }
}
