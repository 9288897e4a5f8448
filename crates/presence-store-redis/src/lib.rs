//! The Redis Cluster backend of the store contract: several presenced processes share one cluster.
//!
//! Every promise of [`PresenceStore`] is kept with scripts that touch one hash slot each (see [`keys`] for
//! where everything lives):
//! - **A user's write** is one script on the user's partition: it checks the record's version (a write in
//!   between makes the script refuse, and the update re-reads and re-runs its closure), stores the facts,
//!   the version and the timer, and stages the notifications in the partition's outbox stream: a
//!   transactional outbox. A batch of users is written with one script per primary, which spans that
//!   primary's slots and checks that it holds every key before it writes any, and one `WAIT` behind it.
//! - **Timers** are a sorted set per partition. A claim moves a due user's score to the end of the lease
//!   instead of removing it, so a claimer that dies loses nothing: the user falls due again.
//! - **Relaying** moves outbox entries to their subscriptions' queues; each queue remembers, per partition,
//!   the last outbox entry it took (a high-water mark), so a relay repeated after a crash queues nothing
//!   twice. A handle relays the partitions it wrote to, and every few seconds looks at all of them (what a
//!   process that died left behind).
//! - **Queues** are streams whose entry ids are the positions, in the slot of their subscription's
//!   partition, with the partition's index of queue lengths and its delivery leases.
//! - **Subscriptions** live in one registry slot (records, versions, per-application counts and the change
//!   log), so creation within the limit, every change and its log entry are atomic. Queue work that a
//!   change brings (notifications to queue, or a removal's dropped queue and farewell) is written to the
//!   registry as *pending* in the same script, then done on the queues' slot idempotently and cleared; a
//!   pending entry that a crash left is done by the next handle that lists subscriptions or queues.
//! - **Durability**: every write waits (`WAIT`) until `wait_replicas` replicas have it, and the cluster is
//!   expected to run with `appendfsync always`; a write that too few replicas acknowledged in time answers
//!   [`StoreError::Unavailable`].
//!
//! The methods block: each runs on the store's own small tokio runtime, so they can be called from any
//! thread but one driving a current-thread tokio runtime (the engine calls them on blocking threads).

mod keys;
mod scripts;
#[cfg(feature = "testing")]
pub mod testing;

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock, Weak};
use std::time::{Duration, Instant, SystemTime};

use futures_util::future::join_all;
use presence_core::UserFacts;
use presence_store::codec::{decode, encode};
use presence_store::{
    ChangedUsers, DirectoryUser, Effects, FarewellFn, NewNotification, PresenceStore, QueueId, QueueKind,
    QueuedNotification, RecordsFuture, SharedCount, StoreError, StoredSubscription, SubscriptionChanges,
    SubscriptionFn, UpdateFn, UpdateManyFn, Updated, UserKey, UserRecord,
};
use redis::cluster::ClusterClientBuilder;
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{Route, RoutingInfo, SingleNodeRoutingInfo, SlotAddr};
use redis::{AsyncCommands, Script, Value};
use serde::{Deserialize, Serialize};

use crate::keys::{queue_tag, Keys, PARTITIONS};
use crate::scripts::REGISTRY_KEYS;

/// How often a handle looks at every partition's outbox, not only those it wrote to.
const OUTBOX_SWEEP: Duration = Duration::from_secs(5);
/// How often the watchdog checks that the connection answers, and how long it waits for an answer.
const WATCHDOG_INTERVAL: Duration = Duration::from_millis(500);
const WATCHDOG_TIMEOUT: Duration = Duration::from_secs(1);
/// How many checks in a row may fail before the connection is replaced.
const WATCHDOG_FAILURES: u32 = 2;

/// How many times an update re-reads and re-runs its closure under contention before giving up.
const MAX_ATTEMPTS: usize = 10_000;

/// How to reach the cluster, and when a write counts as durable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisConfig {
    /// Seed nodes: `redis://host:port`, or `rediss://host:port` for TLS.
    pub urls: Vec<String>,
    /// The ACL user, if any.
    pub username: Option<String>,
    /// The ACL password, if any.
    pub password: Option<String>,
    /// Extra root certificates (PEM) for `rediss://` nodes; else the system's.
    pub ca_file: Option<PathBuf>,
    /// Prefix of every key (without `{` or `}`).
    pub key_prefix: String,
    /// Replicas that must have a write before it is acknowledged.
    pub wait_replicas: u32,
    /// How long a write waits for them.
    pub wait_timeout: Duration,
}

/// A handle on the store in a Redis Cluster.
pub struct RedisStore {
    runtime: Option<tokio::runtime::Runtime>,
    /// The multiplexed connection every call clones; replaced by the watchdog when it stops answering.
    connection: Arc<RwLock<ClusterConnection>>,
    keys: Keys,
    wait_replicas: u32,
    wait_timeout_ms: u64,
    /// Partitions this handle staged notifications in since it last relayed them.
    dirty: Mutex<BTreeSet<u16>>,
    /// When this handle last looked at every partition's outbox.
    swept: Mutex<Option<Instant>>,
    /// Which primary serves each partition (an index per partition, from `CLUSTER SLOTS`), to send the
    /// commands of many partitions as one pipeline per primary; `None` until read, or after a command
    /// found a slot moved.
    topology: RwLock<Option<Arc<Vec<usize>>>>,
    /// Tests: the next many-user write takes one primary for all (see [`RedisStore::misroute_next_write`]).
    #[cfg(feature = "testing")]
    misroute: std::sync::atomic::AtomicBool,
    /// The last stamp this handle gave or saw (a hybrid logical clock in microseconds): relaying merges
    /// the partitions' outboxes by stamp, so one handle's notifications keep the order of its writes.
    stamp: AtomicI64,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.debug_struct("RedisStore").field("wait_replicas", &self.wait_replicas).finish_non_exhaustive()
    }
}

fn backend(error: redis::RedisError) -> StoreError {
    let text = error.to_string();
    if text.contains("NOREPLICAS") || text.contains("CLUSTERDOWN") {
        StoreError::Unavailable(text)
    } else {
        StoreError::Backend(text)
    }
}

/// An added user as the store keeps it: with the lookup form of its user principal name, which the script
/// that renames it reads.
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct StoredDirectoryUser {
    id: String,
    user_principal_name: String,
    display_name: String,
    upn_key: String,
}

fn directory_user_of(key: &str, json: &str) -> Result<DirectoryUser, StoreError> {
    let stored: StoredDirectoryUser =
        serde_json::from_str(json).map_err(|error| corrupt(key, format!("an added user: {error}")))?;
    Ok(DirectoryUser {
        id: stored.id,
        user_principal_name: stored.user_principal_name,
        display_name: stored.display_name,
    })
}

fn corrupt(record: impl Into<String>, reason: impl Into<String>) -> StoreError {
    StoreError::Corrupt { record: record.into(), reason: reason.into() }
}

fn kind_letter(kind: QueueKind) -> &'static str {
    match kind {
        QueueKind::Changes => "c",
        QueueKind::Lifecycle => "l",
    }
}

fn queue_field(queue: &QueueId) -> String {
    format!("{}:{}", kind_letter(queue.kind), queue.subscription_id)
}

fn parse_queue_field(field: &str) -> Option<QueueId> {
    match field.split_once(':')? {
        ("c", id) => Some(QueueId::changes(id)),
        ("l", id) => Some(QueueId::lifecycle(id)),
        _ => None,
    }
}

/// Bits of a position that hold the queue's tag; the number is above them.
const TAG_BITS: u32 = 24;

/// The stream entry id of `position` in `queue`, or `None` when the position is not one of its.
fn entry_id(queue: &QueueId, position: u64) -> Option<String> {
    let tag = queue_tag(&queue_field(queue));
    (position & ((1 << TAG_BITS) - 1) == tag).then(|| format!("{}-{tag}", position >> TAG_BITS))
}

/// The position of a queue's stream entry id.
fn position_of(id: &str) -> Option<u64> {
    let (number, tag) = id.split_once('-')?;
    Some((number.parse::<u64>().ok()? << TAG_BITS) | tag.parse::<u64>().ok()?)
}

/// A notification as stored in an outbox or a queue.
#[derive(Serialize, Deserialize)]
struct Entry {
    /// In an outbox: the queue it goes to (`c:id` or `l:id`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    q: Option<String>,
    url: String,
    at: i64,
    item: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    rd: Option<String>,
}

impl Entry {
    fn of(notification: &NewNotification, staged: bool) -> String {
        let entry = Entry {
            q: staged.then(|| queue_field(&notification.queue)),
            url: notification.url.clone(),
            at: notification.created_at,
            item: notification.item.clone(),
            rd: notification.resource_data.clone(),
        };
        serde_json::to_string(&entry).expect("serialising plain structs cannot fail")
    }

    fn read(text: &str, record: &str) -> Result<Entry, StoreError> {
        serde_json::from_str(text).map_err(|error| corrupt(record, error.to_string()))
    }
}

