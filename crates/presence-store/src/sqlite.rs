//! The default backend: one SQLite database file in the data directory.
//!
//! Why this shape: SQLite in WAL mode, and a write returns only after the WAL was fsynced following its
//! commit (group commit, see [`Durability`]), which is exactly the acknowledgement rule of the store. Writes go through one
//! connection behind a mutex, which both serialises updates (atomic read-modify-write per user, and for
//! all users at once) and matches SQLite's single-writer model. Reads use a small pool of other
//! connections so that they run concurrently with a write in progress and with each other (WAL readers
//! never block on the writer), and so that a caller can ask for a read only if a connection is free now.

use std::collections::HashMap;
use std::fs::File;
use std::hash::BuildHasher;
use std::path::{Path, PathBuf};
use std::sync::mpsc::RecvTimeoutError;
use std::sync::{Condvar, Mutex, MutexGuard, OnceLock, RwLock};

use foldhash::fast::RandomState;
use rusqlite::{params, Connection, OptionalExtension};

use crate::codec::{decode, encode};
use crate::{
    Effects, NewNotification, PresenceStore, QueuedNotification, StoreError, StoreStats, StoredSubscription, UpdateFn,
    UpdateManyFn, UserFacts, UserKey,
};

/// The database file's name inside the data directory.
pub const DATABASE_FILE: &str = "presence.sqlite3";

/// The embedded, durable presence store.
#[derive(Debug)]
pub struct SqliteStore {
    writer: Mutex<Connection>,
    /// Reader connections: a request takes whichever is free.
    readers: Vec<Mutex<Connection>>,
    /// Every record read or written so far, decoded (`None`: known to be absent).
    cache: Cache,
    /// Group commit: makes committed transactions durable, many at a time.
    durability: Durability,
    /// Dropping it stops the checkpoint thread.
    _checkpoints: std::sync::mpsc::Sender<()>,
}

/// How often the checkpoint thread copies the WAL into the database file.
const CHECKPOINT_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);

/// Starts the thread that checkpoints the WAL every [`CHECKPOINT_INTERVAL`] (and once more when the store
/// is dropped), on a connection of its own. A `PASSIVE` checkpoint never blocks the writer or readers.
fn start_checkpoints(path: &Path) -> Result<std::sync::mpsc::Sender<()>, StoreError> {
    let connection = Connection::open(path)?;
    configure(&connection)?;
    let (stop, stopped) = std::sync::mpsc::channel::<()>();
    std::thread::Builder::new().name("presence-checkpoint".into()).spawn(move || loop {
        let last = matches!(stopped.recv_timeout(CHECKPOINT_INTERVAL), Err(RecvTimeoutError::Disconnected));
        // A checkpoint that fails (the database busy, say) leaves the WAL as it is; the next one retries.
        let _ = checkpoint(&connection);
        if last {
            return;
        }
    })?;
    Ok(stop)
}

/// Copies what it can of the WAL into the database file: (frames in the WAL, frames copied).
fn checkpoint(connection: &Connection) -> Result<(i64, i64), rusqlite::Error> {
    connection.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |row| Ok((row.get(1)?, row.get(2)?)))
}

/// Group commit. The writer commits with `synchronous = NORMAL`, so `COMMIT` only writes the WAL (a
/// process crash loses nothing: the data is in the operating system's cache); each writer then waits,
/// outside the writer lock, until the WAL file has been fsynced after its commit. One fsync covers every
/// commit made before it started, so writers arriving while an fsync runs share the next one. Only then
/// does a write return, which is the durability `synchronous = FULL` gives (a power loss loses nothing
/// acknowledged), at one fsync per batch instead of one per transaction.
#[derive(Debug)]
struct Durability {
    state: Mutex<SyncState>,
    synced: Condvar,
    wal_path: PathBuf,
    wal: OnceLock<File>,
}

#[derive(Debug, Default)]
struct SyncState {
    /// Commits so far (the last ticket handed out).
    committed: u64,
    /// Commits known to be durable.
    synced: u64,
    /// An fsync is running.
    syncing: bool,
    /// Fsyncs done.
    syncs: u64,
}

impl Durability {
    /// A ticket for the commit that just returned (call with the writer lock held).
    fn committed(&self) -> u64 {
        let mut state = self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        state.committed += 1;
        state.committed
    }

