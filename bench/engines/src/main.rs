//! Issue 15's engine prototypes, on the write path alone.
//!
//! Closed-loop clients (64, as in `bench/http-load.sh`) each write one user's presence and wait until it is
//! durable; one writer thread applies whatever has queued (at most 256 writes, as presenced's writer does)
//! in one atomic batch, and the clients then share fsyncs exactly as presenced's SQLite store does: a
//! waiter whose batch is not durable yet fsyncs, or waits for the fsync in progress. Engines:
//!
//! - `sqlite-rows`: today's table (tenant and user ids as text, the facts as JSON, `due_at`, `timer_at`,
//!   `version`, the partial index on `timer_at`) and today's upsert, with today's checkpoints (a `PASSIVE`
//!   one every second beside the writer; the writer finishes it once the WAL is 65,536 frames long).
//! - `sqlite-rows-without-timer-index`: today's rows and JSON facts, without `timer_at` and its index: what
//!   the timer index alone costs.
//! - `sqlite-compact`: prototype (a): a 32-byte key (the two GUIDs' numbers) and a compact binary record
//!   holding the due time and version, no timer index (timers would live in memory), same checkpoints.
//! - `fjall`: prototype (b): fjall 3's LSM tree with its journal, the same key and record, each batch one
//!   `WriteBatch`, made durable by `Database::persist(SyncData)`.
//!
//! With `WRITER_WAITS=1`, the writer waits until each batch is durable before it takes the next (as
//! presenced's writer thread does), instead of leaving the wait to the clients.
//!
//! With `clients` 0, the engine alone instead: batches of 64 applied and made durable one after the other
//! on one thread, with the time each part took.
//!
//! One process per run, so that its CPU time (`/proc/self/stat`) and the bytes it had written to storage
//! (`/proc/self/io`) are the engine's. Prints one line of JSON.
//!
//! ```text
//! engine-bench <sqlite-rows|sqlite-rows-without-timer-index|sqlite-compact|fjall> <empty dir> [seconds=10] [users=100000] [clients=64]
//! ```

use std::fs::File;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, Sender, SyncSender};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

const TENANT: u128 = 0x5f1d3c2a_7b6e_4d8f_9a01_23456789abcd;
const APP: u128 = 0x0a0f1e5c_8f62_4d3f_9d52_3b1c3b0d5e11;
/// The most writes one batch takes, as presenced's writer.
const BATCH: usize = 256;
/// Writes before this much of the run are not counted.
const WARM_UP: Duration = Duration::from_secs(2);
/// Today's WAL restart threshold.
const WAL_RESTART_FRAMES: i64 = 65_536;

type Result<T> = std::result::Result<T, Box<dyn std::error::Error + Send + Sync>>;

/// One write: the user (an index) and the presence it sets (numbers that change with every write).
#[derive(Clone, Copy)]
struct Write {
    user: u32,
    seq: u64,
    at: i64,
}

trait Engine: Send + Sync {
    /// Applies one batch atomically (visible, not yet durable).
    fn apply(&self, writes: &[Write]) -> Result<()>;
    /// Makes every batch applied before the call durable.
    fn sync(&self) -> Result<()>;
}

fn user_id(user: u32) -> String {
    format!("00000000-0000-4000-8000-{user:012}")
}

fn guid_text(value: u128) -> String {
    let hex = format!("{value:032x}");
    format!("{}-{}-{}-{}-{}", &hex[..8], &hex[8..12], &hex[12..16], &hex[16..20], &hex[20..])
}

/// The user's number as presenced would key it (the GUID's 128 bits).
fn user_number(user: u32) -> u128 {
    0x0000_0000_0000_4000_8000_0000_0000_0000 | u128::from(user)
}

fn compact_key(user: u32) -> [u8; 32] {
    let mut key = [0; 32];
    key[..16].copy_from_slice(&TENANT.to_be_bytes());
    key[16..].copy_from_slice(&user_number(user).to_be_bytes());
    key
}

/// Today's stored facts: the JSON document of `presence-store`'s codec, with one session.
fn facts_json(write: &Write) -> String {
    format!(
        r#"{{"v":1,"sessions":[{{"app":"{}","availability":"Busy","activity":"InACall","refreshed":{},"expires":{}}}],"seq":{},"seq_at":{}}}"#,
        guid_text(APP),
        write.at,
        write.at + 300_000,
        write.seq,
        write.at
    )
}

