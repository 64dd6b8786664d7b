//! A runtime's green threads in one compact phrase: `3 blocked on an MVar (#4, #5, #6), 2 in
//! a foreign call (#2, #3)`, one group per state, most telling first.

use crate::model::{GreenState, GreenThread};

/// The order states are listed in: what blocks first, then what runs or is done.
fn rank(state: &GreenState) -> u32 {
    match state {
        GreenState::BlockedOnMvar => 0,
        GreenState::BlockedOnStm => 1,
        GreenState::BlockedOnBlackHole => 2,
        GreenState::BlockedOnThrowTo => 3,
        GreenState::BlockedOnIo => 4,
        GreenState::Delay => 5,
        GreenState::ForeignCall => 6,
        GreenState::Running => 7,
        GreenState::Other { code } => 8 + code,
        GreenState::Finished => u32::MAX,
    }
}

/// What a thread in `state` is doing, after its count.
fn state_phrase(state: &GreenState) -> String {
    match state {
        GreenState::BlockedOnMvar => "blocked on an MVar".into(),
        GreenState::BlockedOnStm => "blocked in STM (retry)".into(),
        GreenState::BlockedOnBlackHole => "blocked on a thunk under evaluation".into(),
        GreenState::BlockedOnThrowTo => "blocked in throwTo".into(),
        GreenState::BlockedOnIo => "blocked on I/O".into(),
        GreenState::Delay => "in threadDelay".into(),
        GreenState::ForeignCall => "in a foreign call".into(),
        GreenState::Running => "runnable".into(),
        GreenState::Finished => "finished".into(),
        GreenState::Other { code } => format!("in state {code}"),
    }
}

/// `3 blocked on an MVar (#4, #5, #6), 1 in a foreign call (#2)`; labelled threads show their
/// label (`#4 "worker"`). Empty for no threads.
pub(crate) fn green_threads_phrase(threads: &[GreenThread]) -> String {
    let mut states: Vec<&GreenState> = threads.iter().map(|t| &t.state).collect();
    states.sort_by_key(|s| rank(s));
    states.dedup();
    states
        .into_iter()
        .map(|state| {
            let ids: Vec<String> = threads
                .iter()
                .filter(|t| &t.state == state)
                .map(|t| match &t.label {
                    Some(label) => format!("#{} \"{label}\"", t.id),
                    None => format!("#{}", t.id),
                })
                .collect();
            format!("{} {} ({})", ids.len(), state_phrase(state), ids.join(", "))
        })
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn thread(id: u64, state: GreenState) -> GreenThread {
        GreenThread {
            id,
            label: None,
            state,
        }
    }

    /// Check that threads are grouped by state, blocked states first, with their ids.
    #[test]
    fn grouped_by_state() {
        let mut threads = vec![
            thread(2, GreenState::ForeignCall),
            thread(5, GreenState::BlockedOnMvar),
            thread(4, GreenState::BlockedOnMvar),
            thread(1, GreenState::Finished),
            thread(6, GreenState::BlockedOnMvar),
        ];
        threads[1].label = Some("lock-a".into());
        assert_eq!(
            green_threads_phrase(&threads),
            "3 blocked on an MVar (#5 \"lock-a\", #4, #6), 1 in a foreign call (#2), 1 finished (#1)"
        );
        assert_eq!(green_threads_phrase(&[]), "");
    }
}