/// How a write at an expected version of a subscription ended.
enum Versioned {
    /// Another write came in between: read again and retry.
    Conflict,
    /// There is no such subscription.
    Missing,
    /// Written.
    Written,
}

/// A subscription as stored in the registry (its version is kept beside it).
#[derive(Serialize, Deserialize)]
struct StoredBody {
    tenant: String,
    app: String,
    body: String,
}

/// Queue work a subscription change left in the registry, done on the queues' slot.
#[derive(Serialize, Deserialize)]
struct Pending {
    sub: String,
    version: u64,
    remove: bool,
    /// Pairs of queue kind (`c` or `l`) and entry.
    notes: Vec<(String, String)>,
}

/// The group of the `index`th command, on `partition`: the primary serving it, or a group of its own
/// when that is not known.
fn owner(topology: Option<&Vec<usize>>, partition: u16, index: usize) -> usize {
    let owner = topology.and_then(|topology| topology.get(usize::from(partition)).copied());
    owner.filter(|owner| *owner != usize::MAX).unwrap_or(usize::MAX - index)
}

fn int(value: &Value) -> Option<i64> {
    match value {
        Value::Int(number) => Some(*number),
        Value::BulkString(bytes) => std::str::from_utf8(bytes).ok()?.parse().ok(),
        Value::SimpleString(text) => text.parse().ok(),
        _ => None,
    }
}

fn text(value: &Value) -> Option<String> {
    match value {
        Value::BulkString(bytes) => String::from_utf8(bytes.clone()).ok(),
        Value::SimpleString(text) => Some(text.clone()),
        Value::Int(number) => Some(number.to_string()),
        _ => None,
    }
}

/// A sorted-set score (a double in its text form) as milliseconds.
fn score(value: &str) -> Option<i64> {
    value.parse::<i64>().ok().or_else(|| {
        // Saturating: scores at the ends of i64 come back in exponent form.
        #[allow(clippy::cast_possible_truncation)]
        value.parse::<f64>().ok().map(|float| float as i64)
    })
}

/// Pairs of a flat `[field, value, field, value, …]` reply.
fn pairs(value: &Value) -> Vec<(String, String)> {
    match value {
        Value::Array(items) => items
            .chunks(2)
            .filter_map(|pair| match pair {
                [field, value] => Some((text(field)?, text(value)?)),
                _ => None,
            })
            .collect(),
        Value::Map(items) => items.iter().filter_map(|(field, value)| Some((text(field)?, text(value)?))).collect(),
        _ => Vec::new(),
    }
}

impl RedisStore {
    /// Connects to the cluster and checks the stored format (the partition count) or writes it.
    pub fn open(config: &RedisConfig) -> Result<RedisStore, StoreError> {
        if config.urls.is_empty() {
            return Err(StoreError::Backend("no Redis node to connect to (redis_urls is empty)".into()));
        }
        if config.key_prefix.contains(['{', '}']) {
            return Err(StoreError::Backend("the Redis key prefix must not contain '{' or '}'".into()));
        }
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("presence-redis")
            .enable_all()
            .build()
            .map_err(|error| StoreError::Backend(format!("starting the Redis client's runtime: {error}")))?;
        // A command answers within the replicas' wait and a second, or fails (and the request with it), so
        // that a failing node holds no request for long.
        let mut builder = ClusterClientBuilder::new(config.urls.clone())
            .connection_timeout(Duration::from_secs(1))
            .response_timeout(config.wait_timeout + Duration::from_secs(1))
            .retries(4);
        if let Some(username) = &config.username {
            builder = builder.username(username);
        }
        if let Some(password) = &config.password {
            builder = builder.password(password);
        }
        if let Some(ca_file) = &config.ca_file {
            let root = std::fs::read(ca_file)
                .map_err(|error| StoreError::Backend(format!("reading {}: {error}", ca_file.display())))?;
            builder = builder.certs(redis::TlsCertificates { client_tls: None, root_cert: Some(root) });
        }
        let client = builder.build().map_err(backend)?;
        let connection = runtime.block_on(client.get_async_connection()).map_err(backend)?;
        let connection = Arc::new(RwLock::new(connection));
        runtime.spawn(watchdog(client, Arc::downgrade(&connection)));
        let wait_timeout_ms = u64::try_from(config.wait_timeout.as_millis()).unwrap_or(u64::MAX).max(1);
        let store = RedisStore {
            runtime: Some(runtime),
            connection,
            keys: Keys::new(&config.key_prefix),
            wait_replicas: config.wait_replicas,
            wait_timeout_ms,
            dirty: Mutex::default(),
            swept: Mutex::default(),
            stamp: AtomicI64::new(0),
            topology: RwLock::new(None),
            #[cfg(feature = "testing")]
            misroute: std::sync::atomic::AtomicBool::new(false),
        };
        store.check_format()?;
        store.finish_pending()?;
        Ok(store)
    }

    /// Runs `future` on the store's runtime and waits for it. Called from a thread of another (multi-thread)
    /// runtime, that thread first hands its other work over (`block_in_place`), as a blocking call must.
    fn run<T>(&self, future: impl std::future::Future<Output = T>) -> T {
        let runtime = self.runtime.as_ref().expect("the runtime lives as long as the store");
        tokio::task::block_in_place(|| runtime.block_on(future))
    }

