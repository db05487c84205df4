//! Group commit. Request tasks hand validated writes to one committer thread through a
//! bounded queue. The thread takes everything queued (up to `max_group`) and, for the group:
//!
//! 1. decides each member against the email index and earlier members of the group,
//!    assigns new customers their ids (so id order is commit order) and decides every reply;
//! 2. appends the group's puts to the journal as one record and calls `fdatasync` once:
//!    the commit point;
//! 3. applies the puts to sled and answers every member.
//!
//! A new customer's record is also its pending `customer.created` event (`outbox`): after
//! the group is applied the committer hands the new records to the relay, and a group carries
//! the relay's newest acknowledged mark when it moved, so the mark costs no fsync of its own
//! under load. With events off, each group moves the mark past its own customers.
//!
//! Under load one fsync serves many writes; a lone write is committed as soon as it arrives.
//! When the journal's active segment passes `checkpoint_bytes`, the committer starts a new
//! segment and hands the old ones to the checkpointer thread.
//!
//! Any error in steps 2–3 or in a checkpoint is fail-stop (see `health`): the group is
//! answered 500, nothing later is committed, and queued or later writes are answered 503.
//!
//! Replicated (`crate::replication`): the primary appends each group's record to the log,
//! fenced by the sequence it last applied, and answers only once the log acknowledged it and
//! while its lease is surely held; the log, not the local `fdatasync`, makes it durable (the
//! local journal is then a cache the log can rebuild). A standby's committer applies the
//! log's groups as they come (`Write::Replicated`) and takes over on `Write::Promote`. A lost
//! lease or a fenced append is fail-stop too (exit 75): the instance restarts as a standby.

use std::collections::HashMap;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Instant;

use bytes::Bytes;
use customers_shared::{ApiError, Customer, CustomerId, NewCustomer};
use tokio::sync::{mpsc, oneshot, watch};

use crate::checkpointer::Checkpointer;
use crate::health::{Failure, Health};
use crate::idempotency::{self, IdempotencyClaim, now_ms};
use crate::ids::IdGenerator;
use crate::journal::{Batch, Journal, Promise, TreeId};
use crate::known_emails::KnownEmails;
use crate::metrics::Metrics;
use crate::outbox::Outbox;
use crate::replication::lease::LeaseClock;
use crate::replication::log::Log;
use crate::reply::Reply;
use crate::store::manifest::RecordKeys;
use crate::store::outbox::RELAYED_KEY;
use crate::store::{MAX_VALUE_BYTES, Store, StoreError};

/// What a request asks the committer to make durable.
#[derive(Debug)]
pub enum Write {
    /// A validated new customer; with a claim, its reply is stored under the key.
    Create {
        customer: NewCustomer,
        claim: Option<IdempotencyClaim>,
    },
    /// The final reply of an idempotent create refused before it reached the committer
    /// (not JSON, invalid fields), stored so that a retry is answered the same.
    Remember {
        claim: IdempotencyClaim,
        reply: Reply,
    },
    /// Nothing but the relay's acknowledged mark (see `outbox`), when no other group has
    /// carried it for a while.
    RecordRelayed,
    /// A group of the replicated log, for a standby to apply: its sequence and its record.
    Replicated { sequence: u64, record: Bytes },
    /// A standby that holds the lease and applied the log through `expected_last` becomes the
    /// primary.
    Promote {
        expected_last: u64,
        lease: LeaseClock,
        outbox: Option<Arc<Outbox>>,
    },
    /// A snapshot of the database as of the groups committed so far, written to `path`
    /// (`snapshot`); its outcome goes to `done`.
    Snapshot {
        path: std::path::PathBuf,
        done: oneshot::Sender<Result<crate::snapshot::Summary, String>>,
    },
}

/// Why a write got no reply of its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CommitError {
    /// The queue is full: the worker is overloaded.
    #[error("the commit queue is full")]
    Overloaded,
    /// The committer has stopped: the worker is shutting down or has failed.
    #[error("the committer has stopped")]
    Stopped,
    /// The group's journal write, sync or apply failed; the worker is stopping. The write
    /// may or may not be durable.
    #[error("the group commit failed")]
    Failed,
    /// A value over [`MAX_VALUE_BYTES`]: a bug, refused instead of stored.
    #[error("a value is too large to store")]
    Unstorable,
    /// The event outbox is full (JetStream has been unreachable for long): the create is
    /// refused rather than stored without its event.
    #[error("the event outbox is full")]
    OutboxFull,
    /// Replicated: this instance is not (or no longer) the primary.
    #[error("this instance is not the primary")]
    NotPrimary,
}