/// The compact record: format version, sequence and its instant, one session (application number,
/// availability and activity codes, refreshed and expiry instants), due time and record version.
fn compact_record(write: &Write) -> Vec<u8> {
    let mut record = Vec::with_capacity(68);
    record.push(1);
    record.extend_from_slice(&write.seq.to_le_bytes());
    record.extend_from_slice(&write.at.to_le_bytes());
    record.push(1);
    record.extend_from_slice(&APP.to_le_bytes());
    record.extend_from_slice(&[3, 7]);
    record.extend_from_slice(&write.at.to_le_bytes());
    record.extend_from_slice(&(write.at + 300_000).to_le_bytes());
    record.extend_from_slice(&(write.at + 300_000).to_le_bytes());
    record.extend_from_slice(&write.seq.to_le_bytes());
    record
}

#[derive(Clone, Copy, PartialEq)]
enum Schema {
    Rows,
    RowsWithoutTimerIndex,
    Compact,
}

struct Sqlite {
    schema: Schema,
    writer: Mutex<rusqlite::Connection>,
    wal: File,
    behind: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    checkpoints: Mutex<Option<std::thread::JoinHandle<()>>>,
}

fn sqlite_connection(path: &Path) -> Result<rusqlite::Connection> {
    let connection = rusqlite::Connection::open(path)?;
    connection.busy_timeout(Duration::from_secs(10))?;
    connection.pragma_update(None, "journal_mode", "WAL")?;
    connection.pragma_update(None, "synchronous", "NORMAL")?;
    Ok(connection)
}

fn wal_checkpoint(connection: &rusqlite::Connection) -> rusqlite::Result<(i64, i64)> {
    connection.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |row| Ok((row.get(1)?, row.get(2)?)))
}

impl Sqlite {
    fn open(dir: &Path, schema: Schema, users: u32) -> Result<Self> {
        let path = dir.join("presence.sqlite3");
        let mut writer = sqlite_connection(&path)?;
        writer.pragma_update(None, "cache_size", -65_536)?;
        writer.pragma_update(None, "wal_autocheckpoint", 0)?;
        writer.execute_batch(match schema {
            Schema::Rows => {
                "CREATE TABLE presence (tenant_id TEXT NOT NULL, user_id TEXT NOT NULL, facts TEXT NOT NULL,
                     due_at INTEGER, timer_at INTEGER, version INTEGER NOT NULL DEFAULT 0,
                     PRIMARY KEY (tenant_id, user_id)) WITHOUT ROWID;
                 CREATE INDEX presence_timer ON presence (timer_at) WHERE timer_at IS NOT NULL;"
            }
            Schema::RowsWithoutTimerIndex => {
                "CREATE TABLE presence (tenant_id TEXT NOT NULL, user_id TEXT NOT NULL, facts TEXT NOT NULL,
                     due_at INTEGER, version INTEGER NOT NULL DEFAULT 0,
                     PRIMARY KEY (tenant_id, user_id)) WITHOUT ROWID;"
            }
            Schema::Compact => "CREATE TABLE presence (key BLOB PRIMARY KEY, record BLOB NOT NULL) WITHOUT ROWID;",
        })?;
        let sqlite = {
            let transaction = writer.transaction()?;
            for user in 0..users {
                write_row(&transaction, schema, &Write { user, seq: 0, at: 1_700_000_000_000 })?;
            }
            transaction.commit()?;
            writer.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
            let behind = Arc::new(AtomicBool::new(false));
            let stop = Arc::new(AtomicBool::new(false));
            let checkpoints = {
                let connection = sqlite_connection(&path)?;
                let database = File::open(&path)?;
                let (behind, stop) = (behind.clone(), stop.clone());
                std::thread::spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        std::thread::sleep(Duration::from_secs(1));
                        // Today's catch-up passes, then the writer finishes.
                        let Ok(mut pass) = wal_checkpoint(&connection) else { continue };
                        for _ in 1..8 {
                            if pass.0 < WAL_RESTART_FRAMES {
                                break;
                            }
                            let Ok(next) = wal_checkpoint(&connection) else { break };
                            let appended = next.0 - pass.0;
                            pass = next;
                            if appended < 256 {
                                break;
                            }
                        }
                        if pass.0 >= WAL_RESTART_FRAMES && database.sync_data().is_ok() {
                            behind.store(true, Ordering::Relaxed);
                        }
                    }
                })
            };
            Sqlite {
                schema,
                wal: File::open(dir.join("presence.sqlite3-wal"))?,
                writer: Mutex::new(writer),
                behind,
                stop,
                checkpoints: Mutex::new(Some(checkpoints)),
            }
        };
        sqlite.wal.sync_data()?;
        Ok(sqlite)
    }
}

