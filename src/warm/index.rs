//! The id index: which row holds the latest record of each id, in memory only (open
//! rebuilds it from the records in row order). Sharded by a hash of the id, so puts of
//! different ids rarely meet on a lock.

use super::format::STATE_PUT;
use super::{RowId, WarmStore};
use parking_lot::RwLock;
use std::collections::HashMap;
use std::sync::atomic::Ordering;

const SHARDS: usize = 64;

/// One shard. foldhash is seeded per process (ids come from callers, so collisions must
/// not be forgeable) and several times faster than SipHash on short ids.
type Shard = HashMap<Box<str>, RowId, foldhash::fast::RandomState>;

/// Id → row of its latest record.
pub(super) struct IdIndex {
    shards: Vec<RwLock<Shard>>,
}

impl IdIndex {
    pub(super) fn new() -> Self {
        Self {
            shards: (0..SHARDS).map(|_| RwLock::new(Shard::default())).collect(),
        }
    }

    /// The row of `id`'s latest record, if it has one.
    pub(super) fn row_of(&self, id: &str) -> Option<RowId> {
        self.shard(id).read().get(id).copied()
    }

    fn shard(&self, id: &str) -> &RwLock<Shard> {
        let h = crc32c::crc32c(id.as_bytes()) as usize;
        &self.shards[h % SHARDS]
    }
}

impl WarmStore {
    /// Makes `row` the record of `id` unless a newer row already is; keeps the live mask
    /// and the live count in step, under the shard lock.
    pub(super) fn index_publish(&self, row: RowId, id: &str, state: u32) {
        let mut shard = self.index.shard(id).write();
        let prev = shard.get(id).copied();
        if prev.is_some_and(|p| p > row) {
            return; // a newer record of this id won already
        }
        if let Some(p) = prev {
            if self.live.clear(p) {
                self.live_records.fetch_sub(1, Ordering::Relaxed);
            }
        }
        match shard.get_mut(id) {
            Some(r) => *r = row,
            None => {
                shard.insert(id.into(), row);
            }
        }
        if state == STATE_PUT {
            self.live.set(row);
            self.live_records.fetch_add(1, Ordering::Relaxed);
        }
    }
}
