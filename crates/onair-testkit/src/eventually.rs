//! Waiting for what happens asynchronously, without fixed sleeps: a check is
//! repeated every [`POLL_INTERVAL`] until it holds, and the test fails with
//! what it was waiting for after [`PATIENCE`].

use std::fmt::Debug;
use std::time::Duration;

/// How long any "eventually" may take before the test fails. Generous,
/// because a noisy 2-core CI machine can stall for seconds; a check returns
/// as soon as it holds, so passing runs never wait this long.
pub const PATIENCE: Duration = Duration::from_secs(60);

/// The pause between two tries of a check.
pub const POLL_INTERVAL: Duration = Duration::from_millis(10);

/// What a check of [`assert_eventually!`](crate::assert_eventually) may
/// return: `true`, `Some(value)` or `Ok(value)` once it holds.
pub trait Eventual {
    /// What the check yields once it holds.
    type Value;
    /// The value once the check holds, else what to add to the failure
    /// message (the last error of a `Result`).
    fn into_value(self) -> Result<Self::Value, String>;
}

impl Eventual for bool {
    type Value = ();
    fn into_value(self) -> Result<(), String> {
        if self { Ok(()) } else { Err(String::new()) }
    }
}

impl<T> Eventual for Option<T> {
    type Value = T;
    fn into_value(self) -> Result<T, String> {
        self.ok_or_else(String::new)
    }
}

impl<T, E: Debug> Eventual for Result<T, E> {
    type Value = T;
    fn into_value(self) -> Result<T, String> {
        self.map_err(|error| format!("; last error: {error:?}"))
    }
}

/// Repeats a check (an expression, which may `.await`) until it holds and
/// yields its value: `true` gives `()`, `Some(value)` and `Ok(value)` give
/// `value`. Fails the test after [`PATIENCE`] with the message given (or the
/// check's text), and a `Result`'s last error.
///
/// ```text
/// assert_eventually!(station.ready().await, "the station is ready");
/// let line = assert_eventually!(log.find("listening"), "the station logs its addresses");
/// ```
#[macro_export]
macro_rules! assert_eventually {
    ($check:expr $(,)?) => {
        $crate::assert_eventually!($check, "{}", stringify!($check))
    };
    ($check:expr, $($what:tt)+) => {{
        let give_up = $crate::__tokio::time::Instant::now() + $crate::PATIENCE;
        loop {
            // A statement of its own, so that what the check borrowed (a
            // lock's guard) is released before the pause.
            let outcome = $crate::Eventual::into_value($check);
            match outcome {
                Ok(value) => break value,
                Err(last) => {
                    if $crate::__tokio::time::Instant::now() >= give_up {
                        panic!(
                            "gave up after {:?} waiting until {}{}",
                            $crate::PATIENCE,
                            format_args!($($what)+),
                            last
                        );
                    }
                    $crate::__tokio::time::sleep($crate::POLL_INTERVAL).await;
                }
            }
        }
    }};
}