    /// Returns once commit `ticket` is durable: fsyncs the WAL, or waits for the fsync in progress and
    /// then, if that one started before this commit, for the next.
    fn wait(&self, ticket: u64) -> Result<(), StoreError> {
        let mut state = self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        loop {
            if state.synced >= ticket {
                return Ok(());
            }
            if state.syncing {
                state = self.synced.wait(state).unwrap_or_else(|poisoned| poisoned.into_inner());
                continue;
            }
            state.syncing = true;
            let target = state.committed;
            drop(state);
            let result = self.sync();
            state = self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            state.syncing = false;
            if result.is_ok() {
                state.synced = state.synced.max(target);
                state.syncs += 1;
            }
            self.synced.notify_all();
            result?;
        }
    }

    fn sync(&self) -> Result<(), StoreError> {
        let wal = match self.wal.get() {
            Some(wal) => wal,
            None => {
                let opened = File::open(&self.wal_path)?;
                self.wal.get_or_init(|| opened)
            }
        };
        wal.sync_data()?;
        Ok(())
    }
}

/// A user's stored record: the facts and the timer.
type Record = (UserFacts, Option<i64>);

/// One shard of the cache.
type Shard = RwLock<HashMap<UserKey, Option<Record>, RandomState>>;

/// The records this process has seen, in shards. This process is the database's only writer, and it
/// updates an entry only after the transaction that wrote it committed, so entries never go stale; reads
/// of a cached user touch no database at all. Callers pass only users of the directory, which bounds it.
#[derive(Debug)]
struct Cache {
    shards: Box<[Shard]>,
    hasher: RandomState,
}

const CACHE_SHARDS: usize = 64;

impl Cache {
    fn new() -> Self {
        Cache { shards: (0..CACHE_SHARDS).map(|_| RwLock::default()).collect(), hasher: RandomState::default() }
    }

    fn shard(&self, key: &UserKey) -> &Shard {
        &self.shards[(self.hasher.hash_one(key) % CACHE_SHARDS as u64) as usize]
    }

    /// The cached record (`Some(None)`: known absent), or `None` when not cached.
    fn get(&self, key: &UserKey) -> Option<Option<Record>> {
        self.shard(key).read().unwrap_or_else(|poisoned| poisoned.into_inner()).get(key).cloned()
    }

    /// Remembers what a read found, unless a write got there first.
    fn fill(&self, key: &UserKey, record: Option<Record>) {
        let mut shard = self.shard(key).write().unwrap_or_else(|poisoned| poisoned.into_inner());
        shard.entry(key.clone()).or_insert(record);
    }

    /// Remembers what a committed write stored.
    fn set(&self, key: UserKey, record: Record) {
        self.shard(&key).write().unwrap_or_else(|poisoned| poisoned.into_inner()).insert(key, Some(record));
    }
}

/// Reader connections kept open.
const READERS: usize = 4;

/// The writer connection's page cache, in SQLite's negative (KiB) form.
const WRITER_CACHE_KIB: i64 = -64 * 1024;

fn configure(connection: &Connection) -> Result<(), rusqlite::Error> {
    connection.busy_timeout(std::time::Duration::from_secs(10))?;
    connection.pragma_update(None, "journal_mode", "WAL")?;
    connection.pragma_update(None, "synchronous", "NORMAL")?;
    Ok(())
}

