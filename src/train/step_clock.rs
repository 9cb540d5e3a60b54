//! What one training step cost: its device time and its input time, the
//! same way on a synchronous plugin (CPU: execute returns when the step is
//! done) and an asynchronous one (GPU, TPU: execute returns once the step is
//! enqueued). See [`crate::records::Timing`] for the definitions.
//!
//! - Device time runs from launching the step to the moment every output of
//!   every replica is ready. When execute returns with everything ready, that
//!   moment is the return; otherwise a waiter thread blocks on the outputs'
//!   ready events and notes when they fire, while the host goes on to fetch
//!   the next batch.
//! - Input time is the part of fetching a step's batch (pipeline and upload)
//!   during which no step was running: all of it when nothing was in flight,
//!   or what outlasted the previous step when it was fetched during one.

use std::thread::JoinHandle;
use std::time::Instant;

use anyhow::Context;

use crate::pjrt::ReadyEvent;

/// How long the host spent getting one batch onto the devices.
#[derive(Clone, Copy, Debug)]
pub struct Fetch {
    start: Instant,
    end: Instant,
    /// Fetched while a step was in flight (a prefetch).
    overlapped: bool,
}

/// A fetch under way; [`FetchTimer::end`] stops it.
pub struct FetchTimer {
    start: Instant,
    overlapped: bool,
}

impl Fetch {
    /// Starts timing a fetch made while `during` (if any) is in flight.
    pub fn begin(during: Option<&PendingStep>) -> FetchTimer {
        FetchTimer { start: Instant::now(), overlapped: during.is_some() }
    }
}

impl FetchTimer {
    pub fn end(self) -> Fetch {
        Fetch { start: self.start, end: Instant::now(), overlapped: self.overlapped }
    }
}

/// A launched step whose outputs may not be ready yet.
pub struct PendingStep {
    launched: Instant,
    ready: Ready,
}

enum Ready {
    At(Instant),
    Waiting(JoinHandle<anyhow::Result<Instant>>),
}

impl PendingStep {
    /// Watches the outputs of a step launched at `launched` (call right
    /// after execute returns).
    pub fn watch(launched: Instant, events: Vec<ReadyEvent>) -> anyhow::Result<Self> {
        let mut all_ready = true;
        for event in &events {
            if !event.is_ready()? {
                all_ready = false;
                break;
            }
        }
        let ready = if all_ready {
            Ready::At(Instant::now())
        } else {
            Ready::Waiting(std::thread::spawn(move || {
                for event in events {
                    event.wait()?;
                }
                Ok(Instant::now())
            }))
        };
        Ok(PendingStep { launched, ready })
    }

    /// Blocks until the step is done; its launch and ready instants. The
    /// step's own error (if the device reported one) surfaces here.
    pub fn ready_at(self) -> anyhow::Result<(Instant, Instant)> {
        let ready = match self.ready {
            Ready::At(t) => t,
            Ready::Waiting(waiter) => waiter
                .join()
                .map_err(|_| anyhow::anyhow!("the thread waiting for the step's outputs panicked"))?
                .context("the training step failed on the device")?,
        };
        Ok((self.launched, ready))
    }
}

/// Turns launches, fetches and ready instants into per-step figures.
#[derive(Debug, Default)]
pub struct StepClock {
    /// When the previous step's outputs were ready.
    last_ready: Option<Instant>,
}

impl StepClock {
    /// The instant a step is launched.
    pub fn launch(&self) -> Instant {
        Instant::now()
    }

    /// Device and input seconds of a step that trained on the batch `fetch`
    /// brought and was launched and ready at `(launched, ready)`.
    pub fn finish(&mut self, fetch: Fetch, (launched, ready): (Instant, Instant)) -> (f64, f64) {
        let device = ready.saturating_duration_since(launched).as_secs_f64();
        let idle_from = match (fetch.overlapped, self.last_ready) {
            (true, Some(previous_ready)) => fetch.start.max(previous_ready),
            _ => fetch.start,
        };
        let input = fetch.end.saturating_duration_since(idle_from).as_secs_f64();
        self.last_ready = Some(ready);
        (device, input)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_prefetch_counts_only_what_outlasts_the_step() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let mut clock = StepClock::default();
        // Step 1: its batch fetched with nothing in flight (0..10 ms), launched at 10, ready at 110.
        let (device, input) = clock.finish(Fetch { start: at(0), end: at(10), overlapped: false }, (at(10), at(110)));
        assert!((device - 0.100).abs() < 1e-9 && (input - 0.010).abs() < 1e-9);
        // Step 2: its batch fetched during step 1 (20..50 ms), entirely hidden.
        let (device, input) = clock.finish(Fetch { start: at(20), end: at(50), overlapped: true }, (at(111), at(211)));
        assert!((device - 0.100).abs() < 1e-9 && input == 0.0, "{input}");
        // Step 3: fetched during step 2 (120..260 ms): 49 ms past step 2's end.
        let (_, input) = clock.finish(Fetch { start: at(120), end: at(260), overlapped: true }, (at(261), at(300)));
        assert!((input - 0.049).abs() < 1e-9, "{input}");
    }
}
