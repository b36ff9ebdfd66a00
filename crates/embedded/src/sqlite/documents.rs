//! JSON documents that many events share (actors, origins), stored once in
//! the `documents` table and pointed at by id.
//!
//! A document is found in the table by a 64-bit FNV-1a hash of its JSON, and
//! the JSON is compared whole, so two documents that share a hash are both
//! kept. Most lookups never reach the table: the writer remembers the values
//! it stored lately ([`Recent`]), found by a cheap hash of a few fields
//! ([`Document::key`]) and compared whole. The events of a session share
//! their actor and origin, and a session's events arrive over many batches.
//! Documents are never changed or deleted, so a remembered id stays right;
//! what a transaction stores is remembered only once it commits.

use std::collections::HashMap;

use rusqlite::{params, Connection, OptionalExtension};
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::BadValue;

const FIND: &str = "SELECT id, json FROM documents WHERE hash = ?1";
const INSERT: &str = "INSERT INTO documents (hash, json) VALUES (?1, ?2)";
const GET: &str = "SELECT json FROM documents WHERE id = ?1";

/// Values remembered per generation of [`Recent`].
const RECENT_CAPACITY: usize = 4096;

/// A kind of value stored as documents.
pub(super) trait Document: PartialEq + Clone + Serialize + DeserializeOwned {
    /// What is stored of the value: all of it, or the part no column holds.
    fn part(&self) -> Self {
        self.clone()
    }

    /// A cheap hash of the fields that tell values apart. Equal values have
    /// equal keys; values with equal keys are still compared whole.
    fn key(&self) -> u64;
}

/// FNV-1a, 64 bits: stable across builds and platforms, unlike std's hasher.
fn fnv1a(bytes: &[u8]) -> i64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        hash ^= u64::from(*b);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash as i64 // the same 64 bits, as SQLite stores integers
}

/// A value as JSON; an encoding failure as a SQLite parameter error.
pub(super) fn to_json<T: Serialize>(value: &T) -> rusqlite::Result<String> {
    serde_json::to_string(value).map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))
}

/// The id of a document with this JSON, stored now if it was not.
fn store(conn: &Connection, json: &str) -> rusqlite::Result<i64> {
    let hash = fnv1a(json.as_bytes());
    {
        let mut find = conn.prepare_cached(FIND)?;
        let mut rows = find.query([hash])?;
        while let Some(row) = rows.next()? {
            if row.get_ref(1)?.as_str()? == json {
                return row.get(0);
            }
        }
    }
    conn.prepare_cached(INSERT)?.execute(params![hash, json])?;
    Ok(conn.last_insert_rowid())
}

/// The JSON of a stored document.
fn load(conn: &Connection, id: i64) -> rusqlite::Result<Option<String>> {
    conn.prepare_cached(GET)?.query_row([id], |row| row.get(0)).optional()
}

/// Values by key, with the id of their document.
type Seen<T> = HashMap<u64, (T, i64)>;

/// The values the writer stored lately, kept across writes: two generations
/// of [`RECENT_CAPACITY`]; when the newer is full it becomes the older, and
/// the older is forgotten.
pub(super) struct Recent<T> {
    newer: Seen<T>,
    older: Seen<T>,
}

impl<T: Document> Default for Recent<T> {
    fn default() -> Self {
        Recent { newer: HashMap::new(), older: HashMap::new() }
    }
}

impl<T: Document> Recent<T> {
    fn find(&self, key: u64, value: &T) -> Option<i64> {
        [&self.newer, &self.older].into_iter().find_map(|seen| seen.get(&key).filter(|(v, _)| v == value).map(|(_, id)| *id))
    }

    /// Remembers what a committed transaction stored.
    pub(super) fn remember(&mut self, stored: Seen<T>) {
        for (key, entry) in stored {
            if self.newer.len() >= RECENT_CAPACITY {
                self.older = std::mem::take(&mut self.newer);
            }
            self.newer.insert(key, entry);
        }
    }
}

/// What the writer remembers of the documents it stored.
#[derive(Default)]
pub(super) struct DocumentCache {
    pub(super) actors: Recent<trailwatch_core::identity::Caller>,
    pub(super) origins: Recent<trailwatch_core::identity::Origin>,
}

/// The documents of one write transaction. What it stores is handed back by
/// [`Documents::stored`], to remember once the transaction commits.
pub(super) struct Documents<'c, T> {
    conn: &'c Connection,
    recent: &'c Recent<T>,
    stored: Seen<T>,
}

impl<'c, T: Document> Documents<'c, T> {
    pub(super) fn new(conn: &'c Connection, recent: &'c Recent<T>) -> Self {
        Documents { conn, recent, stored: HashMap::new() }
    }

    /// The id of the document holding `value` (its part), stored if it is new.
    pub(super) fn id(&mut self, value: &T) -> rusqlite::Result<i64> {
        let key = value.key();
        if let Some(id) = self.recent.find(key, value) {
            return Ok(id);
        }
        if let Some((_, id)) = self.stored.get(&key).filter(|(v, _)| v == value) {
            return Ok(*id);
        }
        let id = store(self.conn, &to_json(&value.part())?)?;
        self.stored.insert(key, (value.clone(), id));
        Ok(id)
    }

