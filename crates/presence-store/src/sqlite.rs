//! The default backend: one SQLite database file in the data directory, for one process.
//!
//! Why this shape: SQLite in WAL mode, and a write returns only after the WAL was fsynced following its
//! commit (group commit, see [`Durability`]), which is exactly the acknowledgement rule of the store. Writes
//! go through one connection behind a mutex, which both serialises updates (atomic read-modify-write per
//! user, and for all users of a batch at once) and matches SQLite's single-writer model. Reads use a small
//! pool of other connections so that they run concurrently with a write in progress and with each other
//! (WAL readers never block on the writer), and so that a caller can ask for a read only if it can be
//! answered now ([`PresenceStore::get_many_now`]).
//!
//! One process owns the file: the record cache is kept correct by being the only writer. The contract's
//! second steps are therefore immediate: notifications are written to their queues in the user's
//! transaction (so [`PresenceStore::relay`] has nothing to move), and timers and their claims are kept in
//! memory ([`Timers`]), read from the users' `due_at` at start-up. The subscription change log is kept
//! all the same, so the engine above follows it exactly as it would follow a shared backend's.
//!
//! Tables: `presence` (one row per user: the facts as a small versioned JSON document, `due_at` and the
//! record's `version`; no index beside its key, so that a write changes one B-tree page), `subscriptions`
//! (with their owner and version), `subscription_log` (the change log), `outbox` (queued notifications,
//! in order per queue) and `store_meta`.

use std::collections::{BTreeSet, HashMap};
use std::fs::File;
use std::hash::BuildHasher;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU32, Ordering};
use std::sync::mpsc::RecvTimeoutError;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock, RwLock, RwLockReadGuard, RwLockWriteGuard};

use foldhash::fast::RandomState;
use hashbrown::hash_table::{self, HashTable};
use presence_core::UserFacts;
use rusqlite::{params, Connection, OptionalExtension, Transaction};

use crate::codec::{decode, encode};
use crate::{
    DirectoryUser, Effects, FarewellFn, NewNotification, PresenceStore, QueueId, QueueKind, QueuedNotification,
    StoreError, StoreStats, StoredSubscription, SubscriptionChanges, SubscriptionFn, UpdateFn, UpdateManyFn, Updated,
    UserKey, UserRecord,
};

/// A result per user of a many-user update.
type UserResults = Vec<Result<Updated, StoreError>>;

/// The database file's name inside the data directory.
pub const DATABASE_FILE: &str = "presence.sqlite3";

impl From<rusqlite::Error> for StoreError {
    fn from(error: rusqlite::Error) -> Self {
        StoreError::Backend(format!("SQLite: {error}"))
    }
}

impl From<std::io::Error> for StoreError {
    fn from(error: std::io::Error) -> Self {
        StoreError::Backend(format!("cannot make the database durable: {error}"))
    }
}

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
    /// The checkpoint thread, stopped (and waited for) by `close` or when the store is dropped.
    checkpoints: Mutex<Option<Checkpoints>>,
    /// When the WAL is to start again, shared with the checkpoint thread.
    wal_restart: Arc<WalRestart>,
    /// Delivery leases: (holder, until) per queue. In memory: one process owns the file, and a lease need
    /// not outlive it.
    leases: Mutex<HashMap<QueueId, (String, i64)>>,
    /// Every user's timer. Taken with the writer lock held (never the other way round) where a write
    /// changes them, so that they follow the commits in order.
    timers: Mutex<Timers>,
}

/// The checkpoint thread: dropping `stop` ends it after one last checkpoint.
#[derive(Debug)]
struct Checkpoints {
    stop: std::sync::mpsc::Sender<()>,
    thread: std::thread::JoinHandle<()>,
}

impl Checkpoints {
    fn stop(self) {
        drop(self.stop);
        let _ = self.thread.join();
    }
}

impl Drop for SqliteStore {
    fn drop(&mut self) {
        if let Some(checkpoints) = self.checkpoints.get_mut().unwrap_or_else(|poisoned| poisoned.into_inner()).take() {
            checkpoints.stop();
        }
    }
}

/// How often the checkpoint thread copies the WAL into the database file.
const CHECKPOINT_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);

/// WAL frames (pages of about 4 KiB) from which a checkpoint asks the writer to finish it and start the
/// WAL again: 256 MiB of WAL, so that under sustained writes the writer's pause for it (an fsync of the
/// database file) comes every few seconds rather than at every checkpoint.
const WAL_RESTART_FRAMES: i64 = 65_536;

/// At most this many checkpoint passes in a row, each over the frames appended during the one before...
const CATCH_UP_PASSES: usize = 8;

/// ...until one finds fewer new frames than this: the writer copies the rest.
const CAUGHT_UP_FRAMES: i64 = 256;

/// A checkpoint's request that the writer finish it, so that the WAL starts again.
#[derive(Debug)]
struct WalRestart {
    /// Set by a checkpoint that found the WAL at least `frames` long; taken by the writer
    /// ([`SqliteStore::begin`]).
    behind: AtomicBool,
    frames: AtomicI64,
    /// The database file, for the checkpoints' own fsync of it.
    database: File,
}

/// Entries the subscription change log keeps; a follower further behind reads every subscription again.
const SUBSCRIPTION_LOG_ENTRIES: i64 = 1_000;

/// Starts the thread that checkpoints the WAL every [`CHECKPOINT_INTERVAL`] (and once more when the store
/// is dropped), on a connection of its own. A `PASSIVE` checkpoint never blocks the writer or readers.
fn start_checkpoints(path: &Path, wal_restart: Arc<WalRestart>) -> Result<Checkpoints, StoreError> {
    let connection = Connection::open(path)?;
    configure(&connection)?;
    let (stop, stopped) = std::sync::mpsc::channel::<()>();
    let thread = std::thread::Builder::new().name("presence-checkpoint".into()).spawn(move || loop {
        let last = matches!(stopped.recv_timeout(CHECKPOINT_INTERVAL), Err(RecvTimeoutError::Disconnected));
        // A checkpoint that fails (the database busy, say) leaves the WAL as it is; the next one retries.
        let _ = checkpoint(&connection, &wal_restart);
        if last {
            return;
        }
    })?;
    Ok(Checkpoints { stop, thread })
}

/// Copies what it can of the WAL into the database file: (frames in the WAL, frames copied).
///
/// Only a checkpoint that copies every frame lets the next write transaction start the WAL again from its
/// beginning. One that runs beside the writes never does: it copies the frames there when it began (and
/// reports them all copied), but the writer appends more meanwhile, so the WAL would grow without end,
/// each new frame costing the file system a fresh block. So a checkpoint that finds the WAL long sets
/// `wal_restart.behind` whatever it copied, and the writer finishes the copy while no write can add to it.
fn checkpoint(connection: &Connection, wal_restart: &WalRestart) -> Result<(i64, i64), StoreError> {
    let long = wal_restart.frames.load(Ordering::Relaxed);
    let mut pass = checkpoint_pass(connection)?;
    // Each further pass copies what the writer appended during the one before, fewer frames each time, so
    // that what is left to the writer (which holds every write back meanwhile) is little.
    for _ in 1..CATCH_UP_PASSES {
        if pass.0 < long {
            break;
        }
        let next = checkpoint_pass(connection)?;
        let appended = next.0 - pass.0;
        pass = next;
        if appended < CAUGHT_UP_FRAMES {
            break;
        }
    }
    if pass.0 >= long {
        // SQLite syncs the database file only after a pass that copied the very last frame, which none
        // of these did while writes came: sync what they copied now, so that the writer's pass has only
        // its own few pages to wait for.
        wal_restart.database.sync_data()?;
        wal_restart.behind.store(true, Ordering::Relaxed);
    }
    Ok(pass)
}

