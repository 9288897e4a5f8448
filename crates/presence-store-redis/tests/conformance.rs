//! The store conformance suite against a real Redis Cluster, unchanged, with the tests of several handles
//! at once. Each test gets its own key prefix, so the tests share the cluster.

use presence_store::conformance::Backend;
use presence_store_redis::{testing, RedisConfig, RedisStore};

struct Harness {
    config: RedisConfig,
}

impl Backend for Harness {
    type Store = RedisStore;

    fn open(&self) -> RedisStore {
        RedisStore::open(&self.config).expect("the cluster answers")
    }

    fn shared(&self) -> bool {
        true
    }
}

presence_store::conformance_suite!(redis_cluster, || Harness { config: testing::config() }, shared);