impl Drop for Sqlite {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.checkpoints.lock().unwrap().take() {
            let _ = thread.join();
        }
    }
}

fn write_row(connection: &rusqlite::Connection, schema: Schema, write: &Write) -> rusqlite::Result<usize> {
    let due = write.at + 300_000;
    match schema {
        Schema::Rows => connection
            .prepare_cached(
                "INSERT INTO presence (tenant_id, user_id, facts, due_at, timer_at, version)
                 VALUES (?1, ?2, ?3, ?4, ?4, ?5)
                 ON CONFLICT (tenant_id, user_id) DO UPDATE SET facts = excluded.facts, due_at = excluded.due_at,
                     timer_at = excluded.timer_at, version = excluded.version",
            )?
            .execute(rusqlite::params![
                guid_text(TENANT),
                user_id(write.user),
                facts_json(write),
                due,
                write.seq as i64
            ]),
        Schema::RowsWithoutTimerIndex => connection
            .prepare_cached(
                "INSERT INTO presence (tenant_id, user_id, facts, due_at, version) VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT (tenant_id, user_id) DO UPDATE SET facts = excluded.facts, due_at = excluded.due_at,
                     version = excluded.version",
            )?
            .execute(rusqlite::params![
                guid_text(TENANT),
                user_id(write.user),
                facts_json(write),
                due,
                write.seq as i64
            ]),
        Schema::Compact => connection
            .prepare_cached(
                "INSERT INTO presence (key, record) VALUES (?1, ?2)
                 ON CONFLICT (key) DO UPDATE SET record = excluded.record",
            )?
            .execute(rusqlite::params![&compact_key(write.user)[..], compact_record(write)]),
    }
}

impl Engine for Sqlite {
    fn apply(&self, writes: &[Write]) -> Result<()> {
        let mut writer = self.writer.lock().unwrap();
        if self.behind.swap(false, Ordering::Relaxed) {
            wal_checkpoint(&writer)?;
        }
        let transaction = writer.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        for write in writes {
            write_row(&transaction, self.schema, write)?;
        }
        transaction.commit()?;
        Ok(())
    }

    fn sync(&self) -> Result<()> {
        self.wal.sync_data()?;
        Ok(())
    }
}

struct Fjall {
    database: fjall::Database,
    presence: fjall::Keyspace,
}

impl Fjall {
    fn open(dir: &Path, users: u32) -> Result<Self> {
        let database = fjall::Database::builder(dir.join("fjall")).open()?;
        let presence = database.keyspace("presence", fjall::KeyspaceCreateOptions::default)?;
        let mut batch = database.batch();
        for user in 0..users {
            let write = Write { user, seq: 0, at: 1_700_000_000_000 };
            batch.insert(&presence, compact_key(user), compact_record(&write));
        }
        batch.commit()?;
        database.persist(fjall::PersistMode::SyncData)?;
        Ok(Fjall { database, presence })
    }
}

impl Engine for Fjall {
    fn apply(&self, writes: &[Write]) -> Result<()> {
        let mut batch = self.database.batch();
        for write in writes {
            batch.insert(&self.presence, compact_key(write.user), compact_record(write));
        }
        batch.commit()?;
        Ok(())
    }

    fn sync(&self) -> Result<()> {
        self.database.persist(fjall::PersistMode::SyncData)?;
        Ok(())
    }
}

/// Group commit, as presenced's SQLite store does it.
#[derive(Default)]
struct Durability {
    state: Mutex<SyncState>,
    synced: Condvar,
}

#[derive(Default)]
struct SyncState {
    committed: u64,
    synced: u64,
    syncing: bool,
    syncs: u64,
}

impl Durability {
    fn committed(&self) -> u64 {
        let mut state = self.state.lock().unwrap();
        state.committed += 1;
        state.committed
    }

    fn wait(&self, engine: &dyn Engine, ticket: u64) -> Result<()> {
        let mut state = self.state.lock().unwrap();
        loop {
            if state.synced >= ticket {
                return Ok(());
            }
            if state.syncing {
                state = self.synced.wait(state).unwrap();
                continue;
            }
            state.syncing = true;
            let target = state.committed;
            drop(state);
            let result = engine.sync();
            state = self.state.lock().unwrap();
            state.syncing = false;
            if result.is_ok() {
                state.synced = state.synced.max(target);
                state.syncs += 1;
            }
            self.synced.notify_all();
            result?;
        }
    }
}