/// Why a group failed as a whole; both stop the worker.
#[derive(Debug, thiserror::Error)]
enum GroupError {
    #[error(transparent)]
    Storage(#[from] StoreError),
    /// Replicated: the lease is gone or the log moved on without us.
    #[error("{0}")]
    Fenced(String),
}

impl From<crate::journal::JournalError> for GroupError {
    fn from(error: crate::journal::JournalError) -> Self {
        Self::Storage(error.into())
    }
}

type Answer = Result<Reply, CommitError>;

struct Job {
    write: Write,
    reply: oneshot::Sender<Answer>,
}

/// A group's answers, handed to the runtime in one message: one wake-up of the request
/// tasks' thread per group instead of one per member (each costs a system call), and the
/// replies then leave together.
type Delivery = Vec<(oneshot::Sender<Answer>, Answer)>;

/// Submits writes to the committer thread. Cheap to clone; the thread stops once every
/// handle is dropped and the queue is drained.
#[derive(Clone)]
pub struct CommitHandle {
    queue: mpsc::Sender<Job>,
}

impl CommitHandle {
    /// A view of the queue's depth that does not keep the committer running.
    pub fn probe(&self) -> QueueProbe {
        QueueProbe(self.queue.downgrade())
    }

    /// Queues `write`, waiting for room in the queue (the log follower's backpressure);
    /// returns where its answer will arrive.
    pub async fn submit(&self, write: Write) -> Result<oneshot::Receiver<Answer>, CommitError> {
        let (reply, outcome) = oneshot::channel();
        self.queue
            .send(Job { write, reply })
            .await
            .map_err(|_| CommitError::Stopped)?;
        Ok(outcome)
    }

    /// Queues `write` and waits until its group is durable and applied.
    pub async fn commit(&self, write: Write) -> Result<Reply, CommitError> {
        let (reply, outcome) = oneshot::channel();
        self.queue
            .try_send(Job { write, reply })
            .map_err(|e| match e {
                mpsc::error::TrySendError::Full(_) => CommitError::Overloaded,
                mpsc::error::TrySendError::Closed(_) => CommitError::Stopped,
            })?;
        outcome.await.map_err(|_| CommitError::Stopped)?
    }
}

/// Reads how many writes wait for the committer (0 once it has stopped), and asks it for a
/// snapshot, without keeping it running.
#[derive(Clone)]
pub struct QueueProbe(mpsc::WeakSender<Job>);

impl QueueProbe {
    pub fn queued(&self) -> usize {
        self.0
            .upgrade()
            .map_or(0, |queue| queue.max_capacity() - queue.capacity())
    }

    /// Has the committer write a snapshot to `path` between two groups.
    pub async fn snapshot(
        &self,
        path: std::path::PathBuf,
    ) -> Result<crate::snapshot::Summary, String> {
        let queue = self.0.upgrade().ok_or("the worker is stopping")?;
        let (done, written) = oneshot::channel();
        CommitHandle { queue }
            .commit(Write::Snapshot { path, done })
            .await
            .map_err(|e| e.to_string())?;
        written
            .await
            .map_err(|_| "the committer stopped".to_owned())?
    }
}

/// The committer's limits.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Writes that may wait in the queue.
    pub max_pending: usize,
    /// Writes in one group at most.
    pub max_group: usize,
    /// Size of the active journal segment that starts a checkpoint.
    pub checkpoint_bytes: u64,
}

/// What the committer starts from: the journal's append side, the id generator (above the
/// newest stored id), the record tree's keys, the stored emails and, with events on, the
/// outbox.
pub struct Prepared {
    journal: Journal,
    ids: IdGenerator,
    records: RecordKeys,
    known_emails: KnownEmails,
    outbox: Option<Arc<Outbox>>,
    replicated: Option<Replicated>,
}

