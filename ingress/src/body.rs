//! A request body as the ingress reads it: at most the body limit, at a pace
//! ([`BodyPace`]) that cuts a stalled or trickling body within about a second instead of
//! letting it hold its connection and its credential's slot.

use std::time::{Duration, Instant};

use bytes::Bytes;
use customers_shared::ApiError;
use http_body_util::BodyExt;
use hyper::body::Incoming;

/// How fast a body must arrive: all of it within `total`, and, after its first second, at
/// least `min_rate` bytes per second on average. A stalled or trickling body is cut within
/// about a second instead of holding its connection and its credential's slot for `total`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct BodyPace {
    pub(crate) total: Duration,
    pub(crate) min_rate: u64,
}

/// The part of a body's time that the minimum rate does not cover (its first bytes may wait
/// for a connection's slow start).
const BODY_GRACE: Duration = Duration::from_secs(1);

impl BodyPace {
    /// When byte `received + 1` must have arrived, for a body that started at `started`.
    fn deadline(&self, started: Instant, received: usize) -> Instant {
        let by_rate = BODY_GRACE
            + Duration::from_secs_f64((received as f64 + 1.0) / self.min_rate.max(1) as f64);
        started + by_rate.min(self.total)
    }

    pub(crate) fn timeout(&self) -> ApiError {
        ApiError::BodyTimeout {
            total_ms: u64::try_from(self.total.as_millis()).unwrap_or(u64::MAX),
            min_rate: self.min_rate,
        }
    }
}

pub(crate) enum BodyError {
    TooLarge,
    TooSlow,
    Read(String),
}

/// Reads at most `limit` bytes, at the pace `pace` asks; never buffers an unbounded body nor
/// waits for a slow one longer than its deadline. A body that is all there already (a small
/// one arrives with the head) is taken without a timer: one is armed only while it waits.
pub(crate) async fn read_body(
    mut body: Incoming,
    limit: usize,
    pace: BodyPace,
) -> Result<Bytes, BodyError> {
    use futures_util::FutureExt;
    let started = Instant::now();
    let mut first: Option<Bytes> = None;
    let mut joined: Vec<u8> = Vec::new();
    let mut received = 0;
    let mut deadline: Option<std::pin::Pin<Box<tokio::time::Sleep>>> = None;
    loop {
        let frame = match body.frame().now_or_never() {
            Some(frame) => frame,
            None => {
                let until = tokio::time::Instant::from(pace.deadline(started, received));
                let sleep =
                    deadline.get_or_insert_with(|| Box::pin(tokio::time::sleep_until(until)));
                sleep.as_mut().reset(until);
                tokio::select! {
                    frame = body.frame() => frame,
                    () = sleep.as_mut() => return Err(BodyError::TooSlow),
                }
            }
        };
        let data = match frame {
            None => break,
            Some(Err(e)) => {
                return Err(BodyError::Read(format!("the body could not be read: {e}")));
            }
            Some(Ok(frame)) => match frame.into_data() {
                Ok(data) => data,
                Err(_trailers) => continue,
            },
        };
        received += data.len();
        if received > limit {
            return Err(BodyError::TooLarge);
        }
        match first.take() {
            None if joined.is_empty() => first = Some(data),
            earlier => {
                if let Some(earlier) = earlier {
                    joined.extend_from_slice(&earlier);
                }
                joined.extend_from_slice(&data);
            }
        }
    }
    Ok(first.unwrap_or_else(|| Bytes::from(joined)))
}