    /// The next stamp: the wall clock in microseconds, or one more than the last stamp given or seen.
    fn next_stamp(&self) -> i64 {
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |elapsed| i64::try_from(elapsed.as_micros()).unwrap_or(i64::MAX));
        let previous = self
            .stamp
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |last| Some(now.max(last + 1)))
            .unwrap_or_else(|last| last);
        now.max(previous + 1)
    }

    fn connection(&self) -> ClusterConnection {
        self.connection.read().unwrap_or_else(PoisonError::into_inner).clone()
    }

    fn check_format(&self) -> Result<(), StoreError> {
        let key = self.keys.format();
        let mut connection = self.connection();
        let stored: Option<String> = self
            .run(async {
                let _: bool = redis::cmd("HSETNX")
                    .arg(&key)
                    .arg("partitions")
                    .arg(PARTITIONS)
                    .query_async(&mut connection)
                    .await?;
                connection.hget(&key, "partitions").await
            })
            .map_err(backend)?;
        match stored.as_deref().and_then(|text| text.parse::<u16>().ok()) {
            Some(PARTITIONS) => Ok(()),
            other => Err(corrupt(
                key,
                format!("the store was made with {other:?} partitions; this version uses {PARTITIONS}"),
            )),
        }
    }

    /// Waits until `wait_replicas` replicas of the primary of `slot` have every write sent to it so far.
    async fn durable(&self, connection: &mut ClusterConnection, slot: u16) -> Result<(), StoreError> {
        if self.wait_replicas == 0 {
            return Ok(());
        }
        let mut wait = redis::cmd("WAIT");
        wait.arg(self.wait_replicas).arg(self.wait_timeout_ms);
        let route = RoutingInfo::SingleNode(SingleNodeRoutingInfo::SpecificNode(Route::new(slot, SlotAddr::Master)));
        let reached = connection.route_command(wait, route).await.map_err(backend)?;
        self.reached(&reached)
    }

    /// Whether `WAIT`'s answer `reached` says enough replicas have the writes.
    fn reached(&self, reached: &Value) -> Result<(), StoreError> {
        match int(reached) {
            Some(count) if count >= i64::from(self.wait_replicas) => Ok(()),
            Some(count) => Err(StoreError::Unavailable(format!(
                "{count} of {} replicas acknowledged the write within {} ms",
                self.wait_replicas, self.wait_timeout_ms
            ))),
            None => Err(StoreError::Backend(format!("WAIT answered {reached:?}"))),
        }
    }

    /// Runs `script` (it declares no keys) with `args` on the primary serving `slot`, followed in the same
    /// pipeline by a `WAIT` when writes wait for replicas: the script's answer, and whether its writes are
    /// durable. A script the node does not know yet is loaded and run again.
    async fn run_on_node(
        &self,
        script: &Script,
        args: &[&str],
        slot: u16,
    ) -> Result<(Value, Result<(), StoreError>), StoreError> {
        let route = SingleNodeRoutingInfo::SpecificNode(Route::new(slot, SlotAddr::Master));
        let mut connection = self.connection();
        let mut loaded = false;
        loop {
            let mut pipe = redis::pipe();
            pipe.cmd("EVALSHA").arg(script.get_hash()).arg(0).arg(args);
            if self.wait_replicas > 0 {
                pipe.cmd("WAIT").arg(self.wait_replicas).arg(self.wait_timeout_ms);
            }
            let count = if self.wait_replicas > 0 { 2 } else { 1 };
            let replies = connection.route_pipeline(pipe, 0, count, route.clone()).await.map_err(backend)?;
            let mut replies = replies.into_iter();
            let answer = replies.next().ok_or_else(|| StoreError::Backend("a script went unanswered".into()))?;
            if let Value::ServerError(error) = &answer {
                if error.code() == "NOSCRIPT" && !loaded {
                    script.prepare_invoke().load_async(&mut connection).await.map_err(backend)?;
                    loaded = true;
                    continue;
                }
                return Err(backend(redis::RedisError::from(error.clone())));
            }
            let durable = replies.next().map_or(Ok(()), |reached| self.reached(&reached));
            return Ok((answer, durable));
        }
    }

    /// Runs `script` with `keys` and `args`, then waits until the write is durable on the primary of
    /// `slot`, the slot it wrote to.
    async fn write(
        &self,
        connection: &mut ClusterConnection,
        script: &Script,
        keys: &[String],
        args: &[String],
        slot: u16,
    ) -> Result<Value, StoreError> {
        let mut invocation = script.prepare_invoke();
        for key in keys {
            invocation.key(key);
        }
        for arg in args {
            invocation.arg(arg);
        }
        let value: Value = invocation.invoke_async(connection).await.map_err(backend)?;
        self.durable(connection, slot).await?;
        Ok(value)
    }

    /// Runs a registry script that writes at an expected version, durably.
    async fn write_registry(
        &self,
        connection: &mut ClusterConnection,
        script: &Script,
        args: &[String],
    ) -> Result<Versioned, StoreError> {
        let answer = self.write(connection, script, &self.registry_keys(), args, self.registry_slot()).await?;
        match int(&answer) {
            Some(-1) => Ok(Versioned::Conflict),
            Some(-2) => Ok(Versioned::Missing),
            Some(_) => Ok(Versioned::Written),
            None => Err(StoreError::Backend(format!("a subscription script answered {answer:?}"))),
        }
    }

    fn registry_keys(&self) -> Vec<String> {
        REGISTRY_KEYS.iter().map(|name| self.keys.registry(name)).collect()
    }

    fn registry_slot(&self) -> u16 {
        keys::slot("registry")
    }

    async fn read_record(
        &self,
        connection: &mut ClusterConnection,
        key: &UserKey,
    ) -> Result<Option<UserRecord>, StoreError> {
        let (command, _) = self.record_read(key);
        let value: Value = command.query_async(connection).await.map_err(backend)?;
        Self::record_of(key, value)
    }

    /// The command that reads a user's record, and the user's partition.
    fn record_read(&self, key: &UserKey) -> (redis::Cmd, u16) {
        let (member, partition) = self.keys.user(&key.tenant_id, &key.user_id);
        let mut command = redis::cmd("HMGET");
        command.arg(self.keys.record(partition, &member)).arg("f").arg("v").arg("d");
        (command, partition)
    }

    /// A user's record from the reply to [`RedisStore::record_read`].
    fn record_of(key: &UserKey, value: Value) -> Result<Option<UserRecord>, StoreError> {
        let record = || format!("{}/{}", key.tenant_id, key.user_id);
        let (facts, version, due): (Option<String>, Option<u64>, Option<i64>) =
            redis::from_redis_value(value).map_err(|error| corrupt(record(), error.to_string()))?;
        let Some(version) = version else { return Ok(None) };
        let facts = match facts {
            Some(text) => decode(&text).map_err(|reason| corrupt(record(), reason))?,
            None => UserFacts::default(),
        };
        Ok(Some(UserRecord { facts, due_at: due, version }))
    }

    /// Reads the records of `keys` (one pipeline per primary).
    async fn read_records(&self, keys: &[UserKey]) -> Vec<Result<Option<UserRecord>, StoreError>> {
        let commands: Vec<(u16, redis::Cmd)> = keys
            .iter()
            .map(|key| {
                let (command, partition) = self.record_read(key);
                (partition, command)
            })
            .collect();
        let replies = self.pipelined(commands).await;
        keys.iter().zip(replies).map(|(key, reply)| Self::record_of(key, reply?)).collect()
    }

    /// Runs one command on a key of every partition (`key` names it, `command` makes the command of it),
    /// as one pipeline per primary, and decodes each reply: `(partition, reply)` in partition order.
    async fn on_every_partition<T: redis::FromRedisValue>(
        &self,
        key: impl Fn(u16) -> String,
        command: impl Fn(u16, &str) -> redis::Cmd,
    ) -> Result<Vec<(u16, T)>, StoreError> {
        let commands =
            self.keys.partitions().map(|partition| (partition, command(partition, &key(partition)))).collect();
        let replies = self.pipelined(commands).await;
        self.keys
            .partitions()
            .zip(replies)
            .map(|(partition, reply)| {
                let decoded =
                    redis::from_redis_value(reply?).map_err(|error| corrupt(key(partition), error.to_string()))?;
                Ok((partition, decoded))
            })
            .collect()
    }

    /// Which primary serves each partition, as last read (read now when it is not known).
    async fn topology(&self) -> Option<Arc<Vec<usize>>> {
        let known = self.topology.read().unwrap_or_else(PoisonError::into_inner).clone();
        if known.is_some() {
            return known;
        }
        let read = self.read_topology().await;
        self.topology.write().unwrap_or_else(PoisonError::into_inner).clone_from(&read);
        read
    }

    /// Which primary serves each partition, as the cluster says now (`CLUSTER SLOTS`).
    async fn read_topology(&self) -> Option<Arc<Vec<usize>>> {
        let route = RoutingInfo::SingleNode(SingleNodeRoutingInfo::Random);
        let reply = self.connection().route_command(redis::cmd("CLUSTER").arg("SLOTS").clone(), route).await.ok()?;
        let Value::Array(ranges) = reply else { return None };
        let mut primaries: Vec<String> = Vec::new();
        let mut owners: Vec<(i64, i64, usize)> = Vec::new();
        for range in ranges {
            let Value::Array(parts) = range else { continue };
            let (Some(start), Some(end), Some(Value::Array(primary))) =
                (parts.first().and_then(int), parts.get(1).and_then(int), parts.get(2))
            else {
                continue;
            };
            let name = format!("{}:{}", primary.first().and_then(text)?, primary.get(1).and_then(int)?);
            let index = primaries.iter().position(|known| *known == name).unwrap_or_else(|| {
                primaries.push(name);
                primaries.len() - 1
            });
            owners.push((start, end, index));
        }
        let topology = self
            .keys
            .partitions()
            .map(|partition| {
                let slot = i64::from(self.keys.partition_slot(partition));
                owners
                    .iter()
                    .find(|(start, end, _)| (*start..=*end).contains(&slot))
                    .map_or(usize::MAX, |owner| owner.2)
            })
            .collect();
        Some(Arc::new(topology))
    }

    /// Runs `commands` (each with the partition of its keys) as one pipeline per primary, answering in
    /// order. A command that finds its slot moved (or a pipeline that fails) is sent again on its own, which
    /// follows redirections, and the topology is read again next time.
    async fn pipelined(&self, commands: Vec<(u16, redis::Cmd)>) -> Vec<Result<Value, StoreError>> {
        let topology = self.topology().await;
        let mut groups: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
        for (index, (partition, _)) in commands.iter().enumerate() {
            groups.entry(owner(topology.as_deref(), *partition, index)).or_default().push(index);
        }
        let sent = join_all(groups.into_values().map(|members| {
            let mut connection = self.connection();
            let commands = &commands;
            async move {
                let mut pipe = redis::pipe();
                for index in &members {
                    pipe.add_command(commands[*index].1.clone());
                }
                let slot = self.keys.partition_slot(commands[members[0]].0);
                let route = SingleNodeRoutingInfo::SpecificNode(Route::new(slot, SlotAddr::Master));
                let replies = connection.route_pipeline(pipe, 0, members.len(), route).await;
                (members, replies)
            }
        }))
        .await;
        let mut results: Vec<Option<Result<Value, StoreError>>> = vec![None; commands.len()];
        let mut again = Vec::new();
        for (members, replies) in sent {
            match replies {
                Ok(values) if values.len() == members.len() => {
                    for (index, value) in members.into_iter().zip(values) {
                        if matches!(value, Value::ServerError(_)) {
                            again.push(index);
                        } else {
                            results[index] = Some(Ok(value));
                        }
                    }
                }
                _ => again.extend(members),
            }
        }
        if !again.is_empty() {
            *self.topology.write().unwrap_or_else(PoisonError::into_inner) = None;
            let retried = join_all(again.iter().map(|index| {
                let mut connection = self.connection();
                let command = &commands[*index].1;
                async move { command.query_async::<Value>(&mut connection).await.map_err(backend) }
            }))
            .await;
            for (index, result) in again.into_iter().zip(retried) {
                results[index] = Some(result);
            }
        }
        results
            .into_iter()
            .map(|result| result.unwrap_or_else(|| Err(StoreError::Backend("not sent".into()))))
            .collect()
    }

    /// The keys and arguments of one user's [`scripts::UPDATE`], and the user's partition.
    fn update_arguments(
        &self,
        key: &UserKey,
        expected: u64,
        facts: &UserFacts,
        effects: &Effects,
    ) -> (u16, [String; 4], Vec<String>) {
        let (member, partition) = self.keys.user(&key.tenant_id, &key.user_id);
        let keys = [
            self.keys.record(partition, &member),
            self.keys.timers(partition),
            self.keys.outbox(partition),
            self.keys.changes(partition),
        ];
        let mut args = vec![
            expected.to_string(),
            if effects.timer_only { String::new() } else { encode(facts) },
            effects.due_at.map(|due| due.to_string()).unwrap_or_default(),
            member,
            self.next_stamp().to_string(),
            if effects.visible { "1" } else { "0" }.to_owned(),
        ];
        args.extend(effects.notifications.iter().map(|notification| Entry::of(notification, true)));
        (partition, keys, args)
    }

    /// What an update script's answer says: the new version, or `None` when another write came in between.
    fn updated(&self, value: &Value) -> Result<Option<u64>, StoreError> {
        match value {
            Value::Int(-1) => Ok(None),
            Value::Array(parts) => match parts.as_slice() {
                [version, stamp] => {
                    if let Some(stamp) = int(stamp) {
                        self.stamp.fetch_max(stamp, Ordering::SeqCst);
                    }
                    Ok(Some(int(version).and_then(|version| u64::try_from(version).ok()).unwrap_or_default()))
                }
                _ => Err(StoreError::Backend(format!("the update script answered {value:?}"))),
            },
            _ => Err(StoreError::Backend(format!("the update script answered {value:?}"))),
        }
    }

    /// Writes one user's effects at the version read, durably; `Ok(None)` when another write came in
    /// between.
    async fn write_record(
        &self,
        connection: &mut ClusterConnection,
        key: &UserKey,
        expected: u64,
        facts: &UserFacts,
        effects: &Effects,
    ) -> Result<Option<u64>, StoreError> {
        let (partition, keys, args) = self.update_arguments(key, expected, facts, effects);
        let slot = self.keys.partition_slot(partition);
        let value = self.write(connection, &scripts::UPDATE, &keys, &args, slot).await?;
        if !effects.notifications.is_empty() {
            self.dirty.lock().unwrap_or_else(PoisonError::into_inner).insert(partition);
        }
        self.updated(&value)
    }

    /// Writes many users' effects (each `(user, expected version, facts, effects)`), durably: one script
    /// and one `WAIT` per primary, sent together, instead of one of each per user. The users of a primary
    /// whose script failed (a slot that moved, the connection lost) are written one by one, which follows
    /// redirections; the script changes nothing when one of its keys is not on its node.
    async fn write_records(
        &self,
        writes: &[(&UserKey, u64, &UserFacts, &Effects)],
    ) -> Vec<Result<Option<u64>, StoreError>> {
        #[allow(unused_mut)]
        let mut topology = self.topology().await;
        #[cfg(feature = "testing")]
        if self.misroute.swap(false, Ordering::SeqCst) {
            topology = Some(Arc::new(self.keys.partitions().map(|_| 0).collect()));
        }
        let mut groups: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
        let mut partitions = Vec::with_capacity(writes.len());
        let mut arguments = Vec::with_capacity(writes.len());
        for (index, (key, expected, facts, effects)) in writes.iter().enumerate() {
            let (partition, keys, args) = self.update_arguments(key, *expected, facts, effects);
            groups.entry(owner(topology.as_deref(), partition, index)).or_default().push(index);
            partitions.push(partition);
            arguments.push((keys, args));
        }
        let sent = join_all(groups.into_values().map(|members| {
            let arguments = &arguments;
            let partitions = &partitions;
            async move {
                // Per user: its keys, UPDATE's arguments, how many notifications follow, the notifications.
                let fixed = scripts::UPDATE_ARGS;
                let counts: Vec<String> =
                    members.iter().map(|index| (arguments[*index].1.len() - fixed).to_string()).collect();
                let mut args: Vec<&str> = Vec::new();
                for (index, count) in members.iter().zip(&counts) {
                    let (keys, rest) = &arguments[*index];
                    args.extend(keys.iter().map(String::as_str));
                    args.extend(rest[..fixed].iter().map(String::as_str));
                    args.push(count);
                    args.extend(rest[fixed..].iter().map(String::as_str));
                }
                let slot = self.keys.partition_slot(partitions[members[0]]);
                let answers = self.run_on_node(&scripts::UPDATE_MANY, &args, slot).await;
                (members, answers)
            }
        }))
        .await;
        let mut results: Vec<Option<Result<Option<u64>, StoreError>>> = writes.iter().map(|_| None).collect();
        let mut again = Vec::new();
        for (members, answers) in sent {
            match answers {
                Ok((Value::Array(answers), durable)) if answers.len() == members.len() => {
                    for (index, answer) in members.into_iter().zip(answers) {
                        results[index] = Some(self.updated(&answer).and_then(|version| match (&durable, version) {
                            (Err(error), Some(_)) => Err(error.clone()),
                            (_, version) => Ok(version),
                        }));
                    }
                }
                Err(StoreError::Unavailable(reason)) => {
                    for index in members {
                        results[index] = Some(Err(StoreError::Unavailable(reason.clone())));
                    }
                }
                _ => again.extend(members),
            }
        }
        if !again.is_empty() {
            *self.topology.write().unwrap_or_else(PoisonError::into_inner) = None;
            let retried = join_all(again.iter().map(|index| {
                let mut connection = self.connection();
                let (key, expected, facts, effects) = writes[*index];
                async move { self.write_record(&mut connection, key, expected, facts, effects).await }
            }))
            .await;
            for (index, result) in again.into_iter().zip(retried) {
                results[index] = Some(result);
            }
        }
        let mut dirty = self.dirty.lock().unwrap_or_else(PoisonError::into_inner);
        for (index, (_, _, _, effects)) in writes.iter().enumerate() {
            if !effects.notifications.is_empty() {
                dirty.insert(partitions[index]);
            }
        }
        drop(dirty);
        results
            .into_iter()
            .map(|result| result.unwrap_or_else(|| Err(StoreError::Backend("not sent".into()))))
            .collect()
    }

    async fn update_one(
        &self,
        connection: &mut ClusterConnection,
        key: &UserKey,
        apply: &mut (dyn FnMut(&mut UserFacts, Option<i64>) -> Option<Effects> + '_),
    ) -> Result<Updated, StoreError> {
        for _ in 0..MAX_ATTEMPTS {
            let read = self.read_record(connection, key).await?;
            let (mut facts, due_at, version) = match read {
                Some(read) => (read.facts, read.due_at, read.version),
                None => (UserFacts::default(), None, 0),
            };
            let Some(effects) = apply(&mut facts, due_at) else { return Ok(Updated::Declined) };
            if let Some(version) = self.write_record(connection, key, version, &facts, &effects).await? {
                return Ok(Updated::Written { version });
            }
        }
        Err(StoreError::Backend(format!("user {}/{} is written too often to update", key.tenant_id, key.user_id)))
    }

    /// `error`, after clearing the user's timer when the record is corrupt: one corrupt record must not
    /// keep everyone's timers busy.
    async fn clear_timer_if_corrupt(
        &self,
        connection: &ClusterConnection,
        key: &UserKey,
        error: StoreError,
    ) -> StoreError {
        if !matches!(error, StoreError::Corrupt { .. }) {
            return error;
        }
        let (member, partition) = self.keys.user(&key.tenant_id, &key.user_id);
        let cleared: Result<i64, _> = connection.clone().zrem(self.keys.timers(partition), &member).await;
        match cleared {
            Ok(_) => error,
            Err(failure) => backend(failure),
        }
    }

    /// Queues `notifications` directly (not staged), grouped by subscription.
    async fn enqueue_now(
        &self,
        connection: &mut ClusterConnection,
        notifications: &[NewNotification],
    ) -> Result<(), StoreError> {
        let mut by_subscription: BTreeMap<&str, Vec<&NewNotification>> = BTreeMap::new();
        for notification in notifications {
            by_subscription.entry(&notification.queue.subscription_id).or_default().push(notification);
        }
        for (subscription, notes) in by_subscription {
            let mut args = Self::queue_args(subscription);
            for notification in notes {
                args.push(kind_letter(notification.queue.kind).to_owned());
                args.push(Entry::of(notification, false));
            }
            let keys = self.queue_keys(subscription);
            let slot = self.keys.partition_slot(self.keys.subscription_partition(subscription));
            self.write(connection, &scripts::ENQUEUE, &keys[..4], &args, slot).await?;
        }
        Ok(())
    }

    /// The first arguments of every queue script: the subscription and its queues' tags.
    fn queue_args(subscription: &str) -> Vec<String> {
        vec![
            subscription.to_owned(),
            queue_tag(&queue_field(&QueueId::changes(subscription))).to_string(),
            queue_tag(&queue_field(&QueueId::lifecycle(subscription))).to_string(),
        ]
    }

    /// A subscription's queue keys: meta, changes, lifecycle, its partition's index and leases.
    fn queue_keys(&self, subscription: &str) -> [String; 5] {
        let partition = self.keys.subscription_partition(subscription);
        [
            self.keys.queue_meta(subscription),
            self.keys.queue(subscription, 'c'),
            self.keys.queue(subscription, 'l'),
            self.keys.queue_index(partition),
            self.keys.leases(partition),
        ]
    }

    async fn apply_pending(
        &self,
        connection: &mut ClusterConnection,
        field: &str,
        pending: &Pending,
    ) -> Result<(), StoreError> {
        let mut args = Self::queue_args(&pending.sub);
        args.push(pending.version.to_string());
        args.push(if pending.remove { "1" } else { "0" }.to_owned());
        for (kind, entry) in &pending.notes {
            args.push(kind.clone());
            args.push(entry.clone());
        }
        let keys = self.queue_keys(&pending.sub);
        let slot = self.keys.partition_slot(self.keys.subscription_partition(&pending.sub));
        self.write(connection, &scripts::APPLY_PENDING, &keys, &args, slot).await?;
        let _: i64 = connection.hdel(self.keys.registry("pending"), field).await.map_err(backend)?;
        Ok(())
    }

    /// Does the queue work that subscription changes left pending (a crash between the two steps).
    fn finish_pending(&self) -> Result<(), StoreError> {
        let mut connection = self.connection();
        self.run(async {
            let all: Vec<(String, String)> =
                connection.hgetall(self.keys.registry("pending")).await.map_err(backend)?;
            let mut work = Vec::new();
            for (field, text) in all {
                let pending: Pending =
                    serde_json::from_str(&text).map_err(|error| corrupt(field.clone(), error.to_string()))?;
                work.push((pending.sub.clone(), pending.remove, pending.version, field, pending));
            }
            work.sort_by(|a, b| (&a.0, a.1, a.2).cmp(&(&b.0, b.1, b.2)));
            for (_, _, _, field, pending) in work {
                self.apply_pending(&mut connection, &field, &pending).await?;
            }
            Ok(())
        })
    }

    async fn read_subscription(
        &self,
        connection: &mut ClusterConnection,
        id: &str,
    ) -> Result<Option<StoredSubscription>, StoreError> {
        let (body, version): (Option<String>, Option<u64>) = redis::pipe()
            .cmd("HGET")
            .arg(self.keys.registry("subs"))
            .arg(id)
            .cmd("HGET")
            .arg(self.keys.registry("versions"))
            .arg(id)
            .query_async(connection)
            .await
            .map_err(backend)?;
        match (body, version) {
            (Some(body), Some(version)) => Ok(Some(subscription_of(id, &body, version)?)),
            _ => Ok(None),
        }
    }

    /// [`PresenceStore::relay`], or with `crash` everything but removing the relayed entries from their
    /// outboxes, as a process that died at that moment would leave it.
    fn relay_or_crash(&self, limit: usize, crash: bool) -> Result<Vec<QueueId>, StoreError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let sweep = {
            let mut swept = self.swept.lock().unwrap_or_else(PoisonError::into_inner);
            let due = swept.is_none_or(|at| at.elapsed() >= OUTBOX_SWEEP);
            if due {
                *swept = Some(Instant::now());
            }
            due
        };
        let partitions: Vec<u16> = {
            let mut dirty = self.dirty.lock().unwrap_or_else(PoisonError::into_inner);
            let taken = std::mem::take(&mut *dirty);
            if sweep {
                self.keys.partitions().collect()
            } else {
                taken.into_iter().collect()
            }
        };
        if partitions.is_empty() {
            return Ok(Vec::new());
        }
        let result = self.run(async {
            let outboxes = self.read_outboxes(&partitions, limit).await?;
            let (chosen, left_over) = merge(outboxes, limit);
            self.dirty.lock().unwrap_or_else(PoisonError::into_inner).extend(left_over);
            self.relay_staged(&chosen, crash).await
        });
        match result {
            Ok(grown) => Ok(grown.into_iter().collect()),
            Err(error) => {
                // Looked at again next time.
                self.dirty.lock().unwrap_or_else(PoisonError::into_inner).extend(partitions);
                Err(error)
            }
        }
    }

    /// [`PresenceStore::remove_subscription`], or with `crash` only its first step (the registry's), as a
    /// process killed between the two would leave it.
    fn remove_subscription_or_crash(
        &self,
        id: &str,
        farewell: &mut FarewellFn<'_>,
        crash: bool,
    ) -> Result<Option<StoredSubscription>, StoreError> {
        let mut connection = self.connection();
        self.run(async {
            for _ in 0..MAX_ATTEMPTS {
                let Some(current) = self.read_subscription(&mut connection, id).await? else { return Ok(None) };
                let Some(notes) = farewell(&current) else { return Ok(None) };
                let pending = Pending {
                    sub: id.to_owned(),
                    version: current.version,
                    remove: true,
                    notes: notes
                        .iter()
                        .map(|note| (kind_letter(QueueKind::Lifecycle).to_owned(), Entry::of(note, false)))
                        .collect(),
                };
                let args = [
                    id.to_owned(),
                    current.version.to_string(),
                    count_field(&current),
                    serde_json::to_string(&pending).unwrap_or_default(),
                ];
                match self.write_registry(&mut connection, &scripts::REMOVE_SUBSCRIPTION, &args).await? {
                    Versioned::Conflict => continue,
                    Versioned::Missing => return Ok(None),
                    Versioned::Written => {
                        if !crash {
                            self.apply_pending(&mut connection, &format!("{id}:rm"), &pending).await?;
                        }
                        return Ok(Some(current));
                    }
                }
            }
            Err(StoreError::Backend(format!("subscription {id} is written too often to remove")))
        })
    }

    /// Removes a subscription like [`PresenceStore::remove_subscription`] but stops after the registry's
    /// step, as a process killed between the two would: the next handle to open does the rest.
    #[cfg(feature = "testing")]
    pub fn remove_subscription_then_crash(
        &self,
        id: &str,
        farewell: &mut FarewellFn<'_>,
    ) -> Result<Option<StoredSubscription>, StoreError> {
        self.remove_subscription_or_crash(id, farewell, true)
    }

    /// Makes the next many-user write believe that one primary serves every slot, as a handle would whose
    /// slot map a resharding made stale after it read the records: its scripts go to the wrong node.
    #[cfg(feature = "testing")]
    pub fn misroute_next_write(&self) {
        self.misroute.store(true, Ordering::SeqCst);
    }

    /// Relays like [`PresenceStore::relay`] but stops before the relayed entries leave their outboxes, as a
    /// process killed at that moment would: the next relay finds them again.
    #[cfg(feature = "testing")]
    pub fn relay_then_crash(&self, limit: usize) -> Result<Vec<QueueId>, StoreError> {
        let grown = self.relay_or_crash(limit, true)?;
        self.dirty.lock().unwrap_or_else(PoisonError::into_inner).extend(self.keys.partitions());
        Ok(grown)
    }

    /// The oldest `limit` notifications staged in each of `partitions`' outboxes, each in its order. An
    /// entry that cannot be read is answered without a queue, to be removed unrelayed (it could never be
    /// delivered).
    async fn read_outboxes(&self, partitions: &[u16], limit: usize) -> Result<Vec<Vec<Staged>>, StoreError> {
        let commands = partitions
            .iter()
            .map(|partition| {
                let mut command = redis::cmd("XRANGE");
                command.arg(self.keys.outbox(*partition)).arg("-").arg("+").arg("COUNT").arg(limit);
                (*partition, command)
            })
            .collect();
        let replies = self.pipelined(commands).await;
        partitions.iter().zip(replies).map(|(partition, reply)| self.staged_of(*partition, reply?)).collect()
    }

    /// The staged notifications of an outbox's `XRANGE` reply.
    fn staged_of(&self, partition: u16, reply: Value) -> Result<Vec<Staged>, StoreError> {
        let reply: redis::streams::StreamRangeReply =
            redis::from_redis_value(reply).map_err(|error| corrupt(self.keys.outbox(partition), error.to_string()))?;
        Ok(reply
            .ids
            .into_iter()
            .map(|entry| {
                let stamp = entry.map.get("t").and_then(int).unwrap_or(0);
                let staged =
                    entry.map.get("n").and_then(text).and_then(|text| serde_json::from_str::<Entry>(&text).ok());
                let (queue, entry_text) = match staged {
                    Some(Entry { q: Some(queue), url, at, item, rd }) => {
                        let stored = Entry { q: None, url, at, item, rd };
                        (parse_queue_field(&queue), serde_json::to_string(&stored).unwrap_or_default())
                    }
                    _ => (None, String::new()),
                };
                Staged { stamp, partition, id: entry.id, queue, entry: entry_text }
            })
            .collect())
    }

    /// Relays the staged notifications of `chosen` (in the order to queue them), then removes them from
    /// their outboxes unless `crash` (a test's crash before that step). Answers the queues that grew.
    async fn relay_staged(&self, chosen: &[Staged], crash: bool) -> Result<BTreeSet<QueueId>, StoreError> {
        let mut by_queue: BTreeMap<&QueueId, Vec<&Staged>> = BTreeMap::new();
        for staged in chosen {
            if let Some(queue) = &staged.queue {
                by_queue.entry(queue).or_default().push(staged);
            }
        }
        let relays = join_all(by_queue.into_iter().map(|(queue, entries)| {
            let mut connection = self.connection();
            async move {
                let subscription = &queue.subscription_id;
                let keys = self.queue_keys(subscription);
                let mut args = Self::queue_args(subscription);
                args.push(kind_letter(queue.kind).to_owned());
                for staged in entries {
                    args.push(format!("hw:{}", staged.partition));
                    args.push(staged.id.clone());
                    args.push(staged.entry.clone());
                }
                let slot = self.keys.partition_slot(self.keys.subscription_partition(subscription));
                let added = self.write(&mut connection, &scripts::RELAY, &keys[..4], &args, slot).await?;
                Ok::<_, StoreError>((int(&added).unwrap_or(0) > 0).then(|| queue.clone()))
            }
        }))
        .await;
        let mut grown = BTreeSet::new();
        for relayed in relays {
            grown.extend(relayed?);
        }
        if crash {
            return Ok(grown);
        }
        let mut by_partition: BTreeMap<u16, Vec<&str>> = BTreeMap::new();
        for staged in chosen {
            by_partition.entry(staged.partition).or_default().push(&staged.id);
        }
        for (partition, ids) in by_partition {
            let mut delete = redis::cmd("XDEL");
            delete.arg(self.keys.outbox(partition)).arg(ids);
            let _: i64 = delete.query_async(&mut self.connection()).await.map_err(backend)?;
        }
        Ok(grown)
    }
}

