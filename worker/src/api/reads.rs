//! The reads: a customer by id, a page of customers and a page of search results, straight
//! from the store (never behind the commit queue), each through its instance's read gate
//! (`replication::ReadGate`): a standby catches up with the log's end before every read (a
//! customer it holds may be an older version than one acknowledged), a primary answers only
//! while its lease is surely held. A page stops before its reply would pass the
//! connection's `max_payload`.
//!
//! Pages and searches run on the blocking pool: they take milliseconds of CPU, and a read
//! that misses sled's cache waits for the disk. A get is one sled lookup, a memory read while
//! sled's cache holds it, and costs less than the two thread switches of a hand-off to the pool
//! (they were half of a get's CPU): so it runs on the runtime's thread ([`GetPlacement`]),
//! until one reads from the disk (the thread's count of block reads moves: a read the page
//! cache answers does not count, nor does a moment the scheduler took the core away); then
//! the gets of the next second go to the pool, so that a cold database never stalls every
//! request behind its reads.

use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use customers_shared::runtime::clock::unix_ms;
use customers_shared::wire::list::{ListQuery, Order, feed_body, list_body};
use customers_shared::wire::search::{SearchRequest, search_body};
use customers_shared::{ApiError, CustomerId};

use super::Context;
use crate::reply::Reply;
use crate::storage::customer_record::CustomerRecord;
use crate::storage::store::{Store, StoreError};
use crate::support::blocking;

/// Room left in a reply for its headers and NATS's own framing, below `max_payload`.
const REPLY_HEADROOM: usize = 4 * 1024;

/// `customers.v1.get`: the payload is the id. A malformed id is a 404 like an unknown one:
/// no customer has it.
pub(super) async fn get(payload: &[u8], context: &Context) -> Reply {
    let Some(id) = std::str::from_utf8(payload)
        .ok()
        .and_then(|id| id.trim().parse::<CustomerId>().ok())
    else {
        return Reply::error(&ApiError::CustomerNotFound);
    };
    // A standby may not have applied a change its client was already told about: a customer
    // it holds may be an older version, one it lacks a new one. So it catches up first.
    if !context.reads.caught_up().await {
        return Reply::error(&behind());
    }
    let found = match context.gets.inline() {
        true => context
            .gets
            .run(|| context.store.get(id))
            .map_err(|e| read_failed(&e)),
        false => {
            let store = context.store.clone();
            on_blocking_pool(move || store.get(id)).await
        }
    };
    if !context.reads.still_current().await {
        return Reply::error(&behind());
    }
    match found {
        Ok(Some(CustomerRecord::Live(live))) => Reply::customer(200, id, live.version, live.json),
        Ok(Some(CustomerRecord::Deleted { .. })) => Reply::error(&ApiError::CustomerDeleted),
        Ok(None) => Reply::error(&ApiError::CustomerNotFound),
        Err(e) => Reply::error(&e),
    }
}

/// Where gets run: on the runtime's thread, except for a while after one read the disk.
#[derive(Debug, Default)]
pub(crate) struct GetPlacement {
    /// Until this time (ms since the epoch), gets go to the blocking pool.
    pool_until_ms: AtomicU64,
}

impl GetPlacement {
    /// How long gets go to the pool after one that read the disk.
    const POOL_FOR_MS: u64 = 1_000;

    fn inline(&self) -> bool {
        unix_ms() >= self.pool_until_ms.load(Ordering::Relaxed)
    }

    /// Runs `get` on this thread; when it read the disk, later gets go to the pool.
    fn run<T>(&self, get: impl FnOnce() -> T) -> T {
        let before = block_reads();
        let found = get();
        if block_reads() > before {
            self.pool_until_ms
                .store(unix_ms() + Self::POOL_FOR_MS, Ordering::Relaxed);
        }
        found
    }
}

/// The block reads this thread has made from storage (`getrusage`'s `ru_inblock`): what the
/// page cache answered is not counted. Zero where the count is not kept per thread.
fn block_reads() -> u64 {
    #[cfg(target_os = "linux")]
    {
        let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
        // SAFETY: getrusage writes a whole `rusage` into the pointer it is given, which
        // points at one, and reads nothing from it.
        if unsafe { libc::getrusage(libc::RUSAGE_THREAD, usage.as_mut_ptr()) } == 0 {
            // SAFETY: initialised above (zeroed, then written by a successful call).
            return unsafe { usage.assume_init() }.ru_inblock as u64;
        }
    }
    0
}