/// A committer's part in replicated mode.
pub struct Replicated {
    pub log: Arc<Log>,
    /// The runtime the log's client runs on (the committer thread blocks on appends).
    pub runtime: tokio::runtime::Handle,
    /// The log sequence applied here, for the read barrier and the take-over.
    pub applied: watch::Sender<u64>,
    /// Names this instance's appends (`Nats-Msg-Id`).
    pub instance: String,
}

/// What only the primary has.
struct Primacy {
    expected_last: u64,
    lease: LeaseClock,
}

impl Prepared {
    /// Reads what the committer needs from an opened store (the newest id, every email key);
    /// with `max_pending_events`, finds the pending events (the customers above the relayed
    /// mark) and bounds them.
    pub fn new(
        store: &Store,
        opened: (Journal, RecordKeys),
        max_pending_events: Option<usize>,
    ) -> Result<Self, StoreError> {
        let outbox = match max_pending_events {
            Some(max_pending) => Some(Arc::new(Self::outbox_for(store, max_pending)?)),
            None => None,
        };
        let (journal, records) = opened;
        Ok(Self {
            journal,
            records,
            ids: IdGenerator::after(store.newest_id()?),
            known_emails: KnownEmails::load(store)?,
            outbox,
            replicated: None,
        })
    }

    /// The outbox of `store` as it is: the customers above the relayed mark are pending.
    pub fn outbox_for(store: &Store, max_pending: usize) -> Result<Outbox, StoreError> {
        Ok(match store.relayed_through()? {
            Some(mark) => Outbox::new(max_pending, store.count_after(Some(mark))?, Some(mark)),
            // Customers stored before events were ever on get none: events start here (the
            // first group journals the mark).
            None => Outbox::starting_after(max_pending, store.newest_id()?),
        })
    }

    /// The same, for replicated mode: the committer starts as a standby.
    pub fn replicated(mut self, replicated: Replicated) -> Self {
        self.outbox = None;
        self.replicated = Some(replicated);
        self
    }

    /// The emails the committer knows.
    pub fn known_emails(&self) -> &KnownEmails {
        &self.known_emails
    }

    /// The outbox, when events are on.
    pub fn outbox(&self) -> Option<Arc<Outbox>> {
        self.outbox.clone()
    }
}

/// Starts the committer thread (which starts the checkpointer) and, on the current Tokio
/// runtime, the task that hands its answers to the waiting requests. Join the returned
/// handle after dropping every [`CommitHandle`] to wait for the last group and the final
/// checkpoint.
pub fn spawn(
    store: Arc<Store>,
    prepared: Prepared,
    metrics: Arc<Metrics>,
    health: Health,
    limits: Limits,
) -> std::io::Result<(CommitHandle, JoinHandle<()>)> {
    let (queue, jobs) = mpsc::channel(limits.max_pending.max(1));
    let (deliveries, mut delivered) = mpsc::unbounded_channel::<Delivery>();
    tokio::spawn(async move {
        while let Some(group) = delivered.recv().await {
            for (waiting, answer) in group {
                // A requester that went away no longer needs its answer.
                let _ = waiting.send(answer);
            }
        }
    });
    let checkpointer = Checkpointer::spawn(store.clone(), metrics.clone(), health.clone())?;
    let Prepared {
        journal,
        ids,
        records,
        known_emails,
        outbox,
        replicated,
    } = prepared;
    let applied_sequence = match &replicated {
        Some(_) => store
            .applied_log_sequence()
            .map_err(|e| std::io::Error::other(e.to_string()))?,
        None => 0,
    };
    let committer = Committer {
        store,
        journal,
        ids,
        records,
        known_emails,
        outbox,
        replicated,
        primacy: None,
        applied_sequence,
        metrics,
        health,
        deliveries,
        checkpointer,
        checkpoint_bytes: limits.checkpoint_bytes,
        batch: Batch::default(),
        created: Vec::new(),
    };
    let max_group = limits.max_group.max(1);
    let thread = std::thread::Builder::new()
        .name("committer".into())
        .spawn(move || committer.run(jobs, max_group))?;
    Ok((CommitHandle { queue }, thread))
}