/// A notification staged in a partition's outbox.
struct Staged {
    stamp: i64,
    partition: u16,
    /// Its outbox entry id.
    id: String,
    /// Where it goes; `None` for an entry that cannot be read.
    queue: Option<QueueId>,
    /// The entry to queue.
    entry: String,
}

/// Merges the partitions' outboxes (each in its own order) by stamp, up to `limit` in all: the
/// notifications to relay, in the order to queue them. Answers also whether a partition has more left.
fn merge(outboxes: Vec<Vec<Staged>>, limit: usize) -> (Vec<Staged>, BTreeSet<u16>) {
    let mut left_over = BTreeSet::new();
    let mut heads: BinaryHeap<Reverse<(i64, u16, usize)>> = BinaryHeap::new();
    let mut outboxes: Vec<std::collections::VecDeque<Staged>> = outboxes.into_iter().map(Into::into).collect();
    for (index, outbox) in outboxes.iter().enumerate() {
        if let Some(first) = outbox.front() {
            heads.push(Reverse((first.stamp, first.partition, index)));
            if outbox.len() >= limit {
                left_over.insert(first.partition);
            }
        }
    }
    let mut chosen = Vec::new();
    while chosen.len() < limit {
        let Some(Reverse((_, _, index))) = heads.pop() else { break };
        let Some(staged) = outboxes[index].pop_front() else { continue };
        chosen.push(staged);
        if let Some(next) = outboxes[index].front() {
            heads.push(Reverse((next.stamp, next.partition, index)));
        }
    }
    for outbox in &outboxes {
        if let Some(first) = outbox.front() {
            left_over.insert(first.partition);
        }
    }
    (chosen, left_over)
}

