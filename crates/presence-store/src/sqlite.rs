//! The default backend: one SQLite database file in the data directory.
//!
//! Why this shape: SQLite in WAL mode with `synchronous = FULL` makes a committed transaction durable
//! before `COMMIT` returns, which is exactly the acknowledgement rule of the store. Writes go through one
//! connection behind a mutex, which both serialises updates (atomic read-modify-write per user, and for
//! all users at once) and matches SQLite's single-writer model. Reads use a second connection so that they
//! run concurrently with a write in progress (WAL readers never block on the writer).

use std::path::Path;
use std::sync::{Mutex, MutexGuard};

use rusqlite::{params, Connection, OptionalExtension};

use crate::codec::{decode, encode};
use crate::{PresenceStore, StoreError, UserFacts, UserKey};

/// The database file's name inside the data directory.
pub const DATABASE_FILE: &str = "presence.sqlite3";

/// The embedded, durable presence store.
#[derive(Debug)]
pub struct SqliteStore {
    writer: Mutex<Connection>,
    reader: Mutex<Connection>,
}

fn configure(connection: &Connection) -> Result<(), rusqlite::Error> {
    connection.busy_timeout(std::time::Duration::from_secs(10))?;
    connection.pragma_update(None, "journal_mode", "WAL")?;
    connection.pragma_update(None, "synchronous", "FULL")?;
    Ok(())
}

impl SqliteStore {
    /// Opens (creating if needed) the store in `data_dir`.
    pub fn open(data_dir: &Path) -> Result<Self, StoreError> {
        let path = data_dir.join(DATABASE_FILE);
        let writer = Connection::open(&path)?;
        configure(&writer)?;
        writer.execute_batch(
            "CREATE TABLE IF NOT EXISTS presence (
                 tenant_id TEXT NOT NULL,
                 user_id TEXT NOT NULL,
                 facts TEXT NOT NULL,
                 PRIMARY KEY (tenant_id, user_id)
             ) WITHOUT ROWID;",
        )?;
        let reader = Connection::open(&path)?;
        configure(&reader)?;
        Ok(SqliteStore { writer: Mutex::new(writer), reader: Mutex::new(reader) })
    }

    /// The writer's `journal_mode` and `synchronous` settings, which make commits durable.
    pub fn durability_settings(&self) -> Result<(String, i64), StoreError> {
        let writer = lock(&self.writer)?;
        let journal: String = writer.query_row("PRAGMA journal_mode", [], |row| row.get(0))?;
        let synchronous: i64 = writer.query_row("PRAGMA synchronous", [], |row| row.get(0))?;
        Ok((journal, synchronous))
    }

    /// The number of users with a stored record.
    pub fn user_count(&self) -> Result<u64, StoreError> {
        let reader = lock(&self.reader)?;
        Ok(reader.query_row("SELECT COUNT(*) FROM presence", [], |row| row.get::<_, i64>(0))? as u64)
    }
}

fn lock(mutex: &Mutex<Connection>) -> Result<MutexGuard<'_, Connection>, StoreError> {
    mutex.lock().map_err(|_| StoreError::Poisoned)
}

fn read(connection: &Connection, key: &UserKey) -> Result<Option<UserFacts>, StoreError> {
    let text: Option<String> = connection
        .prepare_cached("SELECT facts FROM presence WHERE tenant_id = ?1 AND user_id = ?2")?
        .query_row(params![key.tenant_id, key.user_id], |row| row.get(0))
        .optional()?;
    text.map(|text| {
        decode(&text).map_err(|reason| StoreError::Corrupt {
            tenant_id: key.tenant_id.clone(),
            user_id: key.user_id.clone(),
            reason,
        })
    })
    .transpose()
}

impl PresenceStore for SqliteStore {
    fn get(&self, key: &UserKey) -> Result<Option<UserFacts>, StoreError> {
        let reader = lock(&self.reader)?;
        read(&reader, key)
    }

    fn get_many(&self, keys: &[UserKey]) -> Result<Vec<Option<UserFacts>>, StoreError> {
        let reader = lock(&self.reader)?;
        let transaction = reader.unchecked_transaction()?;
        let facts = keys.iter().map(|key| read(&transaction, key)).collect::<Result<Vec<_>, _>>()?;
        transaction.finish()?;
        Ok(facts)
    }

    fn update(&self, key: &UserKey, apply: &mut dyn FnMut(&mut UserFacts) -> bool) -> Result<bool, StoreError> {
        let mut writer = lock(&self.writer)?;
        let transaction = writer.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let mut facts = read(&transaction, key)?.unwrap_or_default();
        if !apply(&mut facts) {
            return Ok(false);
        }
        transaction
            .prepare_cached(
                "INSERT INTO presence (tenant_id, user_id, facts) VALUES (?1, ?2, ?3)
                 ON CONFLICT (tenant_id, user_id) DO UPDATE SET facts = excluded.facts",
            )?
            .execute(params![key.tenant_id, key.user_id, encode(&facts)])?;
        transaction.commit()?;
        Ok(true)
    }
}