/// One `PASSIVE` checkpoint: (frames in the WAL, frames copied).
fn checkpoint_pass(connection: &Connection) -> Result<(i64, i64), rusqlite::Error> {
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

/// The users' timers, in memory: the instant each user with a `due_at` can next be claimed (its `due_at`, or
/// the end of a claim's lease), in order. This process is the database's only writer, so it knows every
/// timer: they are read from `due_at` at start-up (every claim then ended, as after a crash), and
/// [`SqliteStore::update_many`] and [`PresenceStore::claim_due`] keep them here instead of in an indexed
/// column, which cost every write a second B-tree page in the WAL. Users are named by their place in the
/// cache ([`SlotId`], 12 bytes instead of a 48-byte key), which holds every user with a timer.
#[derive(Debug, Default)]
struct Timers {
    /// (claimable at, user), soonest first.
    queue: BTreeSet<(i64, SlotId)>,
    /// Each user's entry in `queue`.
    claimable: HashMap<SlotId, i64, RandomState>,
}

impl Timers {
    /// The timers of distinct users.
    fn from_entries(entries: Vec<(i64, SlotId)>) -> Self {
        let claimable = entries.iter().map(|&(at, slot)| (slot, at)).collect();
        Timers { queue: entries.into_iter().collect(), claimable }
    }

    /// Sets a user's claimable instant (`None`: no timer), ending any claim.
    fn set(&mut self, slot: SlotId, at: Option<i64>) {
        let previous = match at {
            Some(at) => self.claimable.insert(slot, at),
            None => self.claimable.remove(&slot),
        };
        if let Some(previous) = previous {
            self.queue.remove(&(previous, slot));
        }
        if let Some(at) = at {
            self.queue.insert((at, slot));
        }
    }

    /// Claims up to `limit` users claimable at `now` or before, soonest first, until `lease_until`.
    fn claim(&mut self, now: i64, lease_until: i64, limit: usize) -> Vec<SlotId> {
        let mut claimed = Vec::new();
        while claimed.len() < limit && self.queue.first().is_some_and(|(at, _)| *at <= now) {
            claimed.extend(self.queue.pop_first().map(|(_, slot)| slot));
        }
        for &slot in &claimed {
            self.claimable.insert(slot, lease_until);
            self.queue.insert((lease_until, slot));
        }
        claimed
    }

    fn next(&self) -> Option<i64> {
        self.queue.first().map(|(at, _)| *at)
    }
}

/// A user's key in the cache. Tenant and user ids are lowercase GUIDs in practice: then the key is their
/// two numbers, hashed and compared without following a pointer to the heap (two cache misses a lookup
/// fewer, and about 70 bytes a user less). Any other spelling keeps its text, so that ids the store
/// tells apart stay apart (boxed, so that the rare text key does not make every entry larger).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum CacheKey {
    Guids(u128, u128),
    Text(Box<UserKey>),
}

/// The number of a GUID spelled the canonical way (36 characters, hyphenated, lowercase): the only
/// spelling that maps back to the same text.
fn canonical_guid(text: &str) -> Option<u128> {
    if text.len() != 36 || text.bytes().any(|byte| byte.is_ascii_uppercase()) {
        return None;
    }
    uuid::Uuid::try_parse(text).ok().map(|guid| guid.as_u128())
}

impl CacheKey {
    fn of(key: &UserKey) -> Self {
        Self::with_tenant(key, canonical_guid(&key.tenant_id))
    }

    /// [`CacheKey::of`] with the tenant id already parsed (`tenant`), as a bulk read parses it once.
    fn with_tenant(key: &UserKey, tenant: Option<u128>) -> Self {
        match (tenant, canonical_guid(&key.user_id)) {
            (Some(tenant), Some(user)) => CacheKey::Guids(tenant, user),
            _ => CacheKey::Text(Box::new(key.clone())),
        }
    }

    /// The key of a user's ids, taking them.
    fn from_ids(tenant_id: String, user_id: String) -> Self {
        match (canonical_guid(&tenant_id), canonical_guid(&user_id)) {
            (Some(tenant), Some(user)) => CacheKey::Guids(tenant, user),
            _ => CacheKey::Text(Box::new(UserKey { tenant_id, user_id })),
        }
    }

    /// The key it was made from.
    fn user_key(&self) -> UserKey {
        match self {
            CacheKey::Guids(tenant, user) => UserKey {
                tenant_id: uuid::Uuid::from_u128(*tenant).hyphenated().to_string(),
                user_id: uuid::Uuid::from_u128(*user).hyphenated().to_string(),
            },
            CacheKey::Text(key) => (**key).clone(),
        }
    }
}

/// Where a user sits in the cache: its shard and its position there (which never change), and the
/// order in which the cache placed it.
///
/// Ordered by that order first, so that users due at the same instant are claimed in the order they were
/// placed: at start-up that is the table's order, by ids, as when the timers were ordered by the keys
/// themselves (a user first seen later comes in the order it was first read or written). Users
/// subscribed to in id order then come to each delivery together; claimed in the shards' order (by hash),
/// each batch of timers spread over every subscription, and a burst of 100,000 took three to nine times
/// as many POSTs (scale run, issue 15).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct SlotId {
    placed: u32,
    shard: u32,
    position: u32,
}

/// What the cache holds of a user.
#[derive(Debug)]
enum Cached {
    /// Known (it has or had a timer), but not read yet.
    Unread,
    /// Read or written: its record (`None`: known to be absent).
    Read(Option<UserRecord>),
}

/// A user in the cache.
#[derive(Debug)]
struct Slot {
    key: CacheKey,
    /// Its [`SlotId::placed`].
    placed: u32,
    cached: Cached,
}

/// The slots in a chunk: the cache grows a chunk at a time.
const CHUNK: usize = 1024;

/// One shard of the cache: its users in slots, and an index of their positions by key. The slots are kept
/// in chunks of a fixed size, never moved: a shard grows without copying itself or holding twice its size
/// while it does, and a table of positions (4 bytes a bucket) is all that keeps a hash table's spare room.
/// Records are kept in the slots, not boxed: a reader of a user's presence waits for memory three times
/// (the index, the slot, the sessions).
#[derive(Debug, Default)]
struct Shard {
    /// Positions in `chunks`, one a slot.
    index: HashTable<u32>,
    chunks: Vec<Vec<Slot>>,
}

fn slot_in(chunks: &[Vec<Slot>], position: u32) -> &Slot {
    let position = position as usize;
    &chunks[position / CHUNK][position % CHUNK]
}