impl SqliteStore {
    /// Opens (creating if needed) the store in `data_dir`.
    pub fn open(data_dir: &Path) -> Result<Self, StoreError> {
        let path = data_dir.join(DATABASE_FILE);
        let writer = Connection::open(&path)?;
        configure(&writer)?;
        // Every write reads its user's row and index pages: keep them in the writer's page cache (64 MiB)
        // rather than read them back from the file system each time.
        writer.pragma_update(None, "cache_size", WRITER_CACHE_KIB)?;
        // Checkpoints (copying the WAL into the database file, and an fsync of it) run on a thread of
        // their own, not inside whichever write happens to cross the WAL's size limit.
        writer.pragma_update(None, "wal_autocheckpoint", 0)?;
        writer.execute_batch(
            "CREATE TABLE IF NOT EXISTS presence (
                 tenant_id TEXT NOT NULL,
                 user_id TEXT NOT NULL,
                 facts TEXT NOT NULL,
                 PRIMARY KEY (tenant_id, user_id)
             ) WITHOUT ROWID;",
        )?;
        // Added with change notifications: the user's timer. Older files gain the column (no timers).
        let has_due: bool =
            writer.prepare("SELECT 1 FROM pragma_table_info('presence') WHERE name = 'due_at'")?.exists([])?;
        if !has_due {
            // Every existing user is due at once, so the timers' first pass computes each one's next
            // change (there are no subscriptions yet, so nothing is sent).
            writer.execute_batch("ALTER TABLE presence ADD COLUMN due_at INTEGER; UPDATE presence SET due_at = 0;")?;
        }
        writer.execute_batch(
            "CREATE INDEX IF NOT EXISTS presence_due ON presence (due_at) WHERE due_at IS NOT NULL;
             CREATE TABLE IF NOT EXISTS subscriptions (
                 id TEXT PRIMARY KEY,
                 tenant_id TEXT NOT NULL,
                 body TEXT NOT NULL
             ) WITHOUT ROWID;
             CREATE TABLE IF NOT EXISTS outbox (
                 id INTEGER PRIMARY KEY AUTOINCREMENT,
                 queue TEXT NOT NULL,
                 url TEXT NOT NULL,
                 created_at INTEGER NOT NULL,
                 item TEXT NOT NULL,
                 resource_data TEXT
             );
             CREATE INDEX IF NOT EXISTS outbox_queue ON outbox (queue, id);",
        )?;
        let readers = (0..READERS)
            .map(|_| {
                let reader = Connection::open(&path)?;
                configure(&reader)?;
                Ok(Mutex::new(reader))
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        let durability = Durability {
            state: Mutex::default(),
            synced: Condvar::new(),
            wal_path: {
                let mut wal = path.clone().into_os_string();
                wal.push("-wal");
                PathBuf::from(wal)
            },
            wal: OnceLock::new(),
        };
        let checkpoints = start_checkpoints(&path)?;
        Ok(SqliteStore {
            writer: Mutex::new(writer),
            readers,
            cache: Cache::new(),
            durability,
            _checkpoints: checkpoints,
        })
    }

    /// The writer's `journal_mode` and `synchronous` settings (WAL, NORMAL: durability comes from the
    /// store's own fsync of the WAL, see [`SqliteStore::commit_stats`]).
    pub fn durability_settings(&self) -> Result<(String, i64), StoreError> {
        let writer = lock(&self.writer)?;
        let journal: String = writer.query_row("PRAGMA journal_mode", [], |row| row.get(0))?;
        let synchronous: i64 = writer.query_row("PRAGMA synchronous", [], |row| row.get(0))?;
        Ok((journal, synchronous))
    }

    /// Checkpoints the WAL now, as the checkpoint thread does: (frames in the WAL, frames copied).
    pub fn checkpoint(&self) -> Result<(i64, i64), StoreError> {
        Ok(checkpoint(&*self.reader()?)?)
    }

    /// The writer's automatic checkpoint threshold, in pages (0: off; the checkpoint thread does it).
    pub fn wal_autocheckpoint(&self) -> Result<i64, StoreError> {
        Ok(lock(&self.writer)?.query_row("PRAGMA wal_autocheckpoint", [], |row| row.get(0))?)
    }

    /// Group commit so far: (commits, commits known durable, fsyncs of the WAL).
    pub fn commit_stats(&self) -> (u64, u64, u64) {
        let state = self.durability.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        (state.committed, state.synced, state.syncs)
    }

    /// The number of users with a stored record.
    pub fn user_count(&self) -> Result<u64, StoreError> {
        let reader = self.reader()?;
        Ok(reader.query_row("SELECT COUNT(*) FROM presence", [], |row| row.get::<_, i64>(0))? as u64)
    }
}

impl SqliteStore {
    /// A free reader connection, else (all busy) the first one, waited for.
    fn reader(&self) -> Result<MutexGuard<'_, Connection>, StoreError> {
        match self.try_reader() {
            Some(reader) => Ok(reader),
            None => lock(&self.readers[0]),
        }
    }

    /// A free reader connection, if any.
    fn try_reader(&self) -> Option<MutexGuard<'_, Connection>> {
        self.readers.iter().find_map(|reader| reader.try_lock().ok())
    }
}

fn lock(mutex: &Mutex<Connection>) -> Result<MutexGuard<'_, Connection>, StoreError> {
    mutex.lock().map_err(|_| StoreError::Poisoned)
}