/// A standby that cannot catch up with the log within its barrier's wait.
fn behind() -> ApiError {
    ApiError::ServiceUnavailable {
        reason: "this replica is behind the log",
        retry_after_secs: 1,
    }
}

/// `customers.v1.list`: a page of up to `limit` customers (newest first, or the change feed's
/// oldest change first) that, with its headers, fits in one NATS message on this connection
/// (`has_more` says when it stopped short).
pub(super) async fn list(payload: &[u8], context: &Context) -> Reply {
    let query = match ListQuery::parse(payload) {
        Ok(query) => query,
        Err(e) => return Reply::error(&e),
    };
    read_page(context, move |store, max_bytes| match query.order {
        Order::CreatedDesc => {
            let (customers, has_more) = store.list(&query, max_bytes)?;
            Ok(list_body(customers.iter().map(|c| &c[..]), has_more))
        }
        Order::UpdatedAsc => {
            // Taken before the walk: nothing before it can still change behind the walk.
            let frontier = store.clock.frontier();
            let page = store.feed(&query, frontier, max_bytes)?;
            let items = page.items.iter().map(|item| &item[..]);
            Ok(feed_body(items, page.has_more, page.next))
        }
    })
    .await
}

/// `customers.v1.search`: a page of the customers a query matches, newest first, with how
/// many match in all. It reads the indexes as the committer leaves them after each group, so
/// every acknowledged write is found (or gone) by the next search.
pub(super) async fn search(payload: &[u8], context: &Context) -> Reply {
    let request = match SearchRequest::parse(payload) {
        Ok(request) => request,
        Err(e) => return Reply::error(&e),
    };
    read_page(context, move |store, max_bytes| {
        let page = store.search(&request, max_bytes)?;
        let items = page.items.iter().map(|item| &item[..]);
        Ok(search_body(items, page.next_page, page.total_count))
    })
    .await
}

/// A page read through the instance's read gate, on the blocking pool: `read` gets the store
/// and the bytes the page's items may take, and returns the body.
async fn read_page(
    context: &Context,
    read: impl FnOnce(&Store, usize) -> Result<Vec<u8>, StoreError> + Send + 'static,
) -> Reply {
    let max_bytes = context.client.max_payload().saturating_sub(REPLY_HEADROOM);
    if !context.reads.caught_up().await {
        return Reply::error(&behind());
    }
    let store = context.store.clone();
    let page = on_blocking_pool(move || read(&store, max_bytes)).await;
    if !context.reads.still_current().await {
        return Reply::error(&behind());
    }
    match page {
        Ok(body) => Reply::ok(Bytes::from(body)),
        Err(e) => Reply::error(&e),
    }
}

/// A read on the blocking pool: a storage error or a panic there is a 500.
async fn on_blocking_pool<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, ApiError> {
    match blocking::run(work).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(e)) => Err(read_failed(&e)),
        Err(e) => Err(read_failed(&e)),
    }
}

/// A storage error or a panic in a read: a 500.
fn read_failed(error: &dyn std::fmt::Display) -> ApiError {
    tracing::error!(error = %error, "read failed");
    ApiError::Internal
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::os::fd::AsRawFd;

    use super::*;

    /// Reads `path` whole, after asking the kernel to drop it from the page cache (so the
    /// read goes to the disk) when `cold`.
    fn read(path: &std::path::Path, cold: bool) {
        let mut file = std::fs::File::open(path).unwrap();
        if cold {
            // SAFETY: a plain advice call on a descriptor this function owns.
            let advised =
                unsafe { libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
            assert_eq!(advised, 0);
        }
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes).unwrap();
    }

    #[test]
    fn gets_leave_the_runtime_thread_after_one_that_read_the_disk() {
        // Not on a tmpfs: its pages are its storage, and nothing is ever read from a disk.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("leaf");
        let mut file = std::fs::File::create(&path).unwrap();
        file.write_all(&vec![7u8; 1 << 20]).unwrap();
        file.sync_all().unwrap();
        let placement = GetPlacement::default();
        placement.run(|| read(&path, false));
        assert!(placement.inline(), "a get from the page cache stays inline");
        placement.run(|| read(&path, true));
        assert!(
            !placement.inline(),
            "after a get that read the disk, gets go to the pool (is {} on a tmpfs?)",
            dir.path().display()
        );
    }
}
