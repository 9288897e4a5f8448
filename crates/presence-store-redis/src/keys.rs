//! Where things live in the cluster: the partitions, their hash tags, and every key.
//!
//! Redis Cluster runs a script only on keys of one hash slot. What must change together therefore shares a
//! hash tag: a user's record, its partition's timers and its partition's outbox; a subscription's queues,
//! their positions, its partition's queue index and leases; and the whole registry of subscriptions.
//!
//! Users and subscriptions are spread over [`PARTITIONS`] partitions. Each partition's hash tag is chosen
//! so that the partitions fall evenly over the 16,384 slots (the tags `{0}`, `{1}`, … would not: their
//! CRC16 values cluster), so every primary gets its share whatever the slot ranges.

/// How many partitions users and subscriptions are spread over. Part of the stored format: a store made
/// with another count is refused.
pub(crate) const PARTITIONS: u16 = 256;

/// The number of hash slots of a Redis Cluster.
const SLOTS: u16 = 16_384;

/// CRC16/XMODEM, the hash of Redis Cluster's key slots.
fn crc16(bytes: &[u8]) -> u16 {
    let mut crc: u16 = 0;
    for byte in bytes {
        crc ^= u16::from(*byte) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 { (crc << 1) ^ 0x1021 } else { crc << 1 };
        }
    }
    crc
}

/// The slot of a hash tag's text.
pub(crate) fn slot(tag: &str) -> u16 {
    crc16(tag.as_bytes()) % SLOTS
}

/// A queue's tag: 24 bits of FNV-1a of its field (`c:id` or `l:id`), the low bits of its positions, so
/// that positions of different queues differ even where their numbers coincide.
pub(crate) fn queue_tag(field: &str) -> u64 {
    let mut hash: u32 = 0x811c_9dc5;
    for byte in field.as_bytes() {
        hash ^= u32::from(*byte);
        hash = hash.wrapping_mul(0x0100_0193);
    }
    u64::from(hash & 0x00ff_ffff)
}

/// The partition a user or subscription belongs to.
fn partition_of(name: &str) -> u16 {
    crc16(name.as_bytes()) % PARTITIONS
}

/// The keys of one store (one key prefix), with the partitions' hash tags worked out once.
pub(crate) struct Keys {
    prefix: String,
    tags: Vec<String>,
}

impl Keys {
    /// The keys under `prefix`, which must not contain `{` or `}`.
    pub(crate) fn new(prefix: &str) -> Keys {
        let width = SLOTS / PARTITIONS;
        let tags = (0..PARTITIONS)
            .map(|partition| {
                (0u32..)
                    .map(|attempt| format!("p{partition}.{attempt}"))
                    .find(|tag| slot(tag) / width == partition)
                    .expect("every slot range has a tag")
            })
            .collect();
        Keys { prefix: prefix.to_owned(), tags }
    }

    /// Every partition.
    pub(crate) fn partitions(&self) -> impl Iterator<Item = u16> {
        0..PARTITIONS
    }

    fn key(&self, partition: u16, name: &str) -> String {
        format!("{}{{{}}}{name}", self.prefix, self.tags[usize::from(partition)])
    }

    /// The slot of a partition's keys.
    pub(crate) fn partition_slot(&self, partition: u16) -> u16 {
        slot(&self.tags[usize::from(partition)])
    }

    /// A user's member name in its partition's timers, and its partition.
    pub(crate) fn user(&self, tenant: &str, user: &str) -> (String, u16) {
        let member = format!("{tenant}/{user}");
        let partition = partition_of(&member);
        (member, partition)
    }

    /// A user's record: a hash of facts `f`, version `v` and `due_at` `d`.
    pub(crate) fn record(&self, partition: u16, member: &str) -> String {
        self.key(partition, &format!("u:{member}"))
    }

    /// A partition's timers: a sorted set of user members scored by the instant they fall due (or their
    /// claim ends).
    pub(crate) fn timers(&self, partition: u16) -> String {
        self.key(partition, "timers")
    }