/// Replaces the connection when it stops answering: a cluster client whose node restarted under load can
/// wedge (every command timing out, healthy nodes included) rather than recover. A new connection starts
/// from the seed nodes and a fresh slot map. Ends when the store is dropped.
async fn watchdog(client: redis::cluster::ClusterClient, cell: Weak<RwLock<ClusterConnection>>) {
    let mut failures = 0;
    loop {
        tokio::time::sleep(WATCHDOG_INTERVAL).await;
        let Some(shared) = cell.upgrade() else { return };
        let mut connection = shared.read().unwrap_or_else(PoisonError::into_inner).clone();
        let route = RoutingInfo::SingleNode(SingleNodeRoutingInfo::Random);
        let answered =
            tokio::time::timeout(WATCHDOG_TIMEOUT, connection.route_command(redis::cmd("PING"), route)).await;
        if matches!(answered, Ok(Ok(_))) {
            failures = 0;
            continue;
        }
        failures += 1;
        if failures < WATCHDOG_FAILURES {
            continue;
        }
        if let Ok(Ok(fresh)) = tokio::time::timeout(WATCHDOG_TIMEOUT * 3, client.get_async_connection()).await {
            *shared.write().unwrap_or_else(PoisonError::into_inner) = fresh;
            failures = 0;
        }
    }
}