struct Committer {
    store: Arc<Store>,
    journal: Journal,
    ids: IdGenerator,
    /// The record tree's keys, as of the last group applied (for the checkpoint manifest).
    records: RecordKeys,
    known_emails: KnownEmails,
    outbox: Option<Arc<Outbox>>,
    replicated: Option<Replicated>,
    primacy: Option<Primacy>,
    /// Replicated: the log sequence of the newest group applied here.
    applied_sequence: u64,
    metrics: Arc<Metrics>,
    health: Health,
    deliveries: mpsc::UnboundedSender<Delivery>,
    checkpointer: Checkpointer,
    checkpoint_bytes: u64,
    /// The group being committed, reused between groups.
    batch: Batch,
    /// The customers the group creates: their ids and records, for the relay.
    created: Vec<(CustomerId, Bytes)>,
}

impl Committer {
    fn run(mut self, mut jobs: mpsc::Receiver<Job>, max_group: usize) {
        let _trip = self.health.trip_on_panic("committer");
        let mut writes = Vec::with_capacity(max_group);
        let mut replies = Vec::with_capacity(max_group);
        while let Some(first) = jobs.blocking_recv() {
            let mut next = Some(first);
            while let Some(Job { write, reply }) = next {
                writes.push(write);
                replies.push(reply);
                next = if writes.len() < max_group {
                    jobs.try_recv().ok()
                } else {
                    None
                };
            }
            if self.health.is_failed() {
                answer_all(&mut replies, CommitError::Stopped);
                break;
            }
            match self.commit(&mut writes) {
                Ok(answers) => {
                    let delivery = replies.drain(..).zip(answers).collect();
                    // Gone only when the runtime is: nobody is left waiting.
                    let _ = self.deliveries.send(delivery);
                }
                Err(GroupError::Storage(e)) => {
                    // Failed first, so nobody answered 500 can still find the worker ready.
                    self.health.fail(Failure::storage(e));
                    answer_all(&mut replies, CommitError::Failed);
                    break;
                }
                Err(GroupError::Fenced(reason)) => {
                    self.health.fail(Failure::fenced(reason));
                    answer_all(&mut replies, CommitError::NotPrimary);
                    break;
                }
            }
            if let Err(e) = self.start_checkpoint_if_due() {
                self.health.fail(Failure::storage(e));
                break;
            }
        }
        // Whatever is still queued gets an answer; later writes find the queue closed.
        jobs.close();
        while let Ok(job) = jobs.try_recv() {
            let _ = job.reply.send(Err(CommitError::Stopped));
        }
        self.stop();
    }

    /// Plans, journals, syncs and applies one group; returns each member's answer.
    fn commit(&mut self, writes: &mut Vec<Write>) -> Result<Vec<Answer>, GroupError> {
        let started = Instant::now();
        let members = writes.len();
        let created_ms = now_ms();
        self.batch.clear();
        self.created.clear();
        let mut emails_taken: HashMap<String, CustomerId> = HashMap::new();
        let mut outcomes = Vec::with_capacity(members);
        let mut mark_asked = false;
        let mut log_sequence = None;
        for write in writes.drain(..) {
            mark_asked |= matches!(write, Write::RecordRelayed);
            if let Write::Replicated { sequence, record } = write {
                outcomes.push(self.take_replicated(sequence, &record)?);
                log_sequence = Some(sequence).max(log_sequence);
                continue;
            }
            outcomes.push(self.plan(write, &mut emails_taken, created_ms)?);
        }
        // The mark rides along with a group that syncs anyway; a group of conflicts only
        // stays without a sync unless the relay asked for one.
        let relayed_mark = match &self.outbox {
            Some(outbox) if mark_asked || !self.batch.is_empty() => outbox.mark_to_journal(),
            Some(_) => None,
            None => self.created.last().map(|(id, _)| *id),
        };
        if let Some(mark) = relayed_mark {
            self.batch
                .put(TreeId::Relayed, RELAYED_KEY, &mark.to_bytes());
        }
        let mut journaled = None;
        if !self.batch.is_empty() {
            if self.primacy.is_some() {
                log_sequence = Some(self.append_to_log()?);
            }
            if let Some(sequence) = log_sequence {
                self.batch.put(
                    TreeId::Replication,
                    crate::store::APPLIED_KEY,
                    &sequence.to_be_bytes(),
                );
            }
            self.journal.append(&mut self.batch)?;
            for put in self.batch.puts() {
                if put.tree == TreeId::Customers {
                    self.records.observe(put.key);
                }
            }
            let sync_started = Instant::now();
            // Replicated, the log made the group durable; a local tail lost in a crash is
            // applied again from it.
            if self.replicated.is_none() {
                self.journal.sync()?;
            }
            journaled = Some((self.batch.len(), sync_started.elapsed()));
            failpoint!("commit-before-apply", |_| crate::crash());
            failpoint!("committer-panic", |_| panic!("failpoint committer-panic"));
            self.store.apply(self.batch.puts())?;
            if let (Some(replicated), Some(sequence)) = (&self.replicated, log_sequence) {
                self.applied_sequence = sequence;
                replicated.applied.send_replace(sequence);
                self.metrics.log_applied(sequence);
            }
            if let Some(outbox) = &self.outbox {
                if let Some(mark) = relayed_mark {
                    outbox.journaled(mark);
                }
                outbox.committed(self.created.drain(..));
            }
        }
        let (bytes, sync) = journaled.unzip();
        self.metrics
            .group_committed(members, bytes.unwrap_or(0), started.elapsed(), sync);
        tracing::debug!(
            group_size = members,
            elapsed_us = started.elapsed().as_micros() as u64,
            "group committed"
        );
        Ok(outcomes)
    }

