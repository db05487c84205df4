//! The committer thread. It takes everything queued (up to `max_group`) and, for the group:
//!
//! 1. **plans**: decides each write against the email index and earlier members of the group,
//!    assigns new customers their ids (so id order is commit order) and decides every reply;
//!    carries out the controls in their place (a snapshot between two groups, a promotion, a
//!    log group to apply);
//! 2. **persists**: appends the group's puts to the journal as one record and calls
//!    `fdatasync` once (the commit point); replicated, appends the record to the log first,
//!    fenced by the sequence it last applied, and the log makes it durable;
//! 3. **delivers**: applies the puts to sled and answers every member in one hand-off to the
//!    runtime. When a whole group is already queued behind it, a single worker hands this
//!    step to the applier thread (`commit::applier`) and goes on with the next group
//!    meanwhile: what the groups still being applied
//!    changed (`Unapplied`) is what the next one is planned against, besides the store, so
//!    uniqueness and `If-Match` are decided as if they were applied. Replicated, the
//!    committer delivers each group itself before the next.
//!
//! With events on, every change also writes its pending event (`customer.created`, `.updated`
//! or `.deleted`) into the stored outbox, under the next event sequence number, in the same
//! journal record; a delete erases its customer's events still pending. After the group is
//! applied the committer hands the new events to the relay, and a group carries the relay's
//! newest acknowledged mark when it moved, so the mark costs no fsync of its own under load;
//! once a mark is applied (here or, replicated, from the log) the events up to it are
//! removed from the outbox.
//!
//! Under load one fsync serves many writes; a lone write is committed as soon as it arrives.
//! When the journal's active segment passes `checkpoint_bytes`, or has held records for
//! longer than `checkpoint_interval` (a timer's `Control::CheckpointIfDue` wakes a quiet
//! committer to check), the committer starts a new segment and hands the old ones to the
//! checkpointer thread: what a delete erased leaves the journal within a bounded time.
//!
//! Any error in steps 2–3 or in a checkpoint is fail-stop (see `health`): the group is
//! answered 500, nothing later is committed, and queued or later writes are answered 503. A
//! primary whose lease is gone or whose append is fenced stops too (exit 75): the instance
//! restarts as a standby.

use std::collections::HashMap;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bytes::Bytes;
use customers_shared::wire::conditional::Condition;
use customers_shared::wire::event::{self, EventType};
use customers_shared::{ApiError, Customer, CustomerId, CustomerPatch, Timestamp};
use tokio::sync::mpsc;

use super::applier::{
    Applier, Delivery, Durable, Progress, Waiting, answer_all, answer_failed, deliver,
};
use super::checkpointer::Checkpointer;
use super::ids::IdGenerator;
use super::known_emails::KnownEmails;
use super::mode::{Mode, Primacy, Replica};
use super::outbox::{Outbox, PendingEvent};
use super::{Answer, CommitError, CommitHandle, Control, Job, Limits, Write};
use crate::health::{Failure, Health};
use crate::idempotency;
use crate::metrics::Metrics;
use crate::replication::log::AppendError;
use crate::reply::Reply;
use crate::storage::customer_record::{CustomerRecord, LiveCustomer};
use crate::storage::event_record::EventRecord;
use crate::storage::indexes::{attribute_key, attribute_prefixes, change_key};
use crate::storage::journal::{Batch, Journal, JournalError, Promise, TreeId};
use crate::storage::schema::{APPLIED_KEY, CLOCK_KEY, RELAYED_KEY};
use crate::storage::store::manifest::RecordKeys;
use crate::storage::store::outbox::{relayed_sequence, relayed_value};
use crate::storage::store::{MAX_VALUE_BYTES, Store, StoreError};

/// Why a group failed as a whole; both stop the worker.
#[derive(Debug, thiserror::Error)]
enum GroupError {
    #[error(transparent)]
    Storage(#[from] StoreError),
    /// Replicated: the lease is gone or the log moved on without us.
    #[error(transparent)]
    Fenced(#[from] Fenced),
}

/// How a replicated instance learns it may not go on.
#[derive(Debug, thiserror::Error)]
enum Fenced {
    #[error("the primary lease ran out")]
    LeaseRanOut,
    #[error("the primary lease ran out while appending")]
    LeaseRanOutWhileAppending,
    #[error(transparent)]
    Append(#[from] AppendError),
    #[error(
        "the log skips from {applied} to {sequence} (trimmed below what this instance applied); restart to rebuild"
    )]
    LogSkips { applied: u64, sequence: u64 },
}

impl From<JournalError> for GroupError {
    fn from(error: JournalError) -> Self {
        Self::Storage(error.into())
    }
}

/// What the committer starts from: the journal's append side, the id generator (above the
/// newest stored id) and the next event number, the record tree's keys, the stored emails, its mode and, with events
/// on, the outbox.
pub(crate) struct Prepared {
    journal: Journal,
    ids: IdGenerator,
    /// The sequence number of the next event (above every stored one).
    next_event: u64,
    records: RecordKeys,
    known_emails: KnownEmails,
    outbox: Option<Arc<Outbox>>,
    mode: Mode,
}

impl Prepared {
    /// Reads what the committer needs from an opened store (the newest id, every email key):
    /// a single worker's committer, publishing through `outbox` when events are on.
    pub(crate) fn new(
        store: &Store,
        opened: (Journal, RecordKeys),
        outbox: Option<Arc<Outbox>>,
    ) -> Result<Self, StoreError> {
        let (journal, records) = opened;
        Ok(Self {
            journal,
            records,
            ids: IdGenerator::after(store.newest_id()?),
            next_event: store.last_event_sequence()? + 1,
            known_emails: KnownEmails::load(store)?,
            outbox,
            mode: Mode::Single,
        })
    }

    /// The same, replicated: the committer starts as a standby (without an outbox: only the
    /// primary publishes, and it gets one when it takes over).
    pub(crate) fn standby(self, replica: Replica) -> Self {
        Self {
            outbox: None,
            mode: Mode::Standby(replica),
            ..self
        }
    }

    /// The emails the committer knows.
    pub(crate) fn known_emails(&self) -> &KnownEmails {
        &self.known_emails
    }