fn slot_in_mut(chunks: &mut [Vec<Slot>], position: u32) -> &mut Slot {
    let position = position as usize;
    &mut chunks[position / CHUNK][position % CHUNK]
}

impl Shard {
    fn position(&self, hash: u64, key: &CacheKey) -> Option<u32> {
        self.index.find(hash, |&position| slot_in(&self.chunks, position).key == *key).copied()
    }

    fn find(&self, hash: u64, key: &CacheKey) -> Option<&Slot> {
        Some(slot_in(&self.chunks, self.position(hash, key)?))
    }

    /// The position of `key` and its slot, added as [`Cached::Unread`] (placed next by `placed`) if new.
    fn entry(&mut self, hash: u64, key: CacheKey, hasher: &RandomState, placed: &AtomicU32) -> (u32, &mut Slot) {
        let Shard { index, chunks } = self;
        let len = index.len();
        let position = match index.entry(
            hash,
            |&position| slot_in(chunks, position).key == key,
            |&position| hasher.hash_one(&slot_in(chunks, position).key),
        ) {
            hash_table::Entry::Occupied(entry) => *entry.get(),
            hash_table::Entry::Vacant(entry) => {
                // A shard would need hundreds of gigabytes of memory to hold 2^32 users.
                let position = u32::try_from(len).expect("a cache shard holds fewer than 2^32 users");
                if len % CHUNK == 0 {
                    chunks.push(Vec::with_capacity(CHUNK));
                }
                chunks.last_mut().expect("a chunk was just made if none had room").push(Slot {
                    key,
                    placed: placed.fetch_add(1, Ordering::Relaxed),
                    cached: Cached::Unread,
                });
                entry.insert(position);
                position
            }
        };
        (position, slot_in_mut(chunks, position))
    }
}

/// The records this process has seen, and every user with a timer, in shards. This process is the
/// database's only writer, and it updates an entry only after the transaction that wrote it committed, so
/// entries never go stale; reads of a cached user touch no database at all. Callers pass only users of the
/// directory, which bounds it.
#[derive(Debug)]
struct Cache {
    shards: Box<[RwLock<Shard>]>,
    hasher: RandomState,
    /// How many users were placed (it wraps after 2^32, which only the order of ties would notice).
    placed: AtomicU32,
}

const CACHE_SHARDS: usize = 64;

impl Cache {
    fn new() -> Self {
        Cache {
            shards: (0..CACHE_SHARDS).map(|_| RwLock::default()).collect(),
            hasher: RandomState::default(),
            placed: AtomicU32::new(0),
        }
    }

    /// A key's hash, and its shard. The shard is taken from bits that a shard's own index uses for neither
    /// its buckets (the low bits) nor its tags (the top seven).
    fn hash(&self, key: &CacheKey) -> (u64, usize) {
        let hash = self.hasher.hash_one(key);
        (hash, (hash >> 40) as usize % CACHE_SHARDS)
    }

    fn read(&self, shard: usize) -> RwLockReadGuard<'_, Shard> {
        self.shards[shard].read().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn write(&self, shard: usize) -> RwLockWriteGuard<'_, Shard> {
        self.shards[shard].write().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Hands `visit` the cached record of each of `keys` (with its position; `None`: known absent), taking
    /// each shard's lock once, and answers the positions not cached, in order. With no lock taken between
    /// them, the lookups in a shard wait for memory together instead of one after another.
    fn visit_many(&self, keys: &[UserKey], visit: &mut dyn FnMut(usize, Option<&UserRecord>)) -> Vec<usize> {
        // The keys of a bulk read share their tenant: its id is parsed once.
        let mut tenant: Option<(&str, Option<u128>)> = None;
        let keys: Vec<(u64, usize, CacheKey)> = keys
            .iter()
            .map(|key| {
                let value = match tenant {
                    Some((text, value)) if text == key.tenant_id => value,
                    _ => tenant.insert((&key.tenant_id, canonical_guid(&key.tenant_id))).1,
                };
                let key = CacheKey::with_tenant(key, value);
                let (hash, shard) = self.hash(&key);
                (hash, shard, key)
            })
            .collect();
        let mut order: Vec<usize> = (0..keys.len()).collect();
        order.sort_unstable_by_key(|&position| keys[position].1);
        let mut missing = Vec::new();
        for run in order.chunk_by(|a, b| keys[*a].1 == keys[*b].1) {
            let shard = self.read(keys[run[0]].1);
            for &position in run {
                let (hash, _, key) = &keys[position];
                match shard.find(*hash, key).map(|slot| &slot.cached) {
                    Some(Cached::Read(record)) => visit(position, record.as_ref()),
                    None | Some(Cached::Unread) => missing.push(position),
                }
            }
        }
        missing.sort_unstable();
        missing
    }

    /// The cached record (`Some(None)`: known absent), or `None` when not cached.
    fn get(&self, key: &UserKey) -> Option<Option<UserRecord>> {
        let key = CacheKey::of(key);
        let (hash, shard) = self.hash(&key);
        match &self.read(shard).find(hash, &key)?.cached {
            Cached::Read(record) => Some(record.clone()),
            Cached::Unread => None,
        }
    }

    /// Remembers what a read found, unless a write got there first.
    fn fill(&self, key: &UserKey, record: Option<UserRecord>) {
        let key = CacheKey::of(key);
        let (hash, shard) = self.hash(&key);
        let mut shard = self.write(shard);
        let (_, slot) = shard.entry(hash, key, &self.hasher, &self.placed);
        if let Cached::Unread = slot.cached {
            slot.cached = Cached::Read(record);
        }
    }

    /// Remembers what a committed write stored, and answers where.
    fn set(&self, key: &UserKey, record: UserRecord) -> SlotId {
        let key = CacheKey::of(key);
        let (hash, shard) = self.hash(&key);
        let mut guard = self.write(shard);
        let (position, slot) = guard.entry(hash, key, &self.hasher, &self.placed);
        slot.cached = Cached::Read(Some(record));
        SlotId { placed: slot.placed, shard: shard as u32, position }
    }

    /// The places of users with a timer (`(due, key)`, their records perhaps not read yet), added where
    /// new: each shard's index is sized for them beforehand.
    fn place_all(&self, users: Vec<(i64, CacheKey)>) -> Vec<(i64, SlotId)> {
        let mut counts = [0; CACHE_SHARDS];
        for (_, key) in &users {
            counts[self.hash(key).1] += 1;
        }
        let mut shards: Vec<_> = (0..CACHE_SHARDS).map(|shard| self.write(shard)).collect();
        for (shard, count) in shards.iter_mut().zip(counts) {
            let Shard { index, chunks, .. } = &mut **shard;
            index.reserve(count, |&position| self.hasher.hash_one(&slot_in(chunks, position).key));
        }
        users
            .into_iter()
            .map(|(at, key)| {
                let (hash, shard) = self.hash(&key);
                let (position, slot) = shards[shard].entry(hash, key, &self.hasher, &self.placed);
                (at, SlotId { placed: slot.placed, shard: shard as u32, position })
            })
            .collect()
    }

