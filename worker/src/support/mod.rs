//! Small things every part of the worker needs the same way: retrying with backoff
//! ([`retry`]), running work on tokio's blocking pool and joining it ([`blocking`]), and the
//! failpoints' crash (`crash`, in builds with the `failpoints` feature only).

pub(crate) mod blocking;
pub(crate) mod retry;

/// A failpoint's crash: the process ends at once, as on a power cut or `kill -9`, without
/// unwinding, flushing or answering anyone.
#[cfg(feature = "failpoints")]
pub(crate) fn crash() -> ! {
    std::process::abort()
}