    /// The outbox the committer fills, when it publishes events.
    pub(crate) fn outbox(&self) -> Option<Arc<Outbox>> {
        self.outbox.clone()
    }
}

/// Starts the committer thread (which starts the checkpointer) and, on the current Tokio
/// runtime, the task that hands its answers to the waiting requests. Join the returned
/// handle after dropping every [`CommitHandle`] to wait for the last group and the final
/// checkpoint.
pub(crate) fn spawn(
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
                deliver(waiting, answer);
            }
        }
    });
    let checkpointer = Checkpointer::spawn(store.clone(), metrics.clone(), health.clone())?;
    let Prepared {
        journal,
        ids,
        next_event,
        records,
        known_emails,
        outbox,
        mode,
    } = prepared;
    store.clock.set_following(matches!(mode, Mode::Standby(_)));
    let applier = Applier {
        store: store.clone(),
        metrics: metrics.clone(),
        health: health.clone(),
        deliveries,
        progress: Arc::new(Progress::default()),
    };
    // Replicated, each group is delivered before the next: a standby's groups come from the
    // log one after another, and the primary's read gate and lease follow what it applied.
    let pipeline = match mode {
        Mode::Single => Some(Pipeline::spawn(applier.clone())?),
        _ => None,
    };
    let committer = Committer {
        store,
        journal,
        ids,
        records,
        known_emails,
        outbox,
        mode,
        metrics,
        health,
        applier,
        pipeline,
        groups: 0,
        unapplied: Unapplied::default(),
        unapplied_events: Vec::new(),
        checkpointer,
        checkpoint_bytes: limits.checkpoint_bytes,
        checkpoint_interval: limits.checkpoint_interval,
        segment_since: None,
        batch: Batch::default(),
        events: Vec::new(),
        erased: Vec::new(),
        next_event,
        clock_last: 0,
        changed: false,
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
    mode: Mode,
    metrics: Arc<Metrics>,
    health: Health,
    /// Applies and answers durable groups: on the applier thread (`pipeline`) or, without
    /// one, here.
    applier: Applier,
    pipeline: Option<Pipeline>,
    /// Groups committed so far (each one's number in `Unapplied` and `applier::Progress`).
    groups: u64,
    unapplied: Unapplied,
    /// The events of groups not yet applied, so not yet in the outbox: (group, customer,
    /// sequence number).
    unapplied_events: Vec<(u64, CustomerId, u64)>,
    checkpointer: Checkpointer,
    checkpoint_bytes: u64,
    checkpoint_interval: Duration,
    /// When the active journal segment got its first record (`None`: it has none).
    segment_since: Option<Instant>,
    /// The group being committed, reused between groups.
    batch: Batch,
    /// The events of the group's changes, for the relay, and the pending ones it erased.
    events: Vec<PendingEvent>,
    erased: Vec<u64>,
    /// The sequence number the next event gets.
    next_event: u64,
    /// The commit time of the group before (`storage::change_clock`).
    clock_last: u64,
    /// Whether the group being planned changed a customer.
    changed: bool,
}

/// What the groups planned but not yet applied (this one's earlier members included) have
/// changed, which the store does not show yet: a later write sees it as if it were applied.
/// Each entry carries the number of the group that made it, and goes once that group is
/// applied (the store shows it then, or a later entry replaced it).
#[derive(Default)]
struct Unapplied {
    /// Lower-cased emails given to a customer (`Some`) or freed (`None`).
    emails: HashMap<String, (u64, Option<CustomerId>)>,
    /// Customers changed, as they are after the change.
    customers: HashMap<CustomerId, (u64, CustomerRecord)>,
}

impl Unapplied {
    fn forget_through(&mut self, applied: u64) {
        self.emails.retain(|_, (group, _)| *group > applied);
        self.customers.retain(|_, (group, _)| *group > applied);
    }
}

/// The applier thread and its two channels: durable groups to it, emptied batches back.
struct Pipeline {
    groups: std::sync::mpsc::SyncSender<Durable>,
    spent: std::sync::mpsc::Receiver<Batch>,
    thread: JoinHandle<()>,
}

impl Pipeline {
    fn spawn(applier: Applier) -> std::io::Result<Self> {
        // One group waiting beside the one being applied: the committer is at most two
        // groups ahead of the store.
        let (groups, received) = std::sync::mpsc::sync_channel(1);
        let (spent_sender, spent) = std::sync::mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("applier".into())
            .spawn(move || applier.run(received, spent_sender))?;
        Ok(Self {
            groups,
            spent,
            thread,
        })
    }
}

/// A write's decided change, before its puts are staged.
enum Change {
    Create {
        id: CustomerId,
        email_key: String,
        /// Its `attributes` index prefixes (`storage::indexes`).
        attributes: Vec<Vec<u8>>,
    },
    Update {
        id: CustomerId,
        version: u64,
        old_email: String,
        new_email: String,
        /// The new `updated_at`, and `customer.updated`'s `previous_attributes` (JSON).
        at_ms: u64,
        previous: Vec<u8>,
        /// The index entries it moves: the previous `updated_at`, and the attribute
        /// prefixes before and after.
        old_at_ms: u64,
        old_attributes: Vec<Vec<u8>>,
        new_attributes: Vec<Vec<u8>>,
    },
    Delete {
        id: CustomerId,
        version: u64,
        email: String,
        /// Its index entries, which go: the `changes` entry moves to the deletion time.
        old_at_ms: u64,
        attributes: Vec<Vec<u8>>,
    },
}

/// At least what an updated event's stored record adds to the customer and its previous
/// values: the record's header (33 bytes) and `data`'s frame (39).
const UPDATED_EVENT_FRAME: usize = 96;

/// A stored customer that does not read back: the database is damaged.
fn corrupt(id: CustomerId, reason: String) -> StoreError {
    StoreError::Corrupt {
        what: format!("customer {id}"),
        reason,
    }
}

/// `customer.updated`'s `previous_attributes`: each changed member's value before (from the
/// patch), and `updated_at`'s, in the customer's key order.
fn previous_attributes(
    mut changed: serde_json::Map<String, serde_json::Value>,
    before: &Customer,
) -> Vec<u8> {
    const ORDER: [&str; 8] = [
        "name",
        "email",
        "phone",
        "address",
        "payment_method",
        "updated_at",
        "status",
        "custom_data",
    ];
    changed.insert("updated_at".into(), before.updated_at.to_string().into());
    let ordered: serde_json::Map<String, serde_json::Value> = ORDER
        .into_iter()
        .filter_map(|key| changed.remove(key).map(|value| (key.to_owned(), value)))
        .collect();
    serde_json::to_vec(&ordered).expect("JSON values serialise")
}

/// What a member of a group is, without where its answer goes.
// Writes are most of the members: boxing them would cost an allocation per create.
#[allow(clippy::large_enum_variant)]
enum Member {
    Write(Write),
    Control(Control),
}