    /// The place of a user, if the cache has one.
    fn slot_of(&self, key: &UserKey) -> Option<SlotId> {
        let key = CacheKey::of(key);
        let (hash, shard) = self.hash(&key);
        let shard_guard = self.read(shard);
        let position = shard_guard.position(hash, &key)?;
        Some(SlotId { placed: slot_in(&shard_guard.chunks, position).placed, shard: shard as u32, position })
    }

    /// The key of the user at `slot`.
    fn key_at(&self, slot: SlotId) -> UserKey {
        slot_in(&self.read(slot.shard as usize).chunks, slot.position).key.user_key()
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

fn has_column(connection: &Connection, table: &str, column: &str) -> Result<bool, rusqlite::Error> {
    connection.prepare("SELECT 1 FROM pragma_table_info(?1) WHERE name = ?2")?.exists(params![table, column])
}

/// Creates the tables, or brings those of an older file up to date (in one transaction).
fn migrate(connection: &mut Connection) -> Result<(), StoreError> {
    let transaction = connection.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    transaction.execute_batch(
        "CREATE TABLE IF NOT EXISTS presence (
             tenant_id TEXT NOT NULL,
             user_id TEXT NOT NULL,
             facts TEXT NOT NULL,
             PRIMARY KEY (tenant_id, user_id)
         ) WITHOUT ROWID;
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
         CREATE INDEX IF NOT EXISTS outbox_queue ON outbox (queue, id);
         CREATE TABLE IF NOT EXISTS subscription_log (
             seq INTEGER PRIMARY KEY AUTOINCREMENT,
             id TEXT NOT NULL
         );
         CREATE TABLE IF NOT EXISTS store_meta (
             key TEXT PRIMARY KEY,
             value INTEGER NOT NULL
         ) WITHOUT ROWID;
         CREATE TABLE IF NOT EXISTS directory_users (
             tenant_id TEXT NOT NULL,
             user_id TEXT NOT NULL,
             user_principal_name TEXT NOT NULL,
             display_name TEXT NOT NULL,
             PRIMARY KEY (tenant_id, user_id)
         ) WITHOUT ROWID;
         CREATE TABLE IF NOT EXISTS directory_upns (
             tenant_id TEXT NOT NULL,
             upn_key TEXT NOT NULL,
             user_id TEXT NOT NULL,
             PRIMARY KEY (tenant_id, upn_key)
         ) WITHOUT ROWID;
         CREATE INDEX IF NOT EXISTS directory_upns_user ON directory_upns (tenant_id, user_id);",
    )?;
    // Added with change notifications: the user's timer. Every existing user is due at once, so the timers'
    // first pass computes each one's next change (there are no subscriptions yet, so nothing is sent).
    if !has_column(&transaction, "presence", "due_at")? {
        transaction.execute_batch("ALTER TABLE presence ADD COLUMN due_at INTEGER; UPDATE presence SET due_at = 0;")?;
    }
    // Added with timer claims: the record's version.
    if !has_column(&transaction, "presence", "version")? {
        transaction.execute_batch("ALTER TABLE presence ADD COLUMN version INTEGER NOT NULL DEFAULT 0;")?;
    }
    // Timers were indexed columns (first `due_at`, then a claimable `timer_at`): they are kept in memory now
    // ([`Timers`]), read from `due_at` at each start. What `timer_at` held beyond `due_at` was a claim's
    // lease, which ends with the process that made it.
    transaction.execute_batch("DROP INDEX IF EXISTS presence_due; DROP INDEX IF EXISTS presence_timer;")?;
    if has_column(&transaction, "presence", "timer_at")? {
        transaction.execute_batch("ALTER TABLE presence DROP COLUMN timer_at;")?;
    }
    // Added with the store contract for several processes: a subscription's owner and version.
    if !has_column(&transaction, "subscriptions", "application_id")? {
        transaction.execute_batch(
            "ALTER TABLE subscriptions ADD COLUMN application_id TEXT NOT NULL DEFAULT '';
             ALTER TABLE subscriptions ADD COLUMN version INTEGER NOT NULL DEFAULT 1;
             UPDATE subscriptions SET application_id = COALESCE(json_extract(body, '$.applicationId'), '')
                 WHERE json_valid(body);",
        )?;
    }
    transaction.execute_batch(
        "CREATE INDEX IF NOT EXISTS subscriptions_owner ON subscriptions (tenant_id, application_id);
         DELETE FROM store_meta WHERE key = 'closed';",
    )?;
    transaction.commit()?;
    Ok(())
}

/// Every user's timer, from `due_at`: gathered, then built in one go (a million users' timers in a
/// fraction of the time inserting them one by one takes).
fn read_timers(connection: &Connection, cache: &Cache) -> Result<Timers, StoreError> {
    let mut statement = connection.prepare(
        "SELECT tenant_id, user_id, due_at FROM presence WHERE due_at IS NOT NULL ORDER BY tenant_id, user_id",
    )?;
    let mut rows = statement.query([])?;
    let mut entries = Vec::new();
    while let Some(row) = rows.next()? {
        entries.push((row.get(2)?, CacheKey::from_ids(row.get(0)?, row.get(1)?)));
    }
    Ok(Timers::from_entries(cache.place_all(entries)))
}

/// A `directory_users` row of `user_id, user_principal_name, display_name`.
fn directory_user(row: &rusqlite::Row<'_>) -> Result<DirectoryUser, rusqlite::Error> {
    Ok(DirectoryUser { id: row.get(0)?, user_principal_name: row.get(1)?, display_name: row.get(2)? })
}

impl SqliteStore {
    /// Opens (creating if needed) the store in `data_dir`.
    pub fn open(data_dir: &Path) -> Result<Self, StoreError> {
        let path = data_dir.join(DATABASE_FILE);
        let mut writer = Connection::open(&path)?;
        configure(&writer)?;
        // Every write reads its user's row and index pages: keep them in the writer's page cache (64 MiB)
        // rather than read them back from the file system each time.
        writer.pragma_update(None, "cache_size", WRITER_CACHE_KIB)?;
        // Checkpoints (copying the WAL into the database file, and an fsync of it) run on a thread of
        // their own, not inside whichever write happens to cross the WAL's size limit.
        writer.pragma_update(None, "wal_autocheckpoint", 0)?;
        migrate(&mut writer)?;
        let cache = Cache::new();
        let timers = read_timers(&writer, &cache)?;
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
        // The WAL exists once the database is in WAL mode: sync it and the directory now, so that a first
        // start's files are durable before anything is acknowledged.
        durability.sync()?;
        File::open(data_dir)?.sync_all()?;
        let wal_restart = Arc::new(WalRestart {
            behind: AtomicBool::new(false),
            frames: AtomicI64::new(WAL_RESTART_FRAMES),
            database: File::open(&path)?,
        });
        let checkpoints = start_checkpoints(&path, wal_restart.clone())?;
        Ok(SqliteStore {
            writer: Mutex::new(writer),
            readers,
            cache,
            durability,
            checkpoints: Mutex::new(Some(checkpoints)),
            wal_restart,
            leases: Mutex::default(),
            timers: Mutex::new(timers),
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
        checkpoint(&*self.reader()?, &self.wal_restart)
    }

    /// Sets the WAL length (in frames) from which checkpoints ask the writer to finish them and start the
    /// WAL again (65,536 frames, 256 MiB, when the store opens); for tests, which need a short one.
    pub fn set_wal_restart_frames(&self, frames: i64) {
        self.wal_restart.frames.store(frames, Ordering::Relaxed);
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

fn corrupt(key: &UserKey, reason: String) -> StoreError {
    StoreError::Corrupt { record: format!("{}/{}", key.tenant_id, key.user_id), reason }
}

fn read_record(connection: &Connection, key: &UserKey) -> Result<Option<UserRecord>, StoreError> {
    let row: Option<(String, Option<i64>, i64)> = connection
        .prepare_cached("SELECT facts, due_at, version FROM presence WHERE tenant_id = ?1 AND user_id = ?2")?
        .query_row(params![key.tenant_id, key.user_id], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)))
        .optional()?;
    row.map(|(text, due_at, version)| {
        decode(&text)
            .map(|facts| UserRecord { facts, due_at, version: u64::try_from(version).unwrap_or(0) })
            .map_err(|reason| corrupt(key, reason))
    })
    .transpose()
}

impl SqliteStore {
    /// Reads the `missing` positions of `keys` from the database into the cache, handing each record to
    /// `found` with its position.
    fn read_missing(
        &self,
        reader: &Connection,
        keys: &[UserKey],
        missing: &[usize],
        found: &mut dyn FnMut(usize, Option<&UserRecord>),
    ) -> Result<(), StoreError> {
        let transaction = reader.unchecked_transaction()?;
        for &position in missing {
            let record = read_record(&transaction, &keys[position])?;
            found(position, record.as_ref());
            self.cache.fill(&keys[position], record);
        }
        transaction.finish()?;
        Ok(())
    }
}

/// Reads, applies and writes one user inside `transaction`. Returns the record written, for the cache
/// once the transaction committed, or `None` when nothing was written.
fn update_in(
    cache: &Cache,
    transaction: &Connection,
    key: &UserKey,
    apply: &mut dyn FnMut(&mut UserFacts, Option<i64>) -> Option<Effects>,
) -> Result<Option<UserRecord>, StoreError> {
    let record = match cache.get(key) {
        Some(record) => record,
        None => read_record(transaction, key)?,
    };
    let existed = record.is_some();
    let UserRecord { mut facts, due_at, version } = record.unwrap_or_default();
    let Some(effects) = apply(&mut facts, due_at) else {
        return Ok(None);
    };
    let version = version + 1;
    if effects.timer_only {
        if !existed {
            // Nothing stored to put a timer on (and no facts, so no change to report).
            return Ok(None);
        }
        transaction
            .prepare_cached("UPDATE presence SET due_at = ?3, version = ?4 WHERE tenant_id = ?1 AND user_id = ?2")?
            .execute(params![key.tenant_id, key.user_id, effects.due_at, version as i64])?;
    } else {
        transaction
            .prepare_cached(
                "INSERT INTO presence (tenant_id, user_id, facts, due_at, version) VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT (tenant_id, user_id) DO UPDATE SET facts = excluded.facts, due_at = excluded.due_at,
                     version = excluded.version",
            )?
            .execute(params![key.tenant_id, key.user_id, encode(&facts), effects.due_at, version as i64])?;
    }
    insert_notifications(transaction, &effects.notifications)?;
    Ok(Some(UserRecord { facts, due_at: effects.due_at, version }))
}

/// A queue's name in the `outbox` table: the subscription id, with `/lifecycle` for its lifecycle queue.
fn queue_name(queue: &QueueId) -> String {
    match queue.kind {
        QueueKind::Changes => queue.subscription_id.clone(),
        QueueKind::Lifecycle => format!("{}/lifecycle", queue.subscription_id),
    }
}

fn queue_of(name: &str) -> QueueId {
    match name.strip_suffix("/lifecycle") {
        Some(id) => QueueId::lifecycle(id),
        None => QueueId::changes(name),
    }
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
            queue_name(&notification.queue),
            notification.url,
            notification.created_at,
            notification.item,
            notification.resource_data
        ])?;
    }
    Ok(())
}