struct Request {
    write: Write,
    reply: SyncSender<u64>,
}

/// The writer thread. With `waits`, it waits until each batch is durable before it takes the next, as
/// presenced's writer does today; without, the clients wait, and the next batch commits during the fsync.
fn writer(
    engine: Arc<dyn Engine>,
    durability: Arc<Durability>,
    requests: Receiver<Request>,
    waits: bool,
) -> Result<()> {
    let mut batch = Vec::with_capacity(BATCH);
    let mut writes = Vec::with_capacity(BATCH);
    while let Ok(first) = requests.recv() {
        batch.push(first);
        while batch.len() < BATCH {
            match requests.try_recv() {
                Ok(request) => batch.push(request),
                Err(_) => break,
            }
        }
        writes.extend(batch.iter().map(|request| request.write));
        engine.apply(&writes)?;
        let ticket = durability.committed();
        if waits {
            durability.wait(&*engine, ticket)?;
        }
        for request in batch.drain(..) {
            let _ = request.reply.send(ticket);
        }
        writes.clear();
    }
    Ok(())
}

/// The engine alone: one thread applies a batch of 64 writes (what 64 connections give the writer) and
/// makes it durable, again and again; no hand-offs, no overlap of a batch with the fsync before it.
fn serial(engine: &dyn Engine, seconds: u64, users: u32) -> Result<()> {
    const WRITES: usize = 64;
    let start = Instant::now();
    let (mut random, mut seq) = (0x9e37_79b9_7f4a_7c15_u64, 0);
    let mut batch = Vec::with_capacity(WRITES);
    let mut run = |count: bool, until: Instant| -> Result<(u64, Duration, Duration)> {
        let (mut batches, mut applying, mut syncing) = (0, Duration::ZERO, Duration::ZERO);
        while Instant::now() < until {
            batch.clear();
            for _ in 0..WRITES {
                random ^= random << 13;
                random ^= random >> 7;
                random ^= random << 17;
                seq += 1;
                let at = 1_700_000_000_000 + start.elapsed().as_millis() as i64;
                batch.push(Write { user: (random % u64::from(users)) as u32, seq, at });
            }
            let began = Instant::now();
            engine.apply(&batch)?;
            let applied = Instant::now();
            engine.sync()?;
            if count {
                batches += 1;
                applying += applied - began;
                syncing += applied.elapsed();
            }
        }
        Ok((batches, applying, syncing))
    };
    run(false, start + WARM_UP)?;
    let (cpu_before, written_before) = (cpu_us(), written_bytes());
    let (batches, applying, syncing) = run(true, Instant::now() + Duration::from_secs(seconds))?;
    let writes = (batches * WRITES as u64).max(1) as f64;
    println!(
        "{{\"engine\":\"{}\",\"serial_writes_per_s\":{:.0},\"apply_us_per_batch\":{:.0},\"sync_us_per_batch\":{:.0},\"cpu_us_per_write\":{:.1},\"bytes_written_per_write\":{:.0}}}",
        std::env::args().nth(1).unwrap_or_default(),
        writes / seconds as f64,
        applying.as_micros() as f64 / batches.max(1) as f64,
        syncing.as_micros() as f64 / batches.max(1) as f64,
        (cpu_us() - cpu_before) as f64 / writes,
        (written_bytes() - written_before) as f64 / writes,
    );
    Ok(())
}

/// CPU time (user and system) this process has used, in microseconds.
fn cpu_us() -> u64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    let fields: Vec<&str> = stat.rsplit(')').next().unwrap().split_whitespace().collect();
    // After the command: state is field 3, utime 14 and stime 15 (1-based over the whole line).
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    ticks * 1_000_000 / 100
}