impl Member {
    /// Whether it reads or rewrites the store beyond what its group plans, so that every
    /// group before it must be applied first.
    fn reads_beyond_its_group(&self) -> bool {
        matches!(
            self,
            Self::Control(
                Control::Snapshot { .. }
                    | Control::PurgeExpired { .. }
                    | Control::Promote { .. }
                    | Control::ApplyLogGroup { .. }
            )
        )
    }
}

impl Committer {
    fn run(mut self, mut jobs: mpsc::Receiver<Job>, max_group: usize) {
        let _trip = self.health.trip_on_panic("committer");
        let mut members = Vec::with_capacity(max_group);
        let mut waiting = Vec::with_capacity(max_group);
        while let Some(first) = jobs.blocking_recv() {
            let mut next = Some(first);
            while let Some(job) = next {
                let (member, waits) = match job {
                    Job::Write { write, answer } => (Member::Write(write), Waiting::Write(answer)),
                    Job::Control { control, done } => {
                        (Member::Control(control), Waiting::Control(done))
                    }
                };
                members.push(member);
                waiting.push(waits);
                next = if members.len() < max_group {
                    jobs.try_recv().ok()
                } else {
                    None
                };
            }
            if members.iter().any(Member::reads_beyond_its_group) {
                self.drain();
            }
            if self.health.is_failed() {
                answer_all(waiting.drain(..), CommitError::Stopped);
                break;
            }
            match self.commit(&mut members, &mut waiting, jobs.len() >= max_group) {
                Ok(()) if self.health.is_failed() => break,
                Ok(()) => {}
                Err(GroupError::Storage(e)) => {
                    // Failed first, so nobody answered 500 can still find the worker ready.
                    self.health.fail(Failure::storage(e));
                    answer_all(waiting.drain(..), CommitError::Failed);
                    break;
                }
                Err(GroupError::Fenced(reason)) => {
                    self.health.fail(Failure::fenced(reason.to_string()));
                    answer_all(waiting.drain(..), CommitError::NotPrimary);
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
            let waits = match job {
                Job::Write { answer, .. } => Waiting::Write(answer),
                Job::Control { done, .. } => Waiting::Control(done),
            };
            deliver(waits, Err(CommitError::Stopped));
        }
        self.stop();
    }

    /// Waits until every group committed so far is applied (or answered after a failure).
    fn drain(&self) {
        self.drain_through(self.groups);
    }

    /// Waits until group `number` and those before it are applied (or answered).
    fn drain_through(&self, number: u64) {
        if self.pipeline.is_some() {
            self.applier.progress.wait_for(number);
        }
    }

    /// Plans and persists one group, then has it applied and its members (`waiting`, in
    /// order) answered: by the applier thread when a whole group is already queued behind it
    /// (`next_is_full`), or here.
    fn commit(
        &mut self,
        members: &mut Vec<Member>,
        waiting: &mut Vec<Waiting>,
        next_is_full: bool,
    ) -> Result<(), GroupError> {
        let started = Instant::now();
        let size = members.len();
        self.groups += 1;
        let applied = self.applier.progress.applied();
        self.unapplied.forget_through(applied);
        self.unapplied_events.retain(|(group, ..)| *group > applied);
        // Never before the group before it nor a change-feed frontier already shown
        // (`storage::change_clock`); the same for every member.
        let created_ms = self.store.clock.begin_group(self.clock_last);
        self.clock_last = created_ms;
        self.changed = false;
        if let Some(spent) = self.pipeline.as_ref().and_then(|p| p.spent.try_recv().ok()) {
            self.batch = spent;
        }
        self.batch.clear();
        self.events.clear();
        self.erased.clear();
        let mut group = std::mem::take(&mut self.unapplied);
        let mut outcomes = Vec::with_capacity(size);
        let mut mark_asked = false;
        let mut log_sequence = None;
        for member in members.drain(..) {
            let outcome = match member {
                Member::Write(write) => self.plan(write, &mut group, created_ms)?,
                Member::Control(Control::RecordRelayed) => {
                    mark_asked = true;
                    Ok(Reply::ok(Bytes::new()))
                }
                Member::Control(Control::ApplyLogGroup { sequence, record }) => {
                    let outcome = self.take_log_group(sequence, &record)?;
                    if outcome.is_ok() {
                        log_sequence = Some(sequence).max(log_sequence);
                    }
                    outcome
                }
                Member::Control(Control::Promote {
                    expected_last,
                    lease,
                    outbox,
                }) => self.promote(expected_last, lease, outbox)?,
                Member::Control(Control::Snapshot { path, done }) => {
                    // Planned before this group is applied: the snapshot holds exactly the
                    // groups before it.
                    self.spill_pending_events()?;
                    let _ = done.send(self.store.write_snapshot(&path));
                    Ok(Reply::ok(Bytes::new()))
                }
                Member::Control(Control::PurgeExpired {
                    created_before_ms,
                    batch,
                    done,
                }) => {
                    // Before this group is applied: a key it reuses gets its new record after.
                    let purged =
                        idempotency::purge::purge_expired(&self.store, created_before_ms, batch)?;
                    let _ = done.send(purged);
                    Ok(Reply::ok(Bytes::new()))
                }
                // Checked after the group, as after every group.
                Member::Control(Control::CheckpointIfDue) => Ok(Reply::ok(Bytes::new())),
            };
            outcomes.push(outcome);
        }
        self.unapplied = group;
        // The mark rides along with a group that syncs anyway; a group of conflicts only
        // stays without a sync unless the relay asked for one.
        let relayed_mark = match &self.outbox {
            Some(outbox) if mark_asked || !self.batch.is_empty() => outbox.mark_to_journal(),
            _ => None,
        };
        if let Some(mark) = relayed_mark {
            self.batch
                .put(TreeId::Relayed, RELAYED_KEY, &relayed_value(mark));
        }
        // A standby's change-feed frontier is the newest group time it applied.
        if self.changed {
            self.batch
                .put(TreeId::Replication, CLOCK_KEY, &created_ms.to_be_bytes());
        }
        let mut journaled = None;
        // Relayed through here: the events up to it leave the outbox once applied.
        let mut trim_through = None;
        let mut group_at = None;
        if !self.batch.is_empty() {
            if let Mode::Primary(replica, primacy) = &mut self.mode {
                log_sequence = Some(append_to_log(replica, primacy, &mut self.batch)?);
            }
            if let Some(sequence) = log_sequence {
                self.batch
                    .put(TreeId::Replication, APPLIED_KEY, &sequence.to_be_bytes());
            }
            self.journal.append(&mut self.batch)?;
            self.segment_since.get_or_insert_with(Instant::now);
            for put in self.batch.puts() {
                match put.tree {
                    TreeId::Customers => self.records.observe(put.key),
                    TreeId::Relayed => trim_through = put.value.and_then(relayed_sequence),
                    TreeId::Replication if put.key == CLOCK_KEY => {
                        group_at = put
                            .value
                            .and_then(|v| <[u8; 8]>::try_from(v).ok())
                            .map(u64::from_be_bytes);
                    }
                    _ => {}
                }
            }
            let sync_started = Instant::now();
            // Replicated, the log made the group durable; a local tail lost in a crash is
            // applied again from it.
            if matches!(self.mode, Mode::Single) {
                self.journal.sync()?;
            }
            journaled = Some((self.batch.len(), sync_started.elapsed()));
            failpoint!("commit-before-apply", |_| crate::support::crash());
            failpoint!("committer-panic", |_| panic!("failpoint committer-panic"));
        }
        let outbox = self.outbox.clone();
        self.unapplied_events.extend(
            self.events
                .iter()
                .map(|e| (self.groups, e.event.customer, e.sequence)),
        );
        let group = Durable {
            number: self.groups,
            created_ms,
            puts: std::mem::take(&mut self.batch),
            journaled,
            relayed_mark,
            trim_through,
            group_at,
            events: std::mem::take(&mut self.events),
            erased: std::mem::take(&mut self.erased),
            outbox,
            started,
            size,
            delivery: waiting.drain(..).zip(outcomes).collect(),
        };
        // Handed on only when the next group is full anyway: otherwise the writes that
        // arrive while this one is applied join the next group, which then shares one
        // `fdatasync` among more of them (a group taken at once would be smaller, and each
        // pays its own sync, write and hand-offs: 10-17 % more CPU per create measured).
        let pipeline = self.pipeline.as_ref().filter(|_| next_is_full);
        if pipeline.is_none() {
            // The groups before this one first: answers leave in commit order.
            self.drain_through(self.groups - 1);
        }
        match pipeline {
            Some(pipeline) => {
                // Gone only if the applier panicked, which failed the worker: then nobody
                // hears of this group, and the stop answers what is queued.
                if let Err(unsent) = pipeline.groups.send(group) {
                    answer_failed(unsent.0.delivery);
                }
            }
            None => {
                let mode = &mut self.mode;
                let metrics = &self.metrics;
                self.batch = self.applier.finish(group, || {
                    if let (Some(replica), Some(sequence)) = (mode.replica(), log_sequence) {
                        replica.applied_sequence = sequence;
                        replica.applied.send_replace(sequence);
                        metrics.log_applied(sequence);
                    }
                });
            }
        }
        Ok(())
    }

    /// A standby that holds the lease and applied the log through `expected_last` becomes
    /// the primary, publishing through `outbox`.
    fn promote(
        &mut self,
        expected_last: u64,
        lease: crate::replication::lease::LeaseClock,
        outbox: Option<Arc<Outbox>>,
    ) -> Result<Answer, StoreError> {
        if let Mode::Standby(replica) = &self.mode
            && replica.applied_sequence != expected_last
        {
            return Ok(Err(CommitError::NotPrimary));
        }
        let primacy = Primacy {
            expected_last,
            lease,
        };
        match std::mem::replace(&mut self.mode, Mode::Single).promote(primacy) {
            Ok(primary) => {
                self.mode = primary;
                self.store.clock.set_following(false);
                // Ids and event numbers continue above everything the log holds.
                self.ids = IdGenerator::after(self.store.newest_id()?);
                self.next_event = self.store.last_event_sequence()? + 1;
                self.outbox = outbox;
                Ok(Ok(Reply::ok(Bytes::new())))
            }
            Err(unchanged) => {
                self.mode = unchanged;
                Ok(Err(CommitError::NotStandby))
            }
        }
    }

    /// Decides one write's reply and adds its puts to the batch. `group` is what the earlier
    /// members of this group changed, which the store does not show yet.
    fn plan(
        &mut self,
        write: Write,
        group: &mut Unapplied,
        created_ms: u64,
    ) -> Result<Answer, StoreError> {
        if matches!(self.mode, Mode::Standby(_)) {
            return Ok(Err(CommitError::NotPrimary));
        }
        let (reply, claim, change) = match write {
            Write::Remember { claim, reply } => (reply, Some(claim), None),
            Write::Create { customer, claim } => {
                let email_key = customer.email.index_key();
                match self.email_owner(&email_key, group)? {
                    Some(customer_id) => (
                        Reply::error(&ApiError::EmailAlreadyExists { customer_id }),
                        claim,
                        None,
                    ),
                    None => {
                        let id = self.ids.next_id(created_ms);
                        let customer = Customer::create(id, customer);
                        let attributes = attribute_prefixes(&customer);
                        let json = Bytes::from(customer.to_json());
                        let change = Change::Create {
                            id,
                            email_key,
                            attributes,
                        };
                        (Reply::created(id, json), claim, Some(change))
                    }
                }
            }
            Write::Update {
                id,
                patch,
                condition,
                claim,
            } => {
                let (reply, change) = self.plan_update(id, patch, condition, group, created_ms)?;
                (reply, claim, change)
            }
            Write::Delete {
                id,
                condition,
                claim,
            } => {
                let (reply, change) = self.plan_delete(id, condition, group)?;
                (reply, claim, change)
            }
        };
        let record = claim
            .as_ref()
            .map(|claim| idempotency::encode(claim, &reply, created_ms));
        let stored_customer = match &change {
            Some(Change::Update { version, .. }) => CustomerRecord::live(*version, &[]).len(),
            _ => 0,
        } + reply.body.len();
        // An update's event holds the customer and the changed fields' values before.
        let stored_event = match &change {
            Some(Change::Update { previous, .. }) if self.outbox.is_some() => {
                reply.body.len() + previous.len() + UPDATED_EVENT_FRAME
            }
            _ => 0,
        };
        let too_large = record
            .as_ref()
            .map_or(0, Vec::len)
            .max(stored_customer)
            .max(stored_event);
        if too_large > MAX_VALUE_BYTES {
            tracing::error!(
                bytes = too_large,
                limit = MAX_VALUE_BYTES,
                "refusing to store a value over the bound (a bug)"
            );
            return Ok(Err(CommitError::Unstorable));
        }
        let more_events = self.unapplied_events.len() + self.events.len() + 1;
        if change.is_some()
            && self
                .outbox
                .as_ref()
                .is_some_and(|outbox| !outbox.has_room_for(more_events))
        {
            return Ok(Err(CommitError::OutboxFull));
        }
        if let Some(change) = change {
            self.stage(change, &reply, group, created_ms);
        }
        if let (Some(claim), Some(record)) = (&claim, &record) {
            idempotency::remember(&mut self.batch, &claim.key, record, created_ms);
        }
        Ok(Ok(reply))
    }

    /// An update of `id`: `404`/`410` when there is no such customer, `412` at a version
    /// `condition` refuses, `400` when the merged customer breaks a rule, `409` when its new
    /// email is another customer's; the customer as it is when the patch changes nothing;
    /// otherwise its next version.
    fn plan_update(
        &self,
        id: CustomerId,
        patch: CustomerPatch,
        condition: Option<Condition>,
        group: &Unapplied,
        at_ms: u64,
    ) -> Result<(Reply, Option<Change>), StoreError> {
        let live = match self.current(id, condition.as_ref(), group)? {
            Ok(current) => current,
            Err(refusal) => return Ok((Reply::error(&refusal), None)),
        };
        let customer = Customer::from_stored(&live.json).map_err(|reason| corrupt(id, reason))?;
        let patched = match patch.apply(&customer) {
            Ok(patched) => patched,
            Err(refusal) => return Ok((Reply::error(&refusal.into()), None)),
        };
        if !patched.changed() {
            return Ok((Reply::customer(200, id, live.version, live.json), None));
        }
        let old_email = customer.email.index_key();
        let new_email = patched.fields.email.index_key();
        if new_email != old_email
            && let Some(owner) = self.email_owner(&new_email, group)?
            && owner != id
        {
            let taken = ApiError::EmailAlreadyExists { customer_id: owner };
            return Ok((Reply::error(&taken), None));
        }
        let version = live.version + 1;
        let updated = customer.updated(patched.fields, at_ms);
        let previous = previous_attributes(patched.previous, &customer);
        let json = Bytes::from(updated.to_json());
        let change = Change::Update {
            id,
            version,
            old_email,
            new_email,
            at_ms: updated.updated_at.unix_ms(),
            previous,
            old_at_ms: customer.updated_at.unix_ms(),
            old_attributes: attribute_prefixes(&customer),
            new_attributes: attribute_prefixes(&updated),
        };
        Ok((Reply::customer(200, id, version, json), Some(change)))
    }

    /// A delete of `id`: refused as an update would be, otherwise its tombstone.
    fn plan_delete(
        &self,
        id: CustomerId,
        condition: Option<Condition>,
        group: &Unapplied,
    ) -> Result<(Reply, Option<Change>), StoreError> {
        let live = match self.current(id, condition.as_ref(), group)? {
            Ok(current) => current,
            Err(refusal) => return Ok((Reply::error(&refusal), None)),
        };
        // Its index entries go: the email's, the attributes', and its change moves.
        let stored = Customer::from_stored(&live.json).map_err(|reason| corrupt(id, reason))?;
        let body = serde_json::json!({ "id": id, "deleted": true }).to_string();
        let change = Change::Delete {
            id,
            version: live.version,
            email: stored.email.index_key(),
            old_at_ms: stored.updated_at.unix_ms(),
            attributes: attribute_prefixes(&stored),
        };
        Ok((Reply::ok(Bytes::from(body)), Some(change)))
    }

    /// Customer `id` as this group finds it, if it exists and `condition` accepts its
    /// version; otherwise the refusal (`404`, `410`, `412`).
    fn current(
        &self,
        id: CustomerId,
        condition: Option<&Condition>,
        group: &Unapplied,
    ) -> Result<Result<LiveCustomer, ApiError>, StoreError> {
        let record = match group.customers.get(&id) {
            Some((_, record)) => Some(record.clone()),
            None => self.store.get(id)?,
        };
        let live = match record {
            None => return Ok(Err(ApiError::CustomerNotFound)),
            Some(CustomerRecord::Deleted { .. }) => return Ok(Err(ApiError::CustomerDeleted)),
            Some(CustomerRecord::Live(live)) => live,
        };
        if condition.is_some_and(|condition| !condition.matches_strongly(live.version)) {
            let version = live.version;
            return Ok(Err(ApiError::PreconditionFailed { version }));
        }
        Ok(Ok(live))
    }

    /// Who holds the lower-cased email `email_key` as of this group's earlier members.
    fn email_owner(
        &self,
        email_key: &str,
        group: &Unapplied,
    ) -> Result<Option<CustomerId>, StoreError> {
        match group.emails.get(email_key) {
            Some(&(_, owner)) => Ok(owner),
            None if self.known_emails.may_contain(email_key) => self.store.email_owner(email_key),
            None => Ok(None),
        }
    }

    /// Adds a decided change's puts to the batch (with its event, when events are on), and
    /// what it changes to `group`.
    fn stage(&mut self, change: Change, reply: &Reply, group: &mut Unapplied, at_ms: u64) {
        self.changed = true;
        let event = match change {
            Change::Create {
                id,
                email_key,
                attributes,
            } => {
                self.batch
                    .put(TreeId::Customers, &id.to_bytes(), &reply.body);
                self.batch
                    .put(TreeId::Emails, email_key.as_bytes(), &id.to_bytes());
                self.batch
                    .put(TreeId::Changes, &change_key(id.unix_ms(), id), &[]);
                for prefix in &attributes {
                    self.batch
                        .put(TreeId::Attributes, &attribute_key(prefix, id), &[]);
                }
                self.known_emails.insert(&email_key);
                group.emails.insert(email_key, (self.groups, Some(id)));
                let data = reply.body.clone();
                (EventType::Created, id, 1, id.unix_ms(), data)
            }
            Change::Update {
                id,
                version,
                old_email,
                new_email,
                at_ms,
                previous,
                old_at_ms,
                old_attributes,
                new_attributes,
            } => {
                let record = CustomerRecord::live(version, &reply.body);
                self.batch.put(TreeId::Customers, &id.to_bytes(), &record);
                self.move_change(id, old_at_ms, at_ms);
                for prefix in old_attributes
                    .iter()
                    .filter(|p| !new_attributes.contains(p))
                {
                    self.batch
                        .remove(TreeId::Attributes, &attribute_key(prefix, id));
                }
                for prefix in new_attributes
                    .iter()
                    .filter(|p| !old_attributes.contains(p))
                {
                    self.batch
                        .put(TreeId::Attributes, &attribute_key(prefix, id), &[]);
                }
                if new_email != old_email {
                    self.batch.remove(TreeId::Emails, old_email.as_bytes());
                    self.batch
                        .put(TreeId::Emails, new_email.as_bytes(), &id.to_bytes());
                    self.known_emails.insert(&new_email);
                    group.emails.insert(old_email, (self.groups, None));
                    group.emails.insert(new_email, (self.groups, Some(id)));
                }
                let json = reply.body.clone();
                let live = CustomerRecord::Live(LiveCustomer { version, json });
                group.customers.insert(id, (self.groups, live));
                let data = Bytes::from(event::updated_data(&reply.body, &previous));
                (EventType::Updated, id, version, at_ms, data)
            }
            Change::Delete {
                id,
                version,
                email,
                old_at_ms,
                attributes,
            } => {
                let tombstone = CustomerRecord::tombstone(at_ms);
                self.batch
                    .put(TreeId::Customers, &id.to_bytes(), &tombstone);
                self.batch.remove(TreeId::Emails, email.as_bytes());
                self.move_change(id, old_at_ms, at_ms);
                for prefix in &attributes {
                    self.batch
                        .remove(TreeId::Attributes, &attribute_key(prefix, id));
                }
                group.emails.insert(email, (self.groups, None));
                let deleted = CustomerRecord::Deleted {
                    deleted_at_ms: at_ms,
                };
                group.customers.insert(id, (self.groups, deleted));
                self.erase_pending_events(id);
                let data = event::deleted_data(id, Timestamp::from_unix_ms(at_ms));
                (EventType::Deleted, id, version, at_ms, Bytes::from(data))
            }
        };
        if self.outbox.is_some() {
            let (event_type, customer, version, at_ms, data) = event;
            let event = EventRecord {
                event_type,
                customer,
                version,
                at_ms,
                data,
            };
            let sequence = self.next_event;
            self.next_event += 1;
            self.batch
                .put(TreeId::Outbox, &sequence.to_be_bytes(), &event.encode());
            self.events.push(PendingEvent { sequence, event });
        }
    }

    /// Moves customer `id`'s `changes` entry from `from_ms` to `to_ms`.
    fn move_change(&mut self, id: CustomerId, from_ms: u64, to_ms: u64) {
        if from_ms != to_ms {
            self.batch.remove(TreeId::Changes, &change_key(from_ms, id));
        }
        self.batch.put(TreeId::Changes, &change_key(to_ms, id), &[]);
    }

    /// A delete of `customer`: its events not yet published (stored before, or earlier in
    /// this group) leave the outbox in the same journal record, so they are never published.
    fn erase_pending_events(&mut self, customer: CustomerId) {
        let Some(outbox) = &self.outbox else {
            return;
        };
        let stored = outbox.pending_of(customer);
        // Those of groups still being applied are not in the outbox yet (or are, twice).
        let unapplied = self
            .unapplied_events
            .iter()
            .filter(|(_, of, _)| *of == customer)
            .map(|(_, _, sequence)| *sequence);
        let in_group = self
            .events
            .iter()
            .filter(|e| e.event.customer == customer)
            .map(|e| e.sequence);
        let mut erased: Vec<u64> = stored
            .into_iter()
            .chain(unapplied)
            .chain(in_group)
            .collect();
        erased.sort_unstable();
        erased.dedup();
        for sequence in &erased {
            self.batch.remove(TreeId::Outbox, &sequence.to_be_bytes());
        }
        self.events.retain(|e| e.event.customer != customer);
        self.erased.extend(erased);
    }

    /// A standby: adds the log's group `sequence` to the batch (after the ones it already
    /// applied, in order), and learns its emails for the day it becomes the primary.
    fn take_log_group(&mut self, sequence: u64, record: &[u8]) -> Result<Answer, GroupError> {
        let Mode::Standby(replica) = &mut self.mode else {
            return Ok(Err(CommitError::NotStandby));
        };
        let expected = replica.applied_sequence + 1;
        if sequence < expected {
            return Ok(Ok(Reply::ok(Bytes::new()))); // applied already (a redelivery)
        }
        if sequence > expected {
            return Err(Fenced::LogSkips {
                applied: replica.applied_sequence,
                sequence,
            }
            .into());
        }
        // A standby slow to apply (`sleep(ms)`): the read barrier's test.
        failpoint!("standby-apply");
        let Some((payload, [])) = crate::storage::journal::split_record(record) else {
            return Err(GroupError::Storage(StoreError::Corrupt {
                what: format!("log group {sequence}"),
                reason: "not a whole journal record".into(),
            }));
        };
        for put in crate::storage::journal::Puts::from_payload(payload) {
            if let (TreeId::Emails, Some(_), Ok(email)) =
                (put.tree, put.value, std::str::from_utf8(put.key))
            {
                self.known_emails.insert(email);
            }
        }
        self.batch.extend_from_payload(payload);
        // The next group of this batch follows this one.
        replica.applied_sequence = sequence;
        Ok(Ok(Reply::ok(Bytes::new())))
    }

    /// Past the size bound, or once the active segment has held records for the interval,
    /// starts a new segment and has the older ones checkpointed (unless a checkpoint is still
    /// running: then the next group or tick tries again).
    fn start_checkpoint_if_due(&mut self) -> Result<(), StoreError> {
        let full = self.journal.active_len() >= self.checkpoint_bytes;
        let old = self
            .segment_since
            .is_some_and(|since| since.elapsed() >= self.checkpoint_interval);
        if (full || old) && self.checkpointer.is_idle() {
            // The checkpoint covers every record before the new segment: all applied first.
            self.drain();
            if self.health.is_failed() {
                return Ok(());
            }
            // The segments it removes hold the pending events that only memory has besides.
            self.spill_pending_events()?;
            let below = self.journal.rotate()?;
            self.segment_since = None;
            self.checkpointer.start(below, self.records.clone());
        }
        Ok(())
    }

    /// Writes the pending events that only memory (and the journal) holds into the store:
    /// before sled is made durable without the journal segments that hold them, or copied.
    fn spill_pending_events(&self) -> Result<(), StoreError> {
        let Some(outbox) = &self.outbox else {
            return Ok(());
        };
        let pending = outbox.pending_in_memory();
        self.store
            .spill_events(pending.iter().map(|e| (e.sequence, &e.event)))
    }

    /// After the last group: a final checkpoint, unless the worker failed, so that a clean
    /// restart has nothing to replay.
    fn stop(mut self) {
        // The groups still being applied land (or are answered, after a failure) first.
        if let Some(pipeline) = self.pipeline.take() {
            drop(pipeline.groups);
            if pipeline.thread.join().is_err() {
                self.health.fail(Failure::panic("applier"));
            }
        }
        let spilled = self.spill_pending_events();
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
        if let Err(e) = spilled {
            health.fail(Failure::storage(e));
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
            .and_then(|()| {
                Ok(crate::storage::journal::remove_segments_before(
                    &dir,
                    u64::MAX,
                )?)
            }) {
            Ok(()) => tracing::debug!("committer stopped after a final checkpoint"),
            Err(e) => health.fail(Failure::storage(e)),
        }
    }
}

/// The primary: appends the group's record to the log after the last applied sequence; its
/// sequence, once acknowledged while the lease is surely held.
fn append_to_log(
    replica: &Replica,
    primacy: &mut Primacy,
    batch: &mut Batch,
) -> Result<u64, GroupError> {
    if !primacy.lease.is_valid() {
        return Err(Fenced::LeaseRanOut.into());
    }
    let record = Bytes::copy_from_slice(batch.sealed());
    let id = format!("{}-{}", replica.instance, primacy.expected_last + 1);
    let appended = replica.runtime.block_on(replica.log.append(
        record,
        primacy.expected_last,
        &id,
        primacy.lease.remaining(),
    ));
    let sequence = appended.map_err(Fenced::from)?;
    primacy.expected_last = sequence;
    // Paused past the lease between the check and the acknowledgement: the group is in the
    // log (the next primary applies it), but this instance no longer answers for it.
    if !primacy.lease.is_valid() {
        return Err(Fenced::LeaseRanOutWhileAppending.into());
    }
    Ok(sequence)
}

#[cfg(test)]
mod tests {
    use customers_shared::NewCustomer;

    use super::*;
    use crate::idempotency::IdempotencyClaim;

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
        start_with_outbox(journal, checkpoint_bytes, None)
    }

    /// The same, with events on (into `outbox`, which nothing relays).
    fn start_with_outbox(
        journal: impl FnOnce(&std::path::Path, Journal) -> Journal,
        checkpoint_bytes: u64,
        outbox: Option<Arc<Outbox>>,
    ) -> Running {
        let limits = Limits {
            max_pending: 64,
            max_group: 64,
            checkpoint_bytes,
            checkpoint_interval: Duration::from_secs(3600),
        };
        start_with_limits(journal, outbox, limits)
    }

    fn start_with_limits(
        journal: impl FnOnce(&std::path::Path, Journal) -> Journal,
        outbox: Option<Arc<Outbox>>,
        limits: Limits,
    ) -> Running {
        let dir = tempfile::tempdir().unwrap();
        let opened = Store::open(dir.path(), 1 << 20).unwrap();
        let journal = journal(dir.path(), opened.journal);
        let store = Arc::new(opened.store);
        let health = Health::default();
        let prepared = Prepared::new(&store, (journal, opened.recovery.records), outbox).unwrap();
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
    async fn a_group_planned_while_the_one_before_is_applied_sees_what_it_changed() {
        // Groups of 16: each wave's 16 new emails fill one group, and the same emails in
        // capitals the next; that one is queued whole, so the committer hands the first to
        // the applier and plans the second while the first is still being inserted. Small
        // journal segments make checkpoints, and their drains, happen between.
        let limits = Limits {
            max_pending: 64,
            max_group: 16,
            checkpoint_bytes: 16 * 1024,
            checkpoint_interval: Duration::from_secs(3600),
        };
        let running = start_with_limits(|_, journal| journal, None, limits);
        let handle = &running.handle;
        let (mut created, mut refused) = (0, 0);
        for wave in 0..16 {
            let emails: Vec<String> = (0..16).map(|i| format!("w{wave}e{i}@x.com")).collect();
            let again = emails.iter().map(|email| email.to_uppercase());
            let writes = emails.iter().cloned().chain(again);
            let answers =
                futures_util::future::join_all(writes.map(|email| handle.commit(create(&email))))
                    .await;
            for answer in answers {
                match answer.map(|reply| reply.status) {
                    Ok(201) => created += 1,
                    Ok(409) => refused += 1,
                    other => panic!("neither created nor refused: {other:?}"),
                }
            }
        }
        assert_eq!((created, refused), (256, 256));
        assert_eq!(running.store.verify().unwrap().records, 256);
    }

    /// A write of the race table: a create with an email, or a change of the customer made
    /// first from the table's `existing` emails (by index).
    enum Op {
        Create(&'static str),
        Update(usize, &'static str, Option<&'static str>),
        Delete(usize),
    }

    /// A description, the emails created first, the writes queued together, their statuses.
    type RaceCase = (
        &'static str,
        &'static [&'static str],
        Vec<Op>,
        &'static [u16],
    );

    fn condition(if_match: Option<&str>) -> Option<Condition> {
        if_match.map(|tag| {
            Condition::parse("If-Match", [tag.as_bytes()])
                .unwrap()
                .unwrap()
        })
    }

    #[tokio::test]
    async fn changes_queued_together_are_decided_in_queue_order_against_each_other() {
        // Whether the committer takes them as one group or several, the answers are those
        // of the writes applied one after another in queue order.
        let cases: [RaceCase; 6] = [
            (
                "an email moved away is free for a create queued after the move",
                &["a@x.com"],
                vec![
                    Op::Update(0, r#"{"email":"b@x.com"}"#, None),
                    Op::Create("A@x.com"),
                ],
                &[200, 201],
            ),
            (
                "a create queued before the move still conflicts",
                &["a@x.com"],
                vec![
                    Op::Create("a@x.com"),
                    Op::Update(0, r#"{"email":"b@x.com"}"#, None),
                ],
                &[409, 200],
            ),
            (
                "a deleted customer's email is free for the next create",
                &["a@x.com"],
                vec![Op::Delete(0), Op::Create("a@X.com")],
                &[200, 201],
            ),
            (
                "an update after a delete finds the tombstone",
                &["a@x.com"],
                vec![
                    Op::Update(0, r#"{"name":"U"}"#, None),
                    Op::Delete(0),
                    Op::Update(0, r#"{"name":"V"}"#, None),
                    Op::Delete(0),
                ],
                &[200, 200, 410, 410],
            ),
            (
                "of two changes at one If-Match the first wins",
                &["a@x.com"],
                vec![
                    Op::Update(0, r#"{"name":"U"}"#, Some("\"1\"")),
                    Op::Update(0, r#"{"name":"V"}"#, Some("\"1\"")),
                    Op::Delete(0),
                ],
                &[200, 412, 200],
            ),
            (
                "an email a create took first cannot be moved to",
                &["a@x.com", "b@x.com"],
                vec![
                    Op::Create("n@x.com"),
                    Op::Update(0, r#"{"email":"N@x.com"}"#, None),
                    Op::Update(1, r#"{"email":"a@x.com"}"#, None),
                ],
                &[201, 409, 409],
            ),
        ];
        for (description, existing, ops, expected) in cases {
            let running = start();
            let mut ids = Vec::new();
            for email in existing {
                ids.push(created_id(&running.handle.commit(create(email)).await));
            }
            let writes = ops.into_iter().map(|op| match op {
                Op::Create(email) => create(email),
                Op::Update(n, patch, if_match) => Write::Update {
                    id: ids[n],
                    patch: CustomerPatch::parse(patch.as_bytes()).unwrap(),
                    condition: condition(if_match),
                    claim: None,
                },
                Op::Delete(n) => Write::Delete {
                    id: ids[n],
                    condition: None,
                    claim: None,
                },
            });
            let answers =
                futures_util::future::join_all(writes.map(|write| running.handle.commit(write)))
                    .await;
            let statuses: Vec<u16> = answers.iter().map(|a| a.as_ref().unwrap().status).collect();
            assert_eq!(statuses, expected, "{description}");
            let consistency = running.store.verify().unwrap();
            assert!(
                consistency.is_consistent(),
                "{description}: {consistency:?}"
            );
        }
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
                checkpoint_interval: Duration::from_secs(3600),
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
    async fn the_committer_purges_expired_idempotency_records_between_groups() {
        let running = start();
        let key = customers_shared::wire::idempotency::IdempotencyKey::parse(b"k").unwrap();
        let claim = IdempotencyClaim::new(key.clone(), b"body");
        let create = Write::Create {
            customer: customer("kept@x.com"),
            claim: Some(claim),
        };
        created_id(&running.handle.commit(create).await);
        let probe = running.handle.probe();
        let stored = |store: &Store| {
            crate::idempotency::record::lookup(store, &key, std::time::Duration::MAX).unwrap()
        };
        assert_eq!(probe.purge_expired(0, 8).await, Ok(0), "nothing is older");
        assert!(stored(&running.store).is_some());
        assert_eq!(probe.purge_expired(u64::MAX, 8).await, Ok(1));
        assert!(
            stored(&running.store).is_none(),
            "the expired record is gone"
        );
        assert!(!running.health.is_failed());
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
            |dir, _| crate::storage::journal::failing_journal(&dir.join("failing")),
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
        NewCustomer::parse(largest_fields(n, '"', "😀").to_string().as_bytes())
            .expect("valid at every limit")
    }

    /// The fields of a largest customer, every value made of `filler` (a character JSON
    /// escapes) or `four` (a four-byte one): two fillers make two customers that differ in
    /// every field.
    fn largest_fields(n: usize, filler: char, four: &str) -> serde_json::Value {
        let local = match filler {
            '"' => format!("{n:0>64}"),
            _ => format!("{n:x>64}"),
        };
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
            .map(|k| (k, filler.to_string().repeat(value_len).into()))
            .collect();
        let accented = if filler == '"' { "é" } else { "è" };
        serde_json::json!({
            "name": four.repeat(200),
            "email": format!("{local}@{domain}"),
            "phone": if filler == '"' { "+1 2 3 4 5 6 7 8 9 0 1 2 3 4 5" } else { "+9 8 7 6 5 4 3 2 1 0 9 8 7 6 5" },
            "address": {"city": four.repeat(100), "country": if filler == '"' { "TZ" } else { "KE" }},
            "payment_method": accented.repeat(255),
            "custom_data": custom_data,
        })
    }

    #[tokio::test]
    async fn the_largest_values_never_make_sled_write_blob_files() {
        // Events on: an update's event holds the customer and every field's value before.
        let outbox = Arc::new(Outbox::new(1 << 20, [], 0, 0));
        let running = start_with_outbox(|_, journal| journal, 4096, Some(outbox));
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
            if let Some(id) = reply.customer_id {
                // Every field changed, each to a value as large as before.
                let patch = largest_fields(n, '\\', "🙂").to_string();
                let update = Write::Update {
                    id,
                    patch: CustomerPatch::parse(patch.as_bytes()).unwrap(),
                    condition: None,
                    claim: Some(IdempotencyClaim::new(key(n + 1000), b"patch")),
                };
                let updated = running.handle.commit(update).await.unwrap();
                assert_eq!(updated.version, Some(2), "{:?}", updated.body);
            }
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
    async fn pending_events_stay_in_memory_until_a_checkpoint_or_a_stop_needs_them_stored() {
        let stored = |store: &Store| -> Vec<u64> {
            let events = store.events_after(0, usize::MAX).unwrap();
            events.into_iter().map(|(sequence, _)| sequence).collect()
        };
        // No checkpoint: the journal alone holds the events besides memory.
        let outbox = Arc::new(Outbox::new(1 << 20, [], 0, 0));
        let running = start_with_outbox(|_, journal| journal, 1 << 20, Some(outbox.clone()));
        for n in 0..5 {
            created_id(&running.handle.commit(create(&format!("m{n}@x.com"))).await);
        }
        assert_eq!(outbox.pending(), 5);
        assert_eq!(stored(&running.store), [] as [u64; 0], "in memory only");
        // A clean stop checkpoints everything: the pending events are stored first.
        let store = running.store.clone();
        drop(running.handle);
        running.thread.join().unwrap();
        assert_eq!(stored(&store), [1, 2, 3, 4, 5]);

        // Checkpoints on the way: each stores what its segments hold, before removing them.
        let outbox = Arc::new(Outbox::new(1 << 20, [], 0, 0));
        let running = start_with_outbox(|_, journal| journal, 2048, Some(outbox.clone()));
        for n in 0..60 {
            created_id(&running.handle.commit(create(&format!("c{n}@x.com"))).await);
        }
        let before_stop = stored(&running.store);
        assert!(
            !before_stop.is_empty() && before_stop.iter().copied().eq(1..=before_stop.len() as u64),
            "the events before the last checkpoint, in order: {before_stop:?}"
        );
        let store = running.store.clone();
        drop(running.handle);
        running.thread.join().unwrap();
        assert_eq!(stored(&store), (1..=60).collect::<Vec<u64>>());
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