fn read_subscription(connection: &Connection, id: &str) -> Result<Option<StoredSubscription>, StoreError> {
    Ok(connection
        .prepare_cached("SELECT id, tenant_id, application_id, version, body FROM subscriptions WHERE id = ?1")?
        .query_row([id], subscription_row)
        .optional()?)
}

fn subscription_row(row: &rusqlite::Row<'_>) -> Result<StoredSubscription, rusqlite::Error> {
    Ok(StoredSubscription {
        id: row.get(0)?,
        tenant_id: row.get(1)?,
        application_id: row.get(2)?,
        version: u64::try_from(row.get::<_, i64>(3)?).unwrap_or(0),
        body: row.get(4)?,
    })
}

/// Appends a change of subscription `id` to the change log, and trims the log.
fn log_subscription_change(transaction: &Connection, id: &str) -> Result<(), StoreError> {
    transaction.prepare_cached("INSERT INTO subscription_log (id) VALUES (?1)")?.execute([id])?;
    let newest = transaction.last_insert_rowid();
    let horizon = newest - SUBSCRIPTION_LOG_ENTRIES;
    if horizon > 0 {
        let trimmed = transaction.prepare_cached("DELETE FROM subscription_log WHERE seq <= ?1")?.execute([horizon])?;
        if trimmed > 0 {
            transaction
                .prepare_cached(
                    "INSERT INTO store_meta (key, value) VALUES ('subscription_log_trimmed', ?1)
                     ON CONFLICT (key) DO UPDATE SET value = MAX(value, excluded.value)",
                )?
                .execute([horizon])?;
        }
    }
    Ok(())
}

/// The newest cursor of the subscription change log.
fn log_cursor(connection: &Connection) -> Result<u64, StoreError> {
    let newest: Option<i64> = connection
        .prepare_cached("SELECT seq FROM sqlite_sequence WHERE name = 'subscription_log'")?
        .query_row([], |row| row.get(0))
        .optional()?;
    Ok(u64::try_from(newest.unwrap_or(0)).unwrap_or(0))
}

