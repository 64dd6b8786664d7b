//! The run loop both subcommands share: tick every interval until the duration is over or
//! SIGINT/SIGTERM arrives (after which the caller still writes everything it collected).

use std::{io, time::Duration};

use tokio::{
    signal::unix::{Signal, SignalKind, signal},
    time::{Instant, Interval, MissedTickBehavior},
};

/// Ticks until stopped.
pub(crate) struct Ticker {
    sigint: Signal,
    sigterm: Signal,
    deadline: Option<Instant>,
    interval: Option<Interval>,
}

impl Ticker {
    /// Takes over SIGINT and SIGTERM now, before anything is attached, so that a signal
    /// during setup still ends the run cleanly. Must be called inside a tokio runtime.
    pub(crate) fn new() -> io::Result<Self> {
        Ok(Self {
            sigint: signal(SignalKind::interrupt())?,
            sigterm: signal(SignalKind::terminate())?,
            deadline: None,
            interval: None,
        })
    }

    /// Starts ticking every `interval` (the first tick at once), for `duration` from now or
    /// until a signal when `None`.
    pub(crate) fn start(&mut self, interval: Duration, duration: Option<Duration>) {
        let mut interval = tokio::time::interval(interval.max(Duration::from_millis(1)));
        interval.set_missed_tick_behavior(MissedTickBehavior::Delay);
        self.interval = Some(interval);
        self.deadline = duration.map(|d| Instant::now() + d);
    }

    /// Waits for the next tick: `true`, or `false` once the duration is over or a signal came
    /// (only a signal before [`Ticker::start`]).
    pub(crate) async fn tick(&mut self) -> bool {
        let deadline = self.deadline;
        let interval = self.interval.as_mut();
        let next_tick = async move {
            match interval {
                Some(i) => {
                    i.tick().await;
                }
                None => std::future::pending::<()>().await,
            }
        };
        let until_deadline = async move {
            match deadline {
                Some(d) => tokio::time::sleep_until(d).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = self.sigint.recv() => false,
            _ = self.sigterm.recv() => false,
            _ = until_deadline => false,
            _ = next_tick => true,
        }
    }
}