fn subscription_of(id: &str, body: &str, version: u64) -> Result<StoredSubscription, StoreError> {
    let stored: StoredBody =
        serde_json::from_str(body).map_err(|error| corrupt(format!("subscription {id}"), error.to_string()))?;
    Ok(StoredSubscription {
        id: id.to_owned(),
        tenant_id: stored.tenant,
        application_id: stored.app,
        version,
        body: stored.body,
    })
}

fn body_of(subscription: &StoredSubscription) -> String {
    let stored = StoredBody {
        tenant: subscription.tenant_id.clone(),
        app: subscription.application_id.clone(),
        body: subscription.body.clone(),
    };
    serde_json::to_string(&stored).expect("serialising plain structs cannot fail")
}

fn count_field(subscription: &StoredSubscription) -> String {
    format!("{}/{}", subscription.tenant_id, subscription.application_id)
}

impl Drop for RedisStore {
    fn drop(&mut self) {
        // Dropping a runtime blocks; a store may be dropped inside another runtime's task.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

impl PresenceStore for RedisStore {
    fn get(&self, key: &UserKey) -> Result<Option<UserRecord>, StoreError> {
        let mut connection = self.connection();
        self.run(self.read_record(&mut connection, key))
    }

    fn get_many(&self, keys: &[UserKey]) -> Result<Vec<Option<UserRecord>>, StoreError> {
        self.run(async { self.read_records(keys).await.into_iter().collect() })
    }

    fn get_many_async<'a>(&'a self, keys: &'a [UserKey]) -> Option<RecordsFuture<'a>> {
        Some(Box::pin(async move {
            match keys {
                [one] => Ok(vec![self.read_record(&mut self.connection(), one).await?]),
                many => self.read_records(many).await.into_iter().collect(),
            }
        }))
    }

    fn update(&self, key: &UserKey, apply: &mut UpdateFn<'_>) -> Result<Updated, StoreError> {
        let mut connection = self.connection();
        self.run(self.update_one(&mut connection, key, apply))
    }

    fn update_many(&self, keys: &[UserKey], apply: &mut UpdateManyFn<'_>) -> Vec<Result<Updated, StoreError>> {
        let connection = self.connection();
        self.run(async {
            // Every record read at once, the closures run in turn, every write sent at once with one wait
            // for the replicas of every primary; a user written meanwhile is updated again on its own.
            let reads = self.read_records(keys).await;
            let mut results: Vec<Option<Result<Updated, StoreError>>> = vec![None; keys.len()];
            let mut writes = Vec::new();
            for (index, read) in reads.into_iter().enumerate() {
                let key = &keys[index];
                let (mut facts, due_at, version) = match read {
                    Ok(Some(read)) => (read.facts, read.due_at, read.version),
                    Ok(None) => (UserFacts::default(), None, 0),
                    Err(error) => {
                        results[index] = Some(Err(self.clear_timer_if_corrupt(&connection, key, error).await));
                        continue;
                    }
                };
                match apply(key, &mut facts, due_at) {
                    None => results[index] = Some(Ok(Updated::Declined)),
                    Some(effects) => writes.push((index, version, facts, effects)),
                }
            }
            let written = self
                .write_records(
                    &writes
                        .iter()
                        .map(|(index, version, facts, effects)| (&keys[*index], *version, facts, effects))
                        .collect::<Vec<_>>(),
                )
                .await;
            let mut again = Vec::new();
            for ((index, ..), result) in writes.iter().zip(written) {
                results[*index] = match result {
                    Ok(Some(version)) => Some(Ok(Updated::Written { version })),
                    Ok(None) => {
                        again.push(*index);
                        None
                    }
                    Err(error) => Some(Err(error)),
                };
            }
            for index in again {
                let key = &keys[index];
                let mut connection = connection.clone();
                let result = self.update_one(&mut connection, key, &mut |facts, due| apply(key, facts, due)).await;
                results[index] = Some(match result {
                    Err(error) => Err(self.clear_timer_if_corrupt(&connection, key, error).await),
                    done => done,
                });
            }
            results
                .into_iter()
                .map(|result| result.unwrap_or_else(|| Err(StoreError::Backend("the update was not run".into()))))
                .collect()
        })
    }

    fn claim_due(&self, now: i64, lease_until: i64, limit: usize) -> Result<Vec<UserKey>, StoreError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let connection = self.connection();
        self.run(async {
            let candidates: Vec<(u16, Vec<(String, String)>)> = self
                .on_every_partition(
                    |partition| self.keys.timers(partition),
                    |_, timers| {
                        let mut command = redis::cmd("ZRANGEBYSCORE");
                        command.arg(timers).arg("-inf").arg(now).arg("WITHSCORES").arg("LIMIT").arg(0).arg(limit);
                        command
                    },
                )
                .await?;
            let mut due: Vec<(i64, u16, String)> = Vec::new();
            for (partition, members) in candidates {
                due.extend(members.into_iter().map(|(member, at)| (score(&at).unwrap_or(i64::MIN), partition, member)));
            }
            due.sort();
            due.truncate(limit);
            let mut by_partition: BTreeMap<u16, Vec<String>> = BTreeMap::new();
            for (_, partition, member) in &due {
                by_partition.entry(*partition).or_default().push(member.clone());
            }
            let claims = join_all(by_partition.into_iter().map(|(partition, members)| {
                let mut connection = connection.clone();
                async move {
                    let mut invocation = scripts::CLAIM.prepare_invoke();
                    invocation.key(self.keys.timers(partition)).arg(now).arg(lease_until);
                    for member in &members {
                        invocation.arg(member);
                    }
                    let claimed: Vec<String> = invocation.invoke_async(&mut connection).await.map_err(backend)?;
                    Ok::<_, StoreError>(claimed)
                }
            }))
            .await;
            let mut claimed = BTreeSet::new();
            for partition in claims {
                claimed.extend(partition?);
            }
            // In the order of their timers.
            Ok(due
                .into_iter()
                .filter(|(_, _, member)| claimed.contains(member))
                .filter_map(|(_, _, member)| {
                    let (tenant, user) = member.split_once('/')?;
                    Some(UserKey::new(tenant, user))
                })
                .collect())
        })
    }

    fn next_due(&self) -> Result<Option<i64>, StoreError> {
        self.run(async {
            let firsts: Vec<(u16, Vec<(String, String)>)> = self
                .on_every_partition(
                    |partition| self.keys.timers(partition),
                    |_, timers| {
                        let mut command = redis::cmd("ZRANGE");
                        command.arg(timers).arg(0).arg(0).arg("WITHSCORES");
                        command
                    },
                )
                .await?;
            Ok(firsts.iter().filter_map(|(_, first)| first.first().and_then(|(_, at)| score(at))).min())
        })
    }

    fn subscriptions(&self) -> Result<(Vec<StoredSubscription>, u64), StoreError> {
        self.finish_pending()?;
        let mut connection = self.connection();
        let reply: Value = self
            .run(async {
                let mut invocation = scripts::SUBSCRIPTIONS.prepare_invoke();
                for key in self.registry_keys() {
                    invocation.key(key);
                }
                invocation.invoke_async(&mut connection).await
            })
            .map_err(backend)?;
        let Value::Array(parts) = reply else { return Err(StoreError::Backend(format!("listing answered {reply:?}"))) };
        let [bodies, versions, cursor] = parts.as_slice() else {
            return Err(StoreError::Backend("listing answered the wrong shape".into()));
        };
        let versions: HashMap<String, String> = pairs(versions).into_iter().collect();
        let mut all = Vec::new();
        for (id, body) in pairs(bodies) {
            let version = versions.get(&id).and_then(|text| text.parse().ok()).unwrap_or_default();
            all.push(subscription_of(&id, &body, version)?);
        }
        let cursor = text(cursor).and_then(|text| text.parse().ok()).unwrap_or_default();
        Ok((all, cursor))
    }

    fn subscription(&self, id: &str) -> Result<Option<StoredSubscription>, StoreError> {
        let mut connection = self.connection();
        self.run(self.read_subscription(&mut connection, id))
    }

    fn create_subscription(&self, subscription: &StoredSubscription, limit: usize) -> Result<bool, StoreError> {
        let mut connection = self.connection();
        let args = [subscription.id.clone(), count_field(subscription), limit.to_string(), body_of(subscription)];
        let created = self.run(self.write(
            &mut connection,
            &scripts::CREATE_SUBSCRIPTION,
            &self.registry_keys(),
            &args,
            self.registry_slot(),
        ))?;
        Ok(int(&created) == Some(1))
    }

    fn update_subscription(
        &self,
        id: &str,
        apply: &mut SubscriptionFn<'_>,
    ) -> Result<Option<StoredSubscription>, StoreError> {
        let mut connection = self.connection();
        self.run(async {
            for _ in 0..MAX_ATTEMPTS {
                let Some(current) = self.read_subscription(&mut connection, id).await? else { return Ok(None) };
                let mut changed = current.clone();
                let Some(notifications) = apply(&mut changed) else { return Ok(Some(current)) };
                let changed = StoredSubscription {
                    id: current.id.clone(),
                    tenant_id: current.tenant_id.clone(),
                    application_id: current.application_id.clone(),
                    version: current.version + 1,
                    body: changed.body,
                };
                // Notifications for this subscription's queues are pending work of the change; those for
                // another subscription's queues are queued on their own afterwards.
                let (own, others): (Vec<NewNotification>, Vec<NewNotification>) =
                    notifications.into_iter().partition(|note| note.queue.subscription_id == id);
                let pending = (!own.is_empty()).then(|| Pending {
                    sub: id.to_owned(),
                    version: changed.version,
                    remove: false,
                    notes: own
                        .iter()
                        .map(|note| (kind_letter(note.queue.kind).to_owned(), Entry::of(note, false)))
                        .collect(),
                });
                let pending_text = pending.as_ref().map(|pending| serde_json::to_string(pending).unwrap_or_default());
                let args =
                    [id.to_owned(), current.version.to_string(), body_of(&changed), pending_text.unwrap_or_default()];
                match self.write_registry(&mut connection, &scripts::UPDATE_SUBSCRIPTION, &args).await? {
                    Versioned::Conflict => continue,
                    Versioned::Missing => return Ok(None),
                    Versioned::Written => {
                        if let Some(pending) = pending {
                            self.apply_pending(&mut connection, &format!("{id}:{}", changed.version), &pending).await?;
                        }
                        self.enqueue_now(&mut connection, &others).await?;
                        return Ok(Some(changed));
                    }
                }
            }
            Err(StoreError::Backend(format!("subscription {id} is written too often to update")))
        })
    }

    fn remove_subscription(
        &self,
        id: &str,
        farewell: &mut FarewellFn<'_>,
    ) -> Result<Option<StoredSubscription>, StoreError> {
        self.remove_subscription_or_crash(id, farewell, false)
    }

    fn subscription_changes(&self, since: u64) -> Result<Option<SubscriptionChanges>, StoreError> {
        let mut connection = self.connection();
        let reply: Value = self
            .run(async {
                let mut invocation = scripts::CHANGES.prepare_invoke();
                for key in self.registry_keys() {
                    invocation.key(key);
                }
                invocation.arg(since);
                invocation.invoke_async(&mut connection).await
            })
            .map_err(backend)?;
        if matches!(reply, Value::Nil | Value::Boolean(false)) {
            return Ok(None);
        }
        let mut changes = SubscriptionChanges { ids: Vec::new(), cursor: since };
        for (id, at) in pairs(&reply) {
            changes.cursor = changes.cursor.max(at.parse().unwrap_or_default());
            changes.ids.push(id);
        }
        Ok(Some(changes))
    }

    fn enqueue(&self, notifications: &[NewNotification]) -> Result<(), StoreError> {
        let mut connection = self.connection();
        self.run(self.enqueue_now(&mut connection, notifications))
    }

    fn relay(&self, limit: usize) -> Result<Vec<QueueId>, StoreError> {
        self.relay_or_crash(limit, false)
    }

    fn queue_head(&self, queue: &QueueId, limit: usize) -> Result<Vec<QueuedNotification>, StoreError> {
        let stream = self.keys.queue(&queue.subscription_id, kind_letter(queue.kind).chars().next().unwrap_or('c'));
        let mut connection = self.connection();
        let reply: redis::streams::StreamRangeReply = self
            .run(
                redis::cmd("XRANGE")
                    .arg(&stream)
                    .arg("-")
                    .arg("+")
                    .arg("COUNT")
                    .arg(limit.max(1))
                    .query_async(&mut connection),
            )
            .map_err(backend)?;
        let mut head = Vec::new();
        for entry in reply.ids.into_iter().take(limit) {
            let position = position_of(&entry.id);
            let text = entry.map.get("n").and_then(text);
            let (Some(position), Some(text)) = (position, text) else {
                return Err(corrupt(stream.clone(), format!("entry {} is not a notification", entry.id)));
            };
            let stored = Entry::read(&text, &stream)?;
            head.push(QueuedNotification {
                position,
                url: stored.url,
                created_at: stored.at,
                item: stored.item,
                resource_data: stored.rd,
            });
        }
        Ok(head)
    }

    fn acknowledge(
        &self,
        queue: &QueueId,
        positions: &[u64],
        notifications: &[NewNotification],
    ) -> Result<(), StoreError> {
        let subscription = &queue.subscription_id;
        let (own, others): (Vec<&NewNotification>, Vec<&NewNotification>) =
            notifications.iter().partition(|note| &note.queue.subscription_id == subscription);
        let ids: Vec<String> = positions.iter().filter_map(|position| entry_id(queue, *position)).collect();
        let mut args = Self::queue_args(subscription);
        args.push(kind_letter(queue.kind).to_owned());
        args.push(ids.len().to_string());
        args.extend(ids);
        for note in own {
            args.push(kind_letter(note.queue.kind).to_owned());
            args.push(Entry::of(note, false));
        }
        let keys = self.queue_keys(subscription);
        let slot = self.keys.partition_slot(self.keys.subscription_partition(subscription));
        let others: Vec<NewNotification> = others.into_iter().cloned().collect();
        let mut connection = self.connection();
        self.run(async {
            self.write(&mut connection, &scripts::ACKNOWLEDGE, &keys[..4], &args, slot).await?;
            // Notifications for another subscription's queues are queued on their own.
            self.enqueue_now(&mut connection, &others).await
        })
    }

    fn queue_lengths(&self) -> Result<Vec<(QueueId, u64)>, StoreError> {
        self.finish_pending()?;
        self.run(async {
            let indexes: Vec<(u16, Vec<(String, u64)>)> = self
                .on_every_partition(
                    |partition| self.keys.queue_index(partition),
                    |_, index| {
                        let mut command = redis::cmd("HGETALL");
                        command.arg(index);
                        command
                    },
                )
                .await?;
            let mut lengths = Vec::new();
            for (_, index) in indexes {
                for (field, length) in index {
                    if let (Some(queue), true) = (parse_queue_field(&field), length > 0) {
                        lengths.push((queue, length));
                    }
                }
            }
            Ok(lengths)
        })
    }

    fn lease_queue(&self, queue: &QueueId, holder: &str, now: i64, lease_until: i64) -> Result<bool, StoreError> {
        let partition = self.keys.subscription_partition(&queue.subscription_id);
        let mut connection = self.connection();
        let granted: i64 = self
            .run(async {
                scripts::LEASE
                    .key(self.keys.leases(partition))
                    .arg(queue_field(queue))
                    .arg(holder)
                    .arg(now)
                    .arg(lease_until)
                    .invoke_async(&mut connection)
                    .await
            })
            .map_err(backend)?;
        Ok(granted == 1)
    }

    fn release_queue(&self, queue: &QueueId, holder: &str) -> Result<(), StoreError> {
        let partition = self.keys.subscription_partition(&queue.subscription_id);
        let mut connection = self.connection();
        let _: i64 = self
            .run(async {
                scripts::RELEASE
                    .key(self.keys.leases(partition))
                    .arg(queue_field(queue))
                    .arg(holder)
                    .invoke_async(&mut connection)
                    .await
            })
            .map_err(backend)?;
        Ok(())
    }

    fn subscription_cursor(&self) -> Result<Option<u64>, StoreError> {
        let mut connection = self.connection();
        let seq: Option<u64> = self.run(connection.hget(self.keys.registry("meta"), "seq")).map_err(backend)?;
        Ok(Some(seq.unwrap_or(0)))
    }

    fn changed_users(&self, cursor: Option<&str>, limit: usize) -> Result<Option<ChangedUsers>, StoreError> {
        self.run(async {
            let since: Vec<String> =
                cursor.map(|cursor| cursor.split(',').map(str::to_owned).collect()).unwrap_or_default();
            let reading = since.len() == usize::from(PARTITIONS);
            let replies: Vec<(u16, redis::streams::StreamRangeReply)> = self
                .on_every_partition(
                    |partition| self.keys.changes(partition),
                    |partition, changes| {
                        if reading {
                            let mut command = redis::cmd("XRANGE");
                            let from = format!("({}", since[usize::from(partition)]);
                            command.arg(changes).arg(from).arg("+").arg("COUNT").arg(limit.max(1));
                            command
                        } else {
                            // No cursor (or one of another layout): where each stream ends now.
                            let mut command = redis::cmd("XREVRANGE");
                            command.arg(changes).arg("+").arg("-").arg("COUNT").arg(1);
                            command
                        }
                    },
                )
                .await?;
            let mut changed = ChangedUsers::default();
            let mut ends = Vec::with_capacity(usize::from(PARTITIONS));
            for (partition, reply) in replies {
                let previous = since.get(usize::from(partition)).cloned().unwrap_or_else(|| "0-0".to_owned());
                let end = if reading { reply.ids.last() } else { reply.ids.first() };
                ends.push(end.map_or(previous, |entry| entry.id.clone()));
                if reading {
                    for entry in reply.ids {
                        let member = entry.map.get("u").and_then(text).unwrap_or_default();
                        if let Some((tenant, user)) = member.split_once('/') {
                            changed.users.push(UserKey::new(tenant, user));
                        }
                    }
                }
            }
            changed.cursor = ends.join(",");
            Ok(Some(changed))
        })
    }

    fn add_to_shared_counters(&self, counts: &[SharedCount]) -> Result<Option<Vec<u64>>, StoreError> {
        self.run(async {
            let mut commands = Vec::new();
            for count in counts {
                let (key, partition) = self.keys.counter(&count.name);
                let mut add = redis::cmd("INCRBY");
                add.arg(&key).arg(count.add);
                let mut keep = redis::cmd("PEXPIRE");
                keep.arg(&key).arg(count.keep_for_ms);
                commands.push((partition, add));
                commands.push((partition, keep));
            }
            let replies = self.pipelined(commands).await;
            let mut totals = Vec::with_capacity(counts.len());
            for pair in replies.chunks(2) {
                let total = match &pair[0] {
                    Ok(value) => int(value).and_then(|total| u64::try_from(total).ok()).unwrap_or_default(),
                    Err(error) => return Err(error.clone()),
                };
                totals.push(total);
            }
            Ok(Some(totals))
        })
    }

    fn share_test_clock(&self, instant: i64) -> Result<Option<i64>, StoreError> {
        let mut connection = self.connection();
        let shared: String = self
            .run(async {
                scripts::TEST_CLOCK
                    .key(self.keys.registry("testclock"))
                    .arg(instant)
                    .invoke_async(&mut connection)
                    .await
            })
            .map_err(backend)?;
        shared
            .parse()
            .map(Some)
            .map_err(|_| corrupt(self.keys.registry("testclock"), format!("not an instant: {shared}")))
    }

    fn put_directory_user(&self, tenant_id: &str, user: &DirectoryUser) -> Result<(), StoreError> {
        let mut connection = self.connection();
        let upn_key = DirectoryUser::upn_key(&user.user_principal_name);
        let stored = StoredDirectoryUser {
            id: user.id.clone(),
            user_principal_name: user.user_principal_name.clone(),
            display_name: user.display_name.clone(),
            upn_key: upn_key.clone(),
        };
        let json = serde_json::to_string(&stored).map_err(|error| StoreError::Backend(error.to_string()))?;
        let keys: Vec<String> =
            ["users", "ids", "upns"].iter().map(|name| self.keys.directory(tenant_id, name)).collect();
        let args = [user.id.clone(), upn_key, json];
        let slot = self.keys.directory_slot(tenant_id);
        self.run(self.write(&mut connection, &scripts::PUT_DIRECTORY_USER, &keys, &args, slot))?;
        Ok(())
    }

    fn directory_users(&self, tenant_id: &str, ids: &[String]) -> Result<Vec<Option<DirectoryUser>>, StoreError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut connection = self.connection();
        let users = self.keys.directory(tenant_id, "users");
        let found: Vec<Option<String>> =
            self.run(redis::cmd("HMGET").arg(&users).arg(ids).query_async(&mut connection)).map_err(backend)?;
        found.iter().map(|json| json.as_deref().map(|json| directory_user_of(&users, json)).transpose()).collect()
    }