impl SqliteStore {
    /// Begins a write transaction on the writer. If a checkpoint found the WAL long, the writer first
    /// copies what is left of it (no write can add frames meanwhile), so that this transaction starts the
    /// WAL again from its beginning. A checkpoint that cannot run here (the checkpoint thread's is
    /// running), or a reader still on the WAL, only leaves the restart to the next checkpoint's turn.
    fn begin<'c>(&self, writer: &'c mut Connection) -> Result<Transaction<'c>, StoreError> {
        if self.wal_restart.behind.swap(false, Ordering::Relaxed) {
            let _ = checkpoint_pass(writer);
        }
        Ok(writer.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?)
    }

    /// Runs `work` in a write transaction, commits it, and returns once the commit is durable.
    fn write<R>(&self, work: impl FnOnce(&Transaction<'_>) -> Result<R, StoreError>) -> Result<R, StoreError> {
        let (result, ticket) = {
            let mut writer = lock(&self.writer)?;
            let transaction = self.begin(&mut writer)?;
            let result = work(&transaction)?;
            transaction.commit()?;
            (result, self.durability.committed())
        };
        self.durability.wait(ticket)?;
        Ok(result)
    }

    /// `update_many` up to its commit: a result per user and the commit's ticket (if anything was written).
    fn update_many_undurable(
        &self,
        keys: &[UserKey],
        apply: &mut UpdateManyFn<'_>,
    ) -> Result<(UserResults, Option<u64>), StoreError> {
        let mut writer = lock(&self.writer)?;
        let transaction = self.begin(&mut writer)?;
        let mut written = Vec::new();
        let mut results = Vec::with_capacity(keys.len());
        let mut cleared = Vec::new();
        for key in keys {
            match update_in(&self.cache, &transaction, key, &mut |facts, due_at| apply(key, facts, due_at)) {
                Ok(Some(record)) => {
                    results.push(Ok(Updated::Written { version: record.version }));
                    written.push((key.clone(), record));
                }
                Ok(None) => results.push(Ok(Updated::Declined)),
                Err(error @ StoreError::Corrupt { .. }) => {
                    transaction
                        .prepare_cached(
                            "UPDATE presence SET due_at = NULL, version = version + 1
                             WHERE tenant_id = ?1 AND user_id = ?2",
                        )?
                        .execute(params![key.tenant_id, key.user_id])?;
                    cleared.push(key);
                    results.push(Err(error));
                }
                Err(error) => return Err(error),
            }
        }
        if written.is_empty() && cleared.is_empty() {
            return Ok((results, None));
        }
        transaction.commit()?;
        // Each write ends its user's claim, if any. As in `update`, the writer lock orders the timers, which
        // are set once the cache is.
        let cleared: Vec<SlotId> = cleared.into_iter().filter_map(|key| self.cache.slot_of(key)).collect();
        let written: Vec<(SlotId, Option<i64>)> = written
            .into_iter()
            .map(|(key, record)| {
                let due_at = record.due_at;
                (self.cache.set(&key, record), due_at)
            })
            .collect();
        let mut timers = self.timers.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        for slot in cleared {
            timers.set(slot, None);
        }
        for (slot, due_at) in written {
            timers.set(slot, due_at);
        }
        drop(timers);
        Ok((results, Some(self.durability.committed())))
    }
}

impl PresenceStore for SqliteStore {
    fn get(&self, key: &UserKey) -> Result<Option<UserRecord>, StoreError> {
        Ok(self.get_many(std::slice::from_ref(key))?.pop().flatten())
    }

    fn get_many(&self, keys: &[UserKey]) -> Result<Vec<Option<UserRecord>>, StoreError> {
        let mut records = vec![None; keys.len()];
        let mut found = |position: usize, record: Option<&UserRecord>| records[position] = record.cloned();
        let missing = self.cache.visit_many(keys, &mut found);
        if !missing.is_empty() {
            let reader = self.reader()?;
            self.read_missing(&reader, keys, &missing, &mut found)?;
        }
        Ok(records)
    }

    fn get_many_now(&self, keys: &[UserKey]) -> Option<Result<Vec<Option<UserRecord>>, StoreError>> {
        let mut records = vec![None; keys.len()];
        let visited = self.visit_many_now(keys, &mut |position, record| records[position] = record.cloned())?;
        Some(visited.map(|()| records))
    }

    fn visit_many_now(
        &self,
        keys: &[UserKey],
        visit: &mut dyn FnMut(usize, Option<&UserRecord>),
    ) -> Option<Result<(), StoreError>> {
        let missing = self.cache.visit_many(keys, visit);
        if missing.is_empty() {
            return Some(Ok(()));
        }
        let reader = self.try_reader()?;
        Some(self.read_missing(&reader, keys, &missing, visit))
    }