/// Bytes this process has caused to be written to storage.
fn written_bytes() -> u64 {
    let io = std::fs::read_to_string("/proc/self/io").unwrap();
    io.lines().find_map(|line| line.strip_prefix("write_bytes: ")).unwrap().trim().parse().unwrap()
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let usage = "engine-bench <sqlite-rows|sqlite-rows-without-timer-index|sqlite-compact|fjall> <empty dir> [seconds] [users] [clients]";
    let (Some(name), Some(dir)) = (args.get(1), args.get(2)) else {
        return Err(usage.into());
    };
    let seconds: u64 = args.get(3).map_or(Ok(10), |text| text.parse())?;
    let users: u32 = args.get(4).map_or(Ok(100_000), |text| text.parse())?;
    let clients: usize = args.get(5).map_or(Ok(64), |text| text.parse())?;
    let dir = Path::new(dir);
    let engine: Arc<dyn Engine> = match name.as_str() {
        "sqlite-rows" => Arc::new(Sqlite::open(dir, Schema::Rows, users)?),
        "sqlite-rows-without-timer-index" => Arc::new(Sqlite::open(dir, Schema::RowsWithoutTimerIndex, users)?),
        "sqlite-compact" => Arc::new(Sqlite::open(dir, Schema::Compact, users)?),
        "fjall" => Arc::new(Fjall::open(dir, users)?),
        _ => return Err(usage.into()),
    };
    if clients == 0 {
        return serial(&*engine, seconds, users);
    }
    let durability = Arc::new(Durability::default());
    let (requests, queue): (Sender<Request>, _) = mpsc::channel();
    let writer_thread = {
        let (engine, durability) = (engine.clone(), durability.clone());
        let waits = std::env::var_os("WRITER_WAITS").is_some_and(|value| value == "1");
        std::thread::spawn(move || writer(engine, durability, queue, waits))
    };
    let start = Instant::now();
    let counted_from = start + WARM_UP;
    let end = counted_from + Duration::from_secs(seconds);
    let acknowledged = Arc::new(AtomicU64::new(0));
    let client_threads: Vec<_> = (0..clients)
        .map(|client| {
            let (engine, durability, requests, acknowledged) =
                (engine.clone(), durability.clone(), requests.clone(), acknowledged.clone());
            std::thread::spawn(move || -> Result<Vec<u32>> {
                let (reply, replies) = mpsc::sync_channel(1);
                let mut random = 0x9e37_79b9_7f4a_7c15_u64 ^ (client as u64 + 1).wrapping_mul(0xbf58_476d_1ce4_e5b9);
                let mut latencies = Vec::new();
                let mut seq = 0;
                loop {
                    let began = Instant::now();
                    if began >= end {
                        return Ok(latencies);
                    }
                    random ^= random << 13;
                    random ^= random >> 7;
                    random ^= random << 17;
                    seq += 1;
                    let at = 1_700_000_000_000 + start.elapsed().as_millis() as i64;
                    let write = Write { user: (random % u64::from(users)) as u32, seq, at };
                    requests.send(Request { write, reply: reply.clone() })?;
                    let ticket = replies.recv()?;
                    durability.wait(&*engine, ticket)?;
                    let done = Instant::now();
                    if began >= counted_from && done <= end {
                        acknowledged.fetch_add(1, Ordering::Relaxed);
                        latencies.push(done.duration_since(began).as_micros() as u32);
                    }
                }
            })
        })
        .collect();
    drop(requests);
    std::thread::sleep(counted_from.saturating_duration_since(Instant::now()));
    let (cpu_before, written_before, syncs_before) =
        (cpu_us(), written_bytes(), durability.state.lock().unwrap().syncs);
    std::thread::sleep(end.saturating_duration_since(Instant::now()));
    let (cpu_after, written_after, syncs_after) = (cpu_us(), written_bytes(), durability.state.lock().unwrap().syncs);
    let mut latencies = Vec::new();
    for thread in client_threads {
        latencies.extend(thread.join().map_err(|_| "a client panicked")??);
    }
    writer_thread.join().map_err(|_| "the writer panicked")??;
    latencies.sort_unstable();
    let writes = acknowledged.load(Ordering::Relaxed).max(1);
    let percentile = |p: usize| latencies.get(latencies.len() * p / 100).copied().unwrap_or(0);
    let syncs = (syncs_after - syncs_before).max(1);
    println!(
        "{{\"engine\":\"{name}\",\"writes_per_s\":{:.0},\"p50_us\":{},\"p99_us\":{},\"cpu_us_per_write\":{:.1},\"bytes_written_per_write\":{:.0},\"writes_per_fsync\":{:.1}}}",
        writes as f64 / seconds as f64,
        percentile(50),
        percentile(99),
        (cpu_after - cpu_before) as f64 / writes as f64,
        (written_after - written_before) as f64 / writes as f64,
        writes as f64 / syncs as f64,
    );
    Ok(())
}