    /// Decides one write's reply and adds its puts to the batch. `emails_taken` holds the
    /// emails (lower-cased) of customers created earlier in this group.
    fn plan(
        &mut self,
        write: Write,
        emails_taken: &mut HashMap<String, CustomerId>,
        created_ms: u64,
    ) -> Result<Answer, StoreError> {
        let (reply, claim, new_customer) = match write {
            Write::Create { .. } | Write::Remember { .. }
                if self.replicated.is_some() && self.primacy.is_none() =>
            {
                return Ok(Err(CommitError::NotPrimary));
            }
            Write::Replicated { .. } => return Ok(Err(CommitError::NotPrimary)),
            Write::Promote {
                expected_last,
                lease,
                outbox,
            } => {
                if expected_last != self.applied_sequence {
                    return Ok(Err(CommitError::NotPrimary));
                }
                // Ids continue above everything the log holds.
                self.ids = IdGenerator::after(self.store.newest_id()?);
                self.outbox = outbox;
                self.primacy = Some(Primacy {
                    expected_last,
                    lease,
                });
                return Ok(Ok(Reply::ok(Bytes::new())));
            }
            Write::RecordRelayed => return Ok(Ok(Reply::ok(Bytes::new()))),
            Write::Snapshot { path, done } => {
                // Planning comes before this group is applied: the snapshot holds exactly
                // the groups before it.
                let written = self.store.write_snapshot(&path).map_err(|e| e.to_string());
                let _ = done.send(written);
                return Ok(Ok(Reply::ok(Bytes::new())));
            }
            Write::Remember { claim, reply } => (reply, Some(claim), None),
            Write::Create { customer, claim } => {
                let email_key = customer.email.index_key();
                let owner = match emails_taken.get(&email_key) {
                    Some(&owner) => Some(owner),
                    None if self.known_emails.may_contain(&email_key) => {
                        self.store.email_owner(&email_key)?
                    }
                    None => None,
                };
                match owner {
                    Some(customer_id) => (
                        Reply::error(&ApiError::EmailAlreadyExists { customer_id }),
                        claim,
                        None,
                    ),
                    None => {
                        let id = self.ids.next_id();
                        let json = Bytes::from(Customer::create(id, customer).to_json());
                        (Reply::created(id, json), claim, Some((id, email_key)))
                    }
                }
            }
        };
        let record = claim
            .as_ref()
            .map(|claim| idempotency::encode(claim, &reply, created_ms));
        let too_large = record.as_ref().map_or(0, Vec::len).max(reply.body.len());
        if too_large > MAX_VALUE_BYTES {
            tracing::error!(
                bytes = too_large,
                limit = MAX_VALUE_BYTES,
                "refusing to store a value over the bound (a bug)"
            );
            return Ok(Err(CommitError::Unstorable));
        }
        if let Some((id, email_key)) = new_customer {
            if self.outbox.as_ref().is_some_and(|outbox| !outbox.reserve()) {
                return Ok(Err(CommitError::OutboxFull));
            }
            self.batch
                .put(TreeId::Customers, &id.to_bytes(), &reply.body);
            self.batch
                .put(TreeId::Emails, email_key.as_bytes(), &id.to_bytes());
            self.created.push((id, reply.body.clone()));
            self.known_emails.insert(&email_key);
            emails_taken.insert(email_key, id);
        }
        if let (Some(claim), Some(record)) = (&claim, &record) {
            idempotency::remember(&mut self.batch, &claim.key, record, created_ms);
        }
        Ok(Ok(reply))
    }