    fn update(&self, key: &UserKey, apply: &mut UpdateFn<'_>) -> Result<Updated, StoreError> {
        let (version, ticket) = {
            let mut writer = lock(&self.writer)?;
            let transaction = self.begin(&mut writer)?;
            let Some(record) = update_in(&self.cache, &transaction, key, apply)? else {
                return Ok(Updated::Declined);
            };
            transaction.commit()?;
            let version = record.version;
            // The writer lock keeps the timers in the order of the commits; the timers' own lock is not
            // held while the cache's shard is taken.
            let due_at = record.due_at;
            let slot = self.cache.set(key, record);
            self.timers.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).set(slot, due_at);
            (version, self.durability.committed())
        };
        self.durability.wait(ticket)?;
        Ok(Updated::Written { version })
    }

    fn update_many(&self, keys: &[UserKey], apply: &mut UpdateManyFn<'_>) -> Vec<Result<Updated, StoreError>> {
        let outcome = self.update_many_undurable(keys, apply).and_then(|(results, ticket)| {
            if let Some(ticket) = ticket {
                self.durability.wait(ticket)?;
            }
            Ok(results)
        });
        match outcome {
            Ok(results) => results,
            Err(error) => keys.iter().map(|_| Err(error.clone())).collect(),
        }
    }

    /// A claim is kept in memory only: it ends with the process (a restart finds the user due at its own
    /// `due_at`), so it writes nothing.
    fn claim_due(&self, now: i64, lease_until: i64, limit: usize) -> Result<Vec<UserKey>, StoreError> {
        let claimed = self.timers.lock().map_err(|_| StoreError::Poisoned)?.claim(now, lease_until, limit);
        Ok(claimed.into_iter().map(|slot| self.cache.key_at(slot)).collect())
    }

    fn next_due(&self) -> Result<Option<i64>, StoreError> {
        Ok(self.timers.lock().map_err(|_| StoreError::Poisoned)?.next())
    }

    fn subscriptions(&self) -> Result<(Vec<StoredSubscription>, u64), StoreError> {
        let reader = self.reader()?;
        let transaction = reader.unchecked_transaction()?;
        let subscriptions = {
            let mut statement = transaction
                .prepare_cached("SELECT id, tenant_id, application_id, version, body FROM subscriptions ORDER BY id")?;
            let rows = statement.query_map([], subscription_row)?;
            rows.collect::<Result<Vec<_>, _>>()?
        };
        let cursor = log_cursor(&transaction)?;
        transaction.finish()?;
        Ok((subscriptions, cursor))
    }

    fn subscription(&self, id: &str) -> Result<Option<StoredSubscription>, StoreError> {
        let reader = self.reader()?;
        read_subscription(&reader, id)
    }

    fn create_subscription(&self, subscription: &StoredSubscription, limit: usize) -> Result<bool, StoreError> {
        self.write(|transaction| {
            let count: i64 = transaction
                .prepare_cached("SELECT COUNT(*) FROM subscriptions WHERE tenant_id = ?1 AND application_id = ?2")?
                .query_row(params![subscription.tenant_id, subscription.application_id], |row| row.get(0))?;
            if usize::try_from(count).unwrap_or(usize::MAX) >= limit {
                return Ok(false);
            }
            transaction
                .prepare_cached(
                    "INSERT INTO subscriptions (id, tenant_id, application_id, version, body) VALUES (?1, ?2, ?3, 1, ?4)",
                )?
                .execute(params![
                    subscription.id,
                    subscription.tenant_id,
                    subscription.application_id,
                    subscription.body
                ])?;
            log_subscription_change(transaction, &subscription.id)?;
            Ok(true)
        })
    }

    fn update_subscription(
        &self,
        id: &str,
        apply: &mut SubscriptionFn<'_>,
    ) -> Result<Option<StoredSubscription>, StoreError> {
        self.write(|transaction| {
            let Some(current) = read_subscription(transaction, id)? else {
                return Ok(None);
            };
            let mut changed = current.clone();
            let Some(notifications) = apply(&mut changed) else {
                return Ok(Some(current));
            };
            let updated = StoredSubscription { version: current.version + 1, body: changed.body, ..current };
            transaction
                .prepare_cached("UPDATE subscriptions SET body = ?2, version = ?3 WHERE id = ?1")?
                .execute(params![updated.id, updated.body, updated.version as i64])?;
            insert_notifications(transaction, &notifications)?;
            log_subscription_change(transaction, id)?;
            Ok(Some(updated))
        })
    }

    fn remove_subscription(
        &self,
        id: &str,
        farewell: &mut FarewellFn<'_>,
    ) -> Result<Option<StoredSubscription>, StoreError> {
        self.write(|transaction| {
            let Some(current) = read_subscription(transaction, id)? else {
                return Ok(None);
            };
            let Some(farewell) = farewell(&current) else {
                return Ok(None);
            };
            transaction.prepare_cached("DELETE FROM subscriptions WHERE id = ?1")?.execute([id])?;
            let mut delete = transaction.prepare_cached("DELETE FROM outbox WHERE queue = ?1")?;
            delete.execute([queue_name(&QueueId::changes(id))])?;
            if farewell.is_empty() {
                delete.execute([queue_name(&QueueId::lifecycle(id))])?;
            }
            insert_notifications(transaction, &farewell)?;
            log_subscription_change(transaction, id)?;
            Ok(Some(current))
        })
    }

    fn subscription_changes(&self, since: u64) -> Result<Option<SubscriptionChanges>, StoreError> {
        let reader = self.reader()?;
        let transaction = reader.unchecked_transaction()?;
        let trimmed: i64 = transaction
            .prepare_cached("SELECT value FROM store_meta WHERE key = 'subscription_log_trimmed'")?
            .query_row([], |row| row.get(0))
            .optional()?
            .unwrap_or(0);
        if i64::try_from(since).unwrap_or(i64::MAX) < trimmed {
            return Ok(None);
        }
        let since = i64::try_from(since).unwrap_or(i64::MAX);
        let mut ids: Vec<String> = Vec::new();
        let mut cursor = since;
        {
            let mut statement =
                transaction.prepare_cached("SELECT seq, id FROM subscription_log WHERE seq > ?1 ORDER BY seq")?;
            let rows = statement.query_map([since], |row| Ok((row.get::<_, i64>(0)?, row.get::<_, String>(1)?)))?;
            for row in rows {
                let (seq, id) = row?;
                cursor = cursor.max(seq);
                if !ids.contains(&id) {
                    ids.push(id);
                }
            }
        }
        transaction.finish()?;
        Ok(Some(SubscriptionChanges { ids, cursor: u64::try_from(cursor).unwrap_or(0) }))
    }

    fn enqueue(&self, notifications: &[NewNotification]) -> Result<(), StoreError> {
        self.write(|transaction| insert_notifications(transaction, notifications))
    }

    fn queue_head(&self, queue: &QueueId, limit: usize) -> Result<Vec<QueuedNotification>, StoreError> {
        let reader = self.reader()?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let mut statement = reader.prepare_cached(
            "SELECT id, url, created_at, item, resource_data FROM outbox WHERE queue = ?1 ORDER BY id LIMIT ?2",
        )?;
        let rows = statement.query_map(params![queue_name(queue), limit], |row| {
            Ok(QueuedNotification {
                position: u64::try_from(row.get::<_, i64>(0)?).unwrap_or(0),
                url: row.get(1)?,
                created_at: row.get(2)?,
                item: row.get(3)?,
                resource_data: row.get(4)?,
            })
        })?;
        Ok(rows.collect::<Result<Vec<_>, _>>()?)
    }

    fn acknowledge(
        &self,
        queue: &QueueId,
        positions: &[u64],
        notifications: &[NewNotification],
    ) -> Result<(), StoreError> {
        let name = queue_name(queue);
        self.write(|transaction| {
            let mut delete = transaction.prepare_cached("DELETE FROM outbox WHERE queue = ?1 AND id = ?2")?;
            for position in positions {
                delete.execute(params![name, i64::try_from(*position).unwrap_or(i64::MAX)])?;
            }
            insert_notifications(transaction, notifications)
        })
    }

    fn queue_lengths(&self) -> Result<Vec<(QueueId, u64)>, StoreError> {
        let reader = self.reader()?;
        let mut statement =
            reader.prepare_cached("SELECT queue, COUNT(*) FROM outbox GROUP BY queue ORDER BY queue")?;
        let rows = statement.query_map([], |row| Ok((row.get::<_, String>(0)?, row.get::<_, i64>(1)? as u64)))?;
        rows.map(|row| row.map(|(name, length)| (queue_of(&name), length)).map_err(StoreError::from)).collect()
    }

    fn lease_queue(&self, queue: &QueueId, holder: &str, now: i64, lease_until: i64) -> Result<bool, StoreError> {
        let mut leases = self.leases.lock().map_err(|_| StoreError::Poisoned)?;
        match leases.get(queue) {
            Some((other, until)) if other != holder && *until > now => Ok(false),
            _ => {
                leases.insert(queue.clone(), (holder.to_owned(), lease_until));
                Ok(true)
            }
        }
    }

    fn release_queue(&self, queue: &QueueId, holder: &str) -> Result<(), StoreError> {
        let mut leases = self.leases.lock().map_err(|_| StoreError::Poisoned)?;
        if leases.get(queue).is_some_and(|(other, _)| other == holder) {
            leases.remove(queue);
        }
        Ok(())
    }

    fn put_directory_user(&self, tenant_id: &str, user: &DirectoryUser) -> Result<(), StoreError> {
        let upn_key = DirectoryUser::upn_key(&user.user_principal_name);
        self.write(|transaction| {
            transaction
                .prepare_cached(
                    "INSERT INTO directory_users (tenant_id, user_id, user_principal_name, display_name)
                     VALUES (?1, ?2, ?3, ?4)
                     ON CONFLICT (tenant_id, user_id) DO UPDATE SET
                         user_principal_name = excluded.user_principal_name, display_name = excluded.display_name",
                )?
                .execute(params![tenant_id, user.id, user.user_principal_name, user.display_name])?;
            // A user principal name finds the user that holds it: the first to take it, until their own
            // name changes.
            transaction
                .prepare_cached("DELETE FROM directory_upns WHERE tenant_id = ?1 AND user_id = ?2 AND upn_key <> ?3")?
                .execute(params![tenant_id, user.id, upn_key])?;
            transaction
                .prepare_cached(
                    "INSERT INTO directory_upns (tenant_id, upn_key, user_id) VALUES (?1, ?2, ?3)
                     ON CONFLICT (tenant_id, upn_key) DO NOTHING",
                )?
                .execute(params![tenant_id, upn_key, user.id])?;
            Ok(())
        })
    }

    fn directory_users(&self, tenant_id: &str, ids: &[String]) -> Result<Vec<Option<DirectoryUser>>, StoreError> {
        let reader = self.reader()?;
        let mut statement = reader.prepare_cached(
            "SELECT user_id, user_principal_name, display_name FROM directory_users
             WHERE tenant_id = ?1 AND user_id = ?2",
        )?;
        ids.iter().map(|id| Ok(statement.query_row(params![tenant_id, id], directory_user).optional()?)).collect()
    }

    fn directory_user_by_upn(&self, tenant_id: &str, upn: &str) -> Result<Option<DirectoryUser>, StoreError> {
        let reader = self.reader()?;
        let mut statement = reader.prepare_cached(
            "SELECT users.user_id, users.user_principal_name, users.display_name
             FROM directory_upns upns JOIN directory_users users
                 ON users.tenant_id = upns.tenant_id AND users.user_id = upns.user_id
             WHERE upns.tenant_id = ?1 AND upns.upn_key = ?2",
        )?;
        Ok(statement.query_row(params![tenant_id, DirectoryUser::upn_key(upn)], directory_user).optional()?)
    }

    fn list_directory_users(
        &self,
        tenant_id: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<DirectoryUser>, StoreError> {
        let reader = self.reader()?;
        let mut statement = reader.prepare_cached(
            "SELECT user_id, user_principal_name, display_name FROM directory_users
             WHERE tenant_id = ?1 AND user_id > ?2 ORDER BY user_id LIMIT ?3",
        )?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = statement.query_map(params![tenant_id, after.unwrap_or(""), limit], directory_user)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn ping(&self) -> Result<(), StoreError> {
        self.reader()?.query_row("SELECT 1", [], |_| Ok(()))?;
        Ok(())
    }

    fn stats(&self, now: i64) -> Result<Option<StoreStats>, StoreError> {
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
        Ok(Some(StoreStats { users: count(users), live_sessions: count(live), pending_timers: count(pending) }))
    }

    fn close(&self) -> Result<(), StoreError> {
        // The checkpoint thread stops first, so that its checkpoint cannot block this one. Then the whole
        // WAL is copied into the database file and emptied, so the next start reads no WAL.
        let checkpoints = self.checkpoints.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).take();
        if let Some(checkpoints) = checkpoints {
            checkpoints.stop();
        }
        let writer = lock(&self.writer)?;
        let busy: i64 = writer.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |row| row.get(0))?;
        if busy != 0 {
            // A reader still holds the WAL: what is acknowledged is durable in it, and the next start
            // checkpoints it.
            return Err(StoreError::Backend("the WAL could not be fully checkpointed: a reader is still open".into()));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(user: u32) -> UserKey {
        UserKey {
            tenant_id: "8a2c6a9e-0f6e-4d8f-9d35-3c1c2f4b8d11".into(),
            user_id: uuid::Uuid::from_u128(u128::from(user)).hyphenated().to_string(),
        }
    }

    fn record(version: u64) -> UserRecord {
        UserRecord { facts: UserFacts::default(), due_at: Some(7), version }
    }

    #[test]
    #[cfg(target_pointer_width = "64")]
    fn a_user_in_the_cache_takes_one_small_slot() {
        assert_eq!(std::mem::size_of::<Slot>(), 160);
    }

    #[test]
    fn the_cache_keeps_each_user_in_one_place_across_chunks() {
        let cache = Cache::new();
        let users = (CACHE_SHARDS * CHUNK * 2) as u32;
        let slots: Vec<SlotId> = (0..users).map(|user| cache.set(&key(user), record(u64::from(user)))).collect();
        for user in 0..users {
            let slot = slots[user as usize];
            assert_eq!(cache.key_at(slot), key(user));
            assert_eq!(cache.slot_of(&key(user)), Some(slot));
            assert_eq!(cache.get(&key(user)), Some(Some(record(u64::from(user)))));
            // Written again, the user keeps its place (its timer names it by that place).
            assert_eq!(cache.set(&key(user), record(0)), slot);
        }
        let shards: std::collections::HashSet<u32> = slots.iter().map(|slot| slot.shard).collect();
        assert_eq!(shards.len(), CACHE_SHARDS);
        assert_eq!(cache.slot_of(&key(users)), None);
        assert_eq!(cache.get(&key(users)), None);
    }

    #[test]
    fn a_user_placed_for_its_timer_is_not_cached_until_read_and_a_read_never_undoes_a_write() {
        let cache = Cache::new();
        let place = |user| cache.place_all(vec![(0, CacheKey::of(&key(user)))])[0].1;
        let slot = place(1);
        assert_eq!(cache.slot_of(&key(1)), Some(slot));
        assert_eq!(cache.get(&key(1)), None);
        let mut missing = cache.visit_many(&[key(1)], &mut |_, _| panic!("nothing is cached"));
        assert_eq!(missing, [0]);
        cache.fill(&key(1), None);
        assert_eq!(cache.get(&key(1)), Some(None));
        assert_eq!(place(1), slot);
        assert_eq!(cache.get(&key(1)), Some(None), "placing a cached user keeps its record");

        cache.set(&key(2), record(3));
        cache.fill(&key(2), None);
        assert_eq!(cache.get(&key(2)), Some(Some(record(3))));
        let mut seen = Vec::new();
        missing = cache.visit_many(&[key(2), key(4), key(1)], &mut |position, found| {
            seen.push((position, found.map(|record| record.version)))
        });
        seen.sort_unstable();
        assert_eq!(seen, [(0, Some(3)), (2, None)]);
        assert_eq!(missing, [1]);
    }

    #[test]
    fn timers_name_users_by_their_place_and_a_claim_moves_them_to_its_lease() {
        let cache = Cache::new();
        let [a, b] = [cache.set(&key(1), record(1)), cache.set(&key(2), record(1))];
        let mut timers = Timers::from_entries(vec![(20, a), (10, b)]);
        assert_eq!(timers.next(), Some(10));
        assert_eq!(timers.claim(15, 100, 10), [b]);
        assert_eq!(timers.next(), Some(20));
        timers.set(a, None);
        assert_eq!(timers.next(), Some(100));
        timers.set(b, Some(5));
        assert_eq!(timers.claim(50, 60, 10), [b]);
        assert_eq!(timers.claim(70, 80, 10), [b]);
        assert!(timers.claimable.len() == 1 && timers.queue.len() == 1);
    }

    #[test]
    fn users_due_at_the_same_instant_are_claimed_in_the_order_they_were_placed() {
        let cache = Cache::new();
        let users: Vec<(i64, CacheKey)> = (0..1000).map(|user| (5, CacheKey::of(&key(user)))).collect();
        let mut timers = Timers::from_entries(cache.place_all(users));
        let claimed: Vec<UserKey> = timers.claim(5, 10, 1000).into_iter().map(|slot| cache.key_at(slot)).collect();
        assert_eq!(claimed, (0..1000).map(key).collect::<Vec<_>>());
    }
}