    /// What this transaction stored (or found in the table).
    pub(super) fn stored(self) -> Seen<T> {
        self.stored
    }
}

/// Documents read back for one read, each parsed once however many events
/// point at it.
pub(super) struct Loaded<T> {
    column: &'static str,
    parsed: HashMap<i64, T>,
}

impl<T: DeserializeOwned + Clone> Loaded<T> {
    /// `column` names the pointing column, for errors.
    pub(super) fn new(column: &'static str) -> Self {
        Loaded { column, parsed: HashMap::new() }
    }

    /// The value of document `id`.
    pub(super) fn get(&mut self, conn: &Connection, id: i64) -> rusqlite::Result<T> {
        if let Some(value) = self.parsed.get(&id) {
            return Ok(value.clone());
        }
        let bad =
            |message: String| rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, Box::new(BadValue { column: self.column, message }));
        let json = load(conn, id)?.ok_or_else(|| bad(format!("document {id} does not exist")))?;
        let value: T = serde_json::from_str(&json).map_err(|e| bad(format!("document {id}: {e}")))?;
        self.parsed.insert(id, value.clone());
        Ok(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A test document: stored in lower case, keyed by length.
    #[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
    struct Name(String);

    impl Document for Name {
        fn part(&self) -> Self {
            Name(self.0.to_lowercase())
        }

        fn key(&self) -> u64 {
            self.0.len() as u64
        }
    }

    fn database() -> Connection {
        let conn = Connection::open_in_memory().expect("memory database");
        conn.execute_batch(super::super::schema::MIGRATIONS.join("\n").as_str()).expect("schema");
        conn
    }

    fn name(s: &str) -> Name {
        Name(s.to_owned())
    }

    #[test]
    fn the_hash_is_fnv1a() {
        // Reference values of the 64-bit FNV-1a test suite.
        assert_eq!(fnv1a(b"") as u64, 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(b"a") as u64, 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a(b"foobar") as u64, 0x8594_4171_f739_67e8);
    }

    #[test]
    fn values_are_stored_once_by_their_part() {
        let conn = database();
        let recent = Recent::default();
        let mut docs = Documents::new(&conn, &recent);
        let alice = docs.id(&name("Alice")).expect("store");
        assert_eq!(docs.id(&name("Alice")).expect("again"), alice);
        assert_eq!(docs.id(&name("ALICE")).expect("same part"), alice, "values whose stored part is the same share a document");
        let bobby = docs.id(&name("Bobby")).expect("same key, other value");
        assert_ne!(bobby, alice, "values with the same key are compared whole");
        assert_eq!(Documents::new(&conn, &Recent::default()).id(&name("alice")).expect("found"), alice, "found in the table by another write");
        let mut loaded = Loaded::<Name>::new("test");
        assert_eq!(loaded.get(&conn, alice).expect("load"), name("alice"));
    }

    #[test]
    fn a_hash_collision_in_the_table_keeps_both_documents() {
        let conn = database();
        conn.execute(INSERT, params![fnv1a(br#""bob""#), r#""not bob""#]).expect("collision");
        let bob = Documents::new(&conn, &Recent::default()).id(&name("bob")).expect("store");
        assert_eq!(load(&conn, bob).expect("load").as_deref(), Some(r#""bob""#));
    }

    #[test]
    fn only_committed_documents_are_remembered() {
        let mut conn = database();
        let mut recent = Recent::default();
        let tx = conn.transaction().expect("begin");
        let rolled_back = {
            let mut docs = Documents::new(&tx, &recent);
            docs.id(&name("carol")).expect("store");
            docs.stored()
        };
        tx.rollback().expect("rollback");
        drop(rolled_back); // not remembered: its ids are gone with the transaction
        let tx = conn.transaction().expect("begin");
        let (carol, stored) = {
            let mut docs = Documents::new(&tx, &recent);
            (docs.id(&name("carol")).expect("store"), docs.stored())
        };
        tx.commit().expect("commit");
        recent.remember(stored);
        assert_eq!(recent.find(name("carol").key(), &name("carol")), Some(carol));
        assert_eq!(load(&conn, carol).expect("load").as_deref(), Some(r#""carol""#));
    }

    #[test]
    fn recent_values_are_forgotten_two_generations_on() {
        let mut recent = Recent::<Name>::default();
        let entry = |i: usize| (i as u64, (Name(i.to_string()), i as i64));
        recent.remember((0..RECENT_CAPACITY).map(entry).collect());
        recent.remember([entry(RECENT_CAPACITY)].into_iter().collect());
        assert_eq!(recent.find(0, &Name("0".into())), Some(0), "the older generation is still searched");
        recent.remember((RECENT_CAPACITY + 1..2 * RECENT_CAPACITY + 1).map(entry).collect());
        assert_eq!(recent.find(0, &Name("0".into())), None);
        assert_eq!(recent.find(RECENT_CAPACITY as u64, &Name(RECENT_CAPACITY.to_string())), Some(RECENT_CAPACITY as i64));
    }
}