    fn directory_user_by_upn(&self, tenant_id: &str, upn: &str) -> Result<Option<DirectoryUser>, StoreError> {
        let mut connection = self.connection();
        let upns = self.keys.directory(tenant_id, "upns");
        let id: Option<String> = self
            .run(redis::cmd("HGET").arg(&upns).arg(DirectoryUser::upn_key(upn)).query_async(&mut connection))
            .map_err(backend)?;
        let Some(id) = id else { return Ok(None) };
        Ok(self.directory_users(tenant_id, &[id])?.pop().flatten())
    }

    fn list_directory_users(
        &self,
        tenant_id: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<DirectoryUser>, StoreError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let mut connection = self.connection();
        let start = after.map_or_else(|| "-".to_owned(), |after| format!("({after}"));
        let ids: Vec<String> = self
            .run(
                redis::cmd("ZRANGE")
                    .arg(self.keys.directory(tenant_id, "ids"))
                    .arg(start)
                    .arg("+")
                    .arg("BYLEX")
                    .arg("LIMIT")
                    .arg(0)
                    .arg(limit)
                    .query_async(&mut connection),
            )
            .map_err(backend)?;
        Ok(self.directory_users(tenant_id, &ids)?.into_iter().flatten().collect())
    }

    fn ping(&self) -> Result<(), StoreError> {
        let mut connection = self.connection();
        let route = RoutingInfo::SingleNode(SingleNodeRoutingInfo::SpecificNode(Route::new(
            self.registry_slot(),
            SlotAddr::Master,
        )));
        self.run(connection.route_command(redis::cmd("PING"), route)).map_err(backend)?;
        Ok(())
    }
}