    /// A standby: adds the log's group `sequence` to the batch (after the ones it already
    /// applied, in order), and learns its emails for the day it becomes the primary.
    fn take_replicated(&mut self, sequence: u64, record: &[u8]) -> Result<Answer, GroupError> {
        if self.primacy.is_some() {
            return Ok(Err(CommitError::NotPrimary));
        }
        let expected = self.applied_sequence + 1;
        if sequence < expected {
            return Ok(Ok(Reply::ok(Bytes::new()))); // applied already (a redelivery)
        }
        if sequence > expected {
            return Err(GroupError::Fenced(format!(
                "the log skips from {} to {sequence} (trimmed below what this instance applied); restart to rebuild",
                self.applied_sequence
            )));
        }
        let Some((payload, [])) = crate::journal::split_record(record) else {
            return Err(GroupError::Storage(StoreError::Corrupt {
                what: format!("log group {sequence}"),
                reason: "not a whole journal record".into(),
            }));
        };
        for put in crate::journal::Puts::from_payload(payload) {
            if let (TreeId::Emails, Ok(email)) = (put.tree, std::str::from_utf8(put.key)) {
                self.known_emails.insert(email);
            }
        }
        self.batch.extend_from_payload(payload);
        self.applied_sequence = sequence;
        Ok(Ok(Reply::ok(Bytes::new())))
    }

    /// The primary: appends the group's record to the log after the last applied sequence;
    /// its sequence, once acknowledged while the lease is surely held.
    fn append_to_log(&mut self) -> Result<u64, GroupError> {
        let (Some(replicated), Some(primacy)) = (&self.replicated, &mut self.primacy) else {
            unreachable!("only the primary appends");
        };
        if !primacy.lease.is_valid() {
            return Err(GroupError::Fenced("the primary lease ran out".into()));
        }
        let record = Bytes::copy_from_slice(self.batch.sealed());
        let id = format!("{}-{}", replicated.instance, primacy.expected_last + 1);
        let appended = replicated.runtime.block_on(replicated.log.append(
            record,
            primacy.expected_last,
            &id,
            primacy.lease.remaining(),
        ));
        let sequence = appended.map_err(|e| GroupError::Fenced(e.to_string()))?;
        primacy.expected_last = sequence;
        // Paused past the lease between the check and the acknowledgement: the group is in
        // the log (the next primary applies it), but this instance no longer answers for it.
        if !primacy.lease.is_valid() {
            return Err(GroupError::Fenced(
                "the primary lease ran out while appending".into(),
            ));
        }
        Ok(sequence)
    }

    /// Past the size bound, starts a new segment and has the older ones checkpointed (unless
    /// a checkpoint is still running: then the next group tries again).
    fn start_checkpoint_if_due(&mut self) -> Result<(), StoreError> {
        if self.journal.active_len() >= self.checkpoint_bytes && self.checkpointer.is_idle() {
            let below = self.journal.rotate()?;
            self.checkpointer.start(below, self.records.clone());
        }
        Ok(())
    }

    /// After the last group: a final checkpoint, unless the worker failed, so that a clean
    /// restart has nothing to replay.
    fn stop(self) {
        let Self {
            store,
            journal,
            records,
            health,
            checkpointer,
            ..
        } = self;
        checkpointer.stop();
        let active = journal.active_seq();
        drop(journal);
        if health.is_failed() {
            return;
        }
        let dir = store.journal_dir();
        // Every segment is covered, and none is promised: the next start makes a new one.
        let covered = Promise {
            covered_below: active + 1,
            created_through: 0,
        };
        match store
            .checkpoint()
            .and_then(|()| store.record_checkpoint(covered, records))
            .and_then(|()| Ok(crate::journal::remove_segments_before(&dir, u64::MAX)?))
        {
            Ok(()) => tracing::debug!("committer stopped after a final checkpoint"),
            Err(e) => health.fail(Failure::storage(e)),
        }
    }
}