    /// A partition's outbox: a stream of notifications staged by its users' updates.
    pub(crate) fn outbox(&self, partition: u16) -> String {
        self.key(partition, "outbox")
    }

    /// A partition's recent visible changes: a stream of user members, capped at about 1,000 entries.
    pub(crate) fn changes(&self, partition: u16) -> String {
        self.key(partition, "changes")
    }

    /// The partition of a subscription's queues.
    pub(crate) fn subscription_partition(&self, subscription: &str) -> u16 {
        partition_of(&format!("s/{subscription}"))
    }

    /// A subscription's queue state: a hash of the last position given (`pos`), the outbox high-water mark
    /// per partition (`hw:N`), the last subscription version whose notifications were queued (`sv`), and
    /// whether it was removed (`gone`).
    pub(crate) fn queue_meta(&self, subscription: &str) -> String {
        self.key(self.subscription_partition(subscription), &format!("qm:{subscription}"))
    }

    /// One of a subscription's queues: a stream whose entry ids are `position-0`.
    pub(crate) fn queue(&self, subscription: &str, kind: char) -> String {
        self.key(self.subscription_partition(subscription), &format!("q:{kind}:{subscription}"))
    }

    /// A partition's queue index: a hash of `kind:subscription` to the queue's length, for every
    /// non-empty queue of the partition's subscriptions.
    pub(crate) fn queue_index(&self, partition: u16) -> String {
        self.key(partition, "queues")
    }

    /// A partition's delivery leases: a hash of `kind:subscription` to `until holder`.
    pub(crate) fn leases(&self, partition: u16) -> String {
        self.key(partition, "leases")
    }

    /// A registry key (all registry keys share one slot): `subs`, `versions`, `counts`, `log`, `meta`,
    /// `pending`.
    pub(crate) fn registry(&self, name: &str) -> String {
        format!("{}{{registry}}{name}", self.prefix)
    }

    /// A shared counter, in the partition its name falls in.
    pub(crate) fn counter(&self, name: &str) -> (String, u16) {
        let partition = partition_of(&format!("c/{name}"));
        (self.key(partition, &format!("count:{name}")), partition)
    }

    /// A key of a tenant's added users (all of a tenant's share one slot): `users`, a hash of id to the
    /// user; `ids`, a sorted set of the ids (all scored 0, so ordered by id); `upns`, a hash of user
    /// principal name (its lookup form) to id.
    pub(crate) fn directory(&self, tenant: &str, name: &str) -> String {
        format!("{}{{dir:{tenant}}}{name}", self.prefix)
    }

    /// The slot of a tenant's added users.
    pub(crate) fn directory_slot(&self, tenant: &str) -> u16 {
        slot(&format!("dir:{tenant}"))
    }

    /// The store's own settings (the partition count it was made with).
    pub(crate) fn format(&self) -> String {
        self.registry("format")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc16_is_redis_cluster_hash() {
        // The values Redis Cluster's specification gives (CLUSTER KEYSLOT).
        assert_eq!(crc16(b"123456789"), 0x31C3);
        assert_eq!(slot("foo"), 12_182);
        assert_eq!(slot("bar"), 5_061);
    }

    #[test]
    fn partitions_spread_evenly_over_the_slots() {
        let keys = Keys::new("pd:");
        let mut per_third = [0u32; 3];
        for partition in keys.partitions() {
            let slot = keys.partition_slot(partition);
            assert_eq!(slot / (SLOTS / PARTITIONS), partition, "partition {partition} is outside its slot range");
            per_third[usize::from(slot / 5_462)] += 1;
        }
        // Three primaries of the default slot ranges each get a third of the partitions.
        assert!(per_third.iter().all(|count| (84..=87).contains(count)), "{per_third:?}");
        let record = keys.record(7, "t/u");
        assert!(record.starts_with("pd:{p7."), "{record}");
    }
}
