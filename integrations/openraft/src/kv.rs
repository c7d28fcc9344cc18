//! An in-memory key-value store on openraft's storage-v2 traits: the log, the vote and
//! the state machine live in memory (a node that restarts rejoins empty and catches up
//! from its peers). For the example, the tests and the bench: it shows what the
//! network carries, it is not a database.

use std::collections::BTreeMap;
use std::fmt;
use std::io::Cursor;
use std::ops::RangeBounds;
use std::sync::{Arc, Mutex, MutexGuard};

use openraft::storage::{LogFlushed, LogState, RaftLogStorage, RaftStateMachine, Snapshot};
use openraft::{
    AnyError, BasicNode, Entry, EntryPayload, LogId, RaftLogReader, RaftSnapshotBuilder,
    SnapshotMeta, StorageError, StorageIOError, StoredMembership, Vote,
};
use serde::{Deserialize, Serialize};

/// A write: `key` = `value`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Set {
    /// The key.
    pub key: String,
    /// Its new value.
    pub value: String,
}

openraft::declare_raft_types!(
    /// The store's Raft types: node ids `u64`, nodes `BasicNode { addr }`, writes [`Set`],
    /// responses the key's previous value.
    pub KvConfig:
        D = Set,
        R = Option<String>,
);

/// The node's Raft handle for this store.
pub type KvRaft = openraft::Raft<KvConfig>;

type Error = StorageError<u64>;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock cannot leave these maps half-updated in a way a
    // reader would misread (every update is one insert or remove), so poison is ignored.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[derive(Debug, Default)]
struct Log {
    vote: Option<Vote<u64>>,
    committed: Option<LogId<u64>>,
    last_purged: Option<LogId<u64>>,
    entries: BTreeMap<u64, Entry<KvConfig>>,
}

/// The Raft log and vote, in memory. Clones share the log.
#[derive(Debug, Clone, Default)]
pub struct LogStore(Arc<Mutex<Log>>);

impl RaftLogReader<KvConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + fmt::Debug + Send>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry<KvConfig>>, Error> {
        Ok(lock(&self.0)
            .entries
            .range(range)
            .map(|(_, e)| e.clone())
            .collect())
    }
}

impl RaftLogStorage<KvConfig> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<KvConfig>, Error> {
        let log = lock(&self.0);
        let last = log.entries.values().next_back().map(|e| e.log_id);
        Ok(LogState {
            last_purged_log_id: log.last_purged,
            last_log_id: last.or(log.last_purged),
        })
    }

    async fn get_log_reader(&mut self) -> Self {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<u64>) -> Result<(), Error> {
        lock(&self.0).vote = Some(*vote);
        Ok(())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<u64>>, Error> {
        Ok(lock(&self.0).vote)
    }

    async fn save_committed(&mut self, committed: Option<LogId<u64>>) -> Result<(), Error> {
        lock(&self.0).committed = committed;
        Ok(())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId<u64>>, Error> {
        Ok(lock(&self.0).committed)
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<KvConfig>) -> Result<(), Error>
    where
        I: IntoIterator<Item = Entry<KvConfig>> + Send,
        I::IntoIter: Send,
    {
        {
            let mut log = lock(&self.0);
            for e in entries {
                log.entries.insert(e.log_id.index, e);
            }
        }
        callback.log_io_completed(Ok(()));
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId<u64>) -> Result<(), Error> {
        let _ = lock(&self.0).entries.split_off(&log_id.index);
        Ok(())
    }

    async fn purge(&mut self, log_id: LogId<u64>) -> Result<(), Error> {
        let mut log = lock(&self.0);
        log.entries = log.entries.split_off(&(log_id.index + 1));
        log.last_purged = Some(log_id);
        Ok(())
    }
}

/// What a snapshot holds: the applied state.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Applied {
    last_applied: Option<LogId<u64>>,
    membership: StoredMembership<u64, BasicNode>,
    data: BTreeMap<String, String>,
}

#[derive(Debug, Default)]
struct Machine {
    applied: Applied,
    snapshot: Option<(SnapshotMeta<u64, BasicNode>, Vec<u8>)>,
    snapshots_built: u64,
}

/// The key-value state machine, in memory. Clones share it.
#[derive(Debug, Clone, Default)]
pub struct StateMachine(Arc<Mutex<Machine>>);

impl StateMachine {
    /// The value of `key`, as applied on this node.
    pub fn get(&self, key: &str) -> Option<String> {
        lock(&self.0).applied.data.get(key).cloned()
    }

    /// Every key and value applied on this node.
    pub fn data(&self) -> BTreeMap<String, String> {
        lock(&self.0).applied.data.clone()
    }
}

fn snapshot_of(meta: SnapshotMeta<u64, BasicNode>, bytes: Vec<u8>) -> Snapshot<KvConfig> {
    Snapshot {
        meta,
        snapshot: Box::new(Cursor::new(bytes)),
    }
}

impl RaftSnapshotBuilder<KvConfig> for StateMachine {
    async fn build_snapshot(&mut self) -> Result<Snapshot<KvConfig>, Error> {
        let mut m = lock(&self.0);
        let bytes = postcard::to_stdvec(&m.applied)
            .map_err(|e| StorageIOError::read_state_machine(AnyError::new(&e)))?;
        m.snapshots_built += 1;
        let last = m.applied.last_applied;
        let meta = SnapshotMeta {
            last_log_id: last,
            last_membership: m.applied.membership.clone(),
            snapshot_id: format!(
                "{}-{}",
                last.map(|l| l.index).unwrap_or_default(),
                m.snapshots_built
            ),
        };
        m.snapshot = Some((meta.clone(), bytes.clone()));
        Ok(snapshot_of(meta, bytes))
    }
}

impl RaftStateMachine<KvConfig> for StateMachine {
    type SnapshotBuilder = Self;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogId<u64>>, StoredMembership<u64, BasicNode>), Error> {
        let m = lock(&self.0);
        Ok((m.applied.last_applied, m.applied.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Option<String>>, Error>
    where
        I: IntoIterator<Item = Entry<KvConfig>> + Send,
        I::IntoIter: Send,
    {
        let mut m = lock(&self.0);
        let mut out = Vec::new();
        for e in entries {
            m.applied.last_applied = Some(e.log_id);
            out.push(match e.payload {
                EntryPayload::Blank => None,
                EntryPayload::Normal(set) => m.applied.data.insert(set.key, set.value),
                EntryPayload::Membership(mem) => {
                    m.applied.membership = StoredMembership::new(Some(e.log_id), mem);
                    None
                }
            });
        }
        Ok(out)
    }

    async fn get_snapshot_builder(&mut self) -> Self {
        self.clone()
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, Error> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<u64, BasicNode>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), Error> {
        let bytes = snapshot.into_inner();
        let applied: Applied = postcard::from_bytes(&bytes).map_err(|e| {
            StorageIOError::read_snapshot(Some(meta.signature()), AnyError::new(&e))
        })?;
        let mut m = lock(&self.0);
        m.applied = applied;
        m.snapshot = Some((meta.clone(), bytes));
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<KvConfig>>, Error> {
        Ok(lock(&self.0)
            .snapshot
            .as_ref()
            .map(|(meta, bytes)| snapshot_of(meta.clone(), bytes.clone())))
    }
}