fn answer_all(replies: &mut Vec<oneshot::Sender<Result<Reply, CommitError>>>, error: CommitError) {
    for reply in replies.drain(..) {
        let _ = reply.send(Err(error));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn customer(email: &str) -> NewCustomer {
        NewCustomer::parse(format!(r#"{{"name":"T","email":"{email}"}}"#).as_bytes()).unwrap()
    }

    fn create(email: &str) -> Write {
        Write::Create {
            customer: customer(email),
            claim: None,
        }
    }

    struct Running {
        _dir: tempfile::TempDir,
        store: Arc<Store>,
        handle: CommitHandle,
        thread: JoinHandle<()>,
        health: Health,
    }

    fn start() -> Running {
        start_with(|_, journal| journal, 4096)
    }

    /// A committer on a fresh store, its journal given by `journal` (from the store's own).
    fn start_with(
        journal: impl FnOnce(&std::path::Path, Journal) -> Journal,
        checkpoint_bytes: u64,
    ) -> Running {
        let dir = tempfile::tempdir().unwrap();
        let opened = Store::open(dir.path(), 1 << 20).unwrap();
        let journal = journal(dir.path(), opened.journal);
        let store = Arc::new(opened.store);
        let health = Health::default();
        let limits = Limits {
            max_pending: 64,
            max_group: 64,
            checkpoint_bytes,
        };
        let prepared = Prepared::new(&store, (journal, opened.recovery.records), None).unwrap();
        let (handle, thread) = spawn(
            store.clone(),
            prepared,
            Arc::default(),
            health.clone(),
            limits,
        )
        .unwrap();
        Running {
            _dir: dir,
            store,
            handle,
            thread,
            health,
        }
    }

    fn created_id(reply: &Answer) -> CustomerId {
        reply.as_ref().unwrap().customer_id.expect("a 201")
    }

    #[tokio::test]
    async fn one_create_per_email_wins_within_a_group_and_across_groups() {
        let running = start();
        let handle = &running.handle;
        let (a, b, a_again) = tokio::join!(
            handle.commit(create("a@x.com")),
            handle.commit(create("b@x.com")),
            handle.commit(create("A@X.com")),
        );
        let a = created_id(&a);
        created_id(&b);
        assert_eq!(
            a_again.unwrap(),
            Reply::error(&ApiError::EmailAlreadyExists { customer_id: a })
        );
        let later = handle.commit(create("a@X.COM")).await.unwrap();
        assert_eq!(later.status, 409);
        assert_eq!(running.store.verify().unwrap().records, 2);
    }

    #[tokio::test]
    async fn ids_follow_commit_order_across_restarts_and_checkpoints() {
        let dir = tempfile::tempdir().unwrap();
        let mut last = None;
        for round in 0..3 {
            let opened = Store::open(dir.path(), 1 << 20).unwrap();
            let store = Arc::new(opened.store);
            let limits = Limits {
                max_pending: 8,
                max_group: 8,
                checkpoint_bytes: 2048,
            };
            let prepared =
                Prepared::new(&store, (opened.journal, opened.recovery.records), None).unwrap();
            let (handle, thread) =
                spawn(store, prepared, Arc::default(), Health::default(), limits).unwrap();
            for n in 0..40 {
                let reply = handle.commit(create(&format!("r{round}-{n}@x.com"))).await;
                let id = created_id(&reply);
                assert!(last < Some(id), "round {round}, create {n}");
                last = Some(id);
            }
            drop(handle);
            thread.join().unwrap();
        }
    }

    #[tokio::test]
    async fn a_value_over_the_bound_is_refused_and_the_rest_of_the_group_committed() {
        let running = start();
        let claim = IdempotencyClaim::new(
            customers_shared::wire::idempotency::IdempotencyKey::parse(b"k").unwrap(),
            b"body",
        );
        let oversized = Reply {
            body: Bytes::from(vec![b'x'; MAX_VALUE_BYTES + 1]),
            ..Reply::error(&ApiError::InvalidBody)
        };
        let (refused, created) = tokio::join!(
            running.handle.commit(Write::Remember {
                claim,
                reply: oversized
            }),
            running.handle.commit(create("fine@x.com")),
        );
        assert_eq!(refused, Err(CommitError::Unstorable));
        created_id(&created);
        assert!(
            !running.health.is_failed(),
            "a refused value is not a storage failure"
        );
    }

    #[tokio::test]
    async fn a_failed_journal_write_fails_the_group_and_stops_the_committer() {
        let Running {
            _dir,
            store,
            handle,
            thread,
            health,
        } = start_with(
            |dir, _| crate::journal::failing_journal(&dir.join("failing")),
            1 << 20,
        );
        assert_eq!(
            handle.commit(create("a@x.com")).await,
            Err(CommitError::Failed),
            "the group whose write failed"
        );
        assert_eq!(
            health.failure().map(|f| f.kind),
            Some(crate::health::FailureKind::Storage)
        );
        thread
            .join()
            .expect("the committer stops, without panicking");
        assert_eq!(
            handle.commit(create("b@x.com")).await,
            Err(CommitError::Stopped),
            "no later group is committed"
        );
        assert_eq!(store.verify().unwrap().records, 0, "nothing was applied");
    }

    /// The largest create the field rules allow: four-byte characters wherever text may be
    /// long, `custom_data` at its serialized limit with every byte an escaped quote.
    fn largest_customer(n: usize) -> NewCustomer {
        let four = "😀";
        let local = format!("{n:0>64}");
        let domain = format!(
            "{}.{}.{}.example",
            "d".repeat(60),
            "e".repeat(60),
            "f".repeat(40)
        );
        let keys: Vec<String> = (0..50).map(|k| format!("{k:0>64}")).collect();
        let value_len =
            (customers_shared::domain::fields::CustomData::MAX_BYTES - 50 * 70) / 50 / 2;
        let custom_data: serde_json::Map<String, serde_json::Value> = keys
            .into_iter()
            .map(|k| (k, "\"".repeat(value_len).into()))
            .collect();
        let body = serde_json::json!({
            "name": four.repeat(200),
            "email": format!("{local}@{domain}"),
            "phone": "+1 2 3 4 5 6 7 8 9 0 1 2 3 4 5",
            "address": {"city": four.repeat(100), "country": "TZ"},
            "payment_method": "é".repeat(255),
            "custom_data": custom_data,
        });
        NewCustomer::parse(body.to_string().as_bytes()).expect("valid at every limit")
    }

    #[tokio::test]
    async fn the_largest_values_never_make_sled_write_blob_files() {
        let running = start();
        let key = |n: usize| {
            customers_shared::wire::idempotency::IdempotencyKey::parse(
                format!("{n:0>255}").as_bytes(),
            )
            .unwrap()
        };
        // The largest refusal: as many long unknown keys as the body limit allows.
        let refused_body = format!(
            "{{{}}}",
            (0..2000)
                .map(|k| format!(r#""{}{k}":0"#, "😀".repeat(60)))
                .collect::<Vec<_>>()
                .join(",")
        );
        let refusal: ApiError = NewCustomer::parse(refused_body.as_bytes())
            .expect_err("unknown keys")
            .into();
        let mut largest = 0;
        for n in 0..400 {
            let claim = IdempotencyClaim::new(key(n), b"body");
            let write = if n % 2 == 0 {
                Write::Create {
                    customer: largest_customer(n),
                    claim: Some(claim),
                }
            } else {
                Write::Remember {
                    claim,
                    reply: Reply::error(&refusal),
                }
            };
            let reply = running.handle.commit(write).await.unwrap();
            largest = largest.max(reply.body.len());
        }
        assert!(
            largest > 10_000,
            "the test stores the largest values the rules allow: {largest} bytes"
        );
        let blobs = running._dir.path().join("blobs");
        drop(running.handle);
        running.thread.join().unwrap();
        let blob_files = std::fs::read_dir(&blobs).map_or(0, |files| files.count());
        assert_eq!(
            blob_files, 0,
            "sled wrote blob files, which it never fsyncs"
        );
    }

    #[tokio::test]
    async fn a_clean_stop_leaves_an_empty_journal() {
        let running = start();
        for n in 0..50 {
            created_id(&running.handle.commit(create(&format!("c{n}@x.com"))).await);
        }
        let journal_dir = running.store.journal_dir();
        drop(running.handle);
        running.thread.join().unwrap();
        assert_eq!(std::fs::read_dir(journal_dir).unwrap().count(), 0);
    }
}