fn read_record(connection: &Connection, key: &UserKey) -> Result<Option<(UserFacts, Option<i64>)>, StoreError> {
    let row: Option<(String, Option<i64>)> = connection
        .prepare_cached("SELECT facts, due_at FROM presence WHERE tenant_id = ?1 AND user_id = ?2")?
        .query_row(params![key.tenant_id, key.user_id], |row| Ok((row.get(0)?, row.get(1)?)))
        .optional()?;
    row.map(|(text, due_at)| {
        decode(&text).map(|facts| (facts, due_at)).map_err(|reason| StoreError::Corrupt {
            tenant_id: key.tenant_id.clone(),
            user_id: key.user_id.clone(),
            reason,
        })
    })
    .transpose()
}

impl SqliteStore {
    /// The cached facts of `keys`, with the positions of those not cached.
    fn cached(&self, keys: &[UserKey]) -> (Vec<Option<UserFacts>>, Vec<usize>) {
        let mut facts = Vec::with_capacity(keys.len());
        let mut missing = Vec::new();
        for (position, key) in keys.iter().enumerate() {
            match self.cache.get(key) {
                Some(record) => facts.push(record.map(|(facts, _)| facts)),
                None => {
                    facts.push(None);
                    missing.push(position);
                }
            }
        }
        (facts, missing)
    }

    /// Reads the `missing` positions of `keys` from the database into `facts` and the cache.
    fn read_missing(
        &self,
        reader: &Connection,
        keys: &[UserKey],
        missing: &[usize],
        facts: &mut [Option<UserFacts>],
    ) -> Result<(), StoreError> {
        let transaction = reader.unchecked_transaction()?;
        for &position in missing {
            let record = read_record(&transaction, &keys[position])?;
            facts[position] = record.as_ref().map(|(facts, _)| facts.clone());
            self.cache.fill(&keys[position], record);
        }
        transaction.finish()?;
        Ok(())
    }
}

/// Reads, applies and writes one user inside `transaction`; true when something was written.
/// Returns the record written, for the cache once the transaction committed.
fn update_in(
    cache: &Cache,
    transaction: &Connection,
    key: &UserKey,
    apply: &mut dyn FnMut(&mut UserFacts, Option<i64>) -> Option<Effects>,
) -> Result<Option<Record>, StoreError> {
    let record = match cache.get(key) {
        Some(record) => record,
        None => read_record(transaction, key)?,
    };
    let (mut facts, due_at) = record.unwrap_or_default();
    let Some(effects) = apply(&mut facts, due_at) else {
        return Ok(None);
    };
    if effects.timer_only {
        transaction
            .prepare_cached("UPDATE presence SET due_at = ?3 WHERE tenant_id = ?1 AND user_id = ?2")?
            .execute(params![key.tenant_id, key.user_id, effects.due_at])?;
    } else {
        transaction
            .prepare_cached(
                "INSERT INTO presence (tenant_id, user_id, facts, due_at) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (tenant_id, user_id) DO UPDATE SET facts = excluded.facts, due_at = excluded.due_at",
            )?
            .execute(params![key.tenant_id, key.user_id, encode(&facts), effects.due_at])?;
    }
    insert_notifications(transaction, &effects.notifications)?;
    Ok(Some((facts, effects.due_at)))
}

fn insert_notifications(connection: &Connection, notifications: &[NewNotification]) -> Result<(), StoreError> {
    if notifications.is_empty() {
        return Ok(());
    }
    let mut insert = connection.prepare_cached(
        "INSERT INTO outbox (queue, url, created_at, item, resource_data) VALUES (?1, ?2, ?3, ?4, ?5)",
    )?;
    for notification in notifications {
        insert.execute(params![
            notification.queue,
            notification.url,
            notification.created_at,
            notification.item,
            notification.resource_data
        ])?;
    }
    Ok(())
}

impl SqliteStore {
    /// Runs `work` in a write transaction, commits it, and returns once the commit is durable.
    fn write<R>(&self, work: impl FnOnce(&Connection) -> Result<R, StoreError>) -> Result<R, StoreError> {
        let (result, ticket) = {
            let mut writer = lock(&self.writer)?;
            let transaction = writer.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let result = work(&transaction)?;
            transaction.commit()?;
            (result, self.durability.committed())
        };
        self.durability.wait(ticket)?;
        Ok(result)
    }

    /// `update_many` up to its commit: the skipped keys and the commit's ticket (if anything was written).
    fn update_many_undurable(
        &self,
        keys: &[UserKey],
        apply: &mut UpdateManyFn<'_>,
    ) -> Result<(Vec<UserKey>, Option<u64>), StoreError> {
        let mut writer = lock(&self.writer)?;
        let transaction = writer.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let mut written = Vec::new();
        let mut skipped = Vec::new();
        let mut cleared = false;
        for key in keys {
            match update_in(&self.cache, &transaction, key, &mut |facts, due_at| apply(key, facts, due_at)) {
                Ok(Some(record)) => written.push((key.clone(), record)),
                Ok(None) => {}
                Err(StoreError::Corrupt { .. }) => {
                    transaction
                        .prepare_cached("UPDATE presence SET due_at = NULL WHERE tenant_id = ?1 AND user_id = ?2")?
                        .execute(params![key.tenant_id, key.user_id])?;
                    cleared = true;
                    skipped.push(key.clone());
                }
                Err(error) => return Err(error),
            }
        }
        if written.is_empty() && !cleared {
            return Ok((skipped, None));
        }
        transaction.commit()?;
        for (key, record) in written {
            self.cache.set(key, record);
        }
        Ok((skipped, Some(self.durability.committed())))
    }
}

impl PresenceStore for SqliteStore {
    fn get(&self, key: &UserKey) -> Result<Option<UserFacts>, StoreError> {
        Ok(self.get_many(std::slice::from_ref(key))?.pop().flatten())
    }

    fn get_many(&self, keys: &[UserKey]) -> Result<Vec<Option<UserFacts>>, StoreError> {
        let (mut facts, missing) = self.cached(keys);
        if !missing.is_empty() {
            let reader = self.reader()?;
            self.read_missing(&reader, keys, &missing, &mut facts)?;
        }
        Ok(facts)
    }

    fn try_get_many(&self, keys: &[UserKey]) -> Option<Result<Vec<Option<UserFacts>>, StoreError>> {
        let (mut facts, missing) = self.cached(keys);
        if missing.is_empty() {
            return Some(Ok(facts));
        }
        let reader = self.try_reader()?;
        Some(self.read_missing(&reader, keys, &missing, &mut facts).map(|()| facts))
    }

    fn update(&self, key: &UserKey, apply: &mut UpdateFn<'_>) -> Result<bool, StoreError> {
        let ticket = {
            let mut writer = lock(&self.writer)?;
            let transaction = writer.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let Some(record) = update_in(&self.cache, &transaction, key, apply)? else {
                return Ok(false);
            };
            transaction.commit()?;
            self.cache.set(key.clone(), record);
            self.durability.committed()
        };
        self.durability.wait(ticket)?;
        Ok(true)
    }

    fn update_many(&self, keys: &[UserKey], apply: &mut UpdateManyFn<'_>) -> Result<Vec<UserKey>, StoreError> {
        let (skipped, ticket) = self.update_many_undurable(keys, apply)?;
        if let Some(ticket) = ticket {
            self.durability.wait(ticket)?;
        }
        Ok(skipped)
    }

    fn due_users(&self, now: i64, limit: usize) -> Result<Vec<UserKey>, StoreError> {
        let reader = self.reader()?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let mut statement = reader.prepare_cached(
            "SELECT tenant_id, user_id FROM presence WHERE due_at IS NOT NULL AND due_at <= ?1
             ORDER BY due_at LIMIT ?2",
        )?;
        let rows = statement
            .query_map(params![now, limit], |row| Ok(UserKey { tenant_id: row.get(0)?, user_id: row.get(1)? }))?;
        Ok(rows.collect::<Result<Vec<_>, _>>()?)
    }

    fn next_due(&self) -> Result<Option<i64>, StoreError> {
        let reader = self.reader()?;
        Ok(reader.query_row("SELECT MIN(due_at) FROM presence WHERE due_at IS NOT NULL", [], |row| row.get(0))?)
    }

    fn subscriptions(&self) -> Result<Vec<StoredSubscription>, StoreError> {
        let reader = self.reader()?;
        let mut statement = reader.prepare_cached("SELECT id, tenant_id, body FROM subscriptions ORDER BY id")?;
        let rows = statement.query_map([], |row| {
            Ok(StoredSubscription { id: row.get(0)?, tenant_id: row.get(1)?, body: row.get(2)? })
        })?;
        Ok(rows.collect::<Result<Vec<_>, _>>()?)
    }

    fn put_subscription(
        &self,
        subscription: &StoredSubscription,
        notifications: &[NewNotification],
    ) -> Result<(), StoreError> {
        self.write(|transaction| {
            transaction
                .prepare_cached(
                    "INSERT INTO subscriptions (id, tenant_id, body) VALUES (?1, ?2, ?3)
                     ON CONFLICT (id) DO UPDATE SET tenant_id = excluded.tenant_id, body = excluded.body",
                )?
                .execute(params![subscription.id, subscription.tenant_id, subscription.body])?;
            insert_notifications(transaction, notifications)
        })
    }

    fn remove_subscription(&self, id: &str, queues: &[&str], farewell: &[NewNotification]) -> Result<bool, StoreError> {
        self.write(|transaction| {
            let existed = transaction.prepare_cached("DELETE FROM subscriptions WHERE id = ?1")?.execute([id])? > 0;
            for queue in queues {
                transaction.prepare_cached("DELETE FROM outbox WHERE queue = ?1")?.execute([queue])?;
            }
            insert_notifications(transaction, farewell)?;
            Ok(existed)
        })
    }

    fn enqueue(&self, notifications: &[NewNotification]) -> Result<(), StoreError> {
        self.write(|transaction| insert_notifications(transaction, notifications))
    }

    fn queue_head(&self, queue: &str, limit: usize) -> Result<Vec<QueuedNotification>, StoreError> {
        let reader = self.reader()?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let mut statement = reader.prepare_cached(
            "SELECT id, url, created_at, item, resource_data FROM outbox WHERE queue = ?1 ORDER BY id LIMIT ?2",
        )?;
        let rows = statement.query_map(params![queue, limit], |row| {
            Ok(QueuedNotification {
                id: row.get(0)?,
                url: row.get(1)?,
                created_at: row.get(2)?,
                item: row.get(3)?,
                resource_data: row.get(4)?,
            })
        })?;
        Ok(rows.collect::<Result<Vec<_>, _>>()?)
    }

    fn acknowledge(&self, ids: &[i64], notifications: &[NewNotification]) -> Result<(), StoreError> {
        self.write(|transaction| {
            let mut delete = transaction.prepare_cached("DELETE FROM outbox WHERE id = ?1")?;
            for id in ids {
                delete.execute([id])?;
            }
            insert_notifications(transaction, notifications)
        })
    }

    fn queue_lengths(&self) -> Result<Vec<(String, u64)>, StoreError> {
        let reader = self.reader()?;
        let mut statement =
            reader.prepare_cached("SELECT queue, COUNT(*) FROM outbox GROUP BY queue ORDER BY queue")?;
        let rows = statement.query_map([], |row| Ok((row.get::<_, String>(0)?, row.get::<_, i64>(1)? as u64)))?;
        Ok(rows.collect::<Result<Vec<_>, _>>()?)
    }

    fn stats(&self, now: i64) -> Result<StoreStats, StoreError> {
        let reader = self.reader()?;
        let users: i64 = reader.query_row("SELECT COUNT(*) FROM presence", [], |row| row.get(0))?;
        let pending: i64 =
            reader.query_row("SELECT COUNT(*) FROM presence WHERE due_at IS NOT NULL", [], |row| row.get(0))?;
        // Sessions are kept in each record's JSON until the user's next write; count those not expired.
        let live: i64 = reader.query_row(
            "SELECT COUNT(*) FROM (SELECT facts FROM presence WHERE json_valid(facts)) AS valid,
                 json_each(valid.facts, '$.sessions') AS session
             WHERE json_extract(session.value, '$.expires') > ?1",
            [now],
            |row| row.get(0),
        )?;
        let count = |value: i64| u64::try_from(value).unwrap_or(0);
        Ok(StoreStats { users: count(users), live_sessions: count(live), pending_timers: count(pending) })
    }

    fn flush(&self) -> Result<(), StoreError> {
        // Copies the whole WAL into the database file and empties it, so the next start reads no WAL.
        let writer = lock(&self.writer)?;
        let busy: i64 = writer.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |row| row.get(0))?;
        if busy != 0 {
            // A reader still holds the WAL: what is acknowledged is durable in it, and the next start
            // checkpoints it.
            return Err(StoreError::Database(rusqlite::Error::SqliteFailure(
                rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_BUSY),
                Some("the WAL could not be fully checkpointed: a reader is still open".into()),
            )));
        }
        Ok(())
    }

    fn ping(&self) -> Result<(), StoreError> {
        self.reader()?.query_row("SELECT 1", [], |_| Ok(()))?;
        Ok(())
    }
}
