//! Timing whole commands: snapstore and its counterpart in turn, run for run, medians of many
//! runs for quick commands, and nothing timed that is not the command itself.

use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use serde::Serialize;

/// A command whose first run takes less than this is timed at least [`QUICK_RUNS`] times: a few
/// milliseconds vary from run to run by more than the differences being measured.
const QUICK: f64 = 0.1;
pub(super) const QUICK_RUNS: u32 = 20;

/// Median, min and max of a command's runs, in seconds.
#[derive(Debug, Clone, Copy, Serialize)]
pub(super) struct Stats {
    pub(super) median: f64,
    pub(super) min: f64,
    pub(super) max: f64,
}

/// A command to time, and what to do, untimed, before each run of it.
pub(super) type Spec<'a> = (&'a dyn Fn(), &'a dyn Fn() -> Command);

/// Times `runs` runs of `command` (at least [`QUICK_RUNS`] for a quick one), each after an
/// untimed `prepare`.
pub(super) fn time(runs: u32, prepare: &dyn Fn(), command: &dyn Fn() -> Command) -> Result<Stats> {
    let mut stats = time_all(runs, &[(prepare, command)])?;
    stats.pop().context("no figure")
}

/// Times the commands of `specs` in turn, run for run (a b a b ...), so that each sees the same
/// machine: on a shared host, background work comes and goes in seconds, and would favour
/// whichever series ran in a quiet moment. `runs` rounds, at least [`QUICK_RUNS`] when the
/// first round is quick.
pub(super) fn time_all(runs: u32, specs: &[Spec<'_>]) -> Result<Vec<Stats>> {
    let mut times: Vec<Vec<f64>> = vec![Vec::new(); specs.len()];
    let mut rounds = runs.max(1);
    let mut round = 0;
    while round < rounds {
        for ((prepare, command), times) in specs.iter().zip(&mut times) {
            prepare();
            // Untimed: no run pays for the writeback of the one before it.
            let _ = Command::new("sync").status();
            let start = Instant::now();
            output(command())?;
            times.push(start.elapsed().as_secs_f64());
        }
        if round == 0 && times.iter().flatten().all(|&t| t < QUICK) {
            rounds = rounds.max(QUICK_RUNS);
        }
        round += 1;
    }
    times
        .into_iter()
        .map(|mut times| {
            times.sort_by(f64::total_cmp);
            Ok(Stats {
                median: times[times.len() / 2],
                min: *times.first().context("no run")?,
                max: *times.last().context("no run")?,
            })
        })
        .collect()
}

/// Runs a command to completion; its stdout, or an error with its stderr.
pub(super) fn output(mut command: Command) -> Result<Vec<u8>> {
    let shown = format!("{command:?}");
    let out = command
        .output()
        .with_context(|| format!("cannot run {shown}"))?;
    if !out.status.success() {
        bail!(
            "{shown} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(out.stdout)
}

/// Whether `program` is on the `PATH`.
pub(super) fn installed(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(program).is_file()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;

    #[test]
    fn commands_are_timed_in_turn_and_quick_ones_often() {
        let order = RefCell::new(String::new());
        let (a, b) = (
            || order.borrow_mut().push('a'),
            || order.borrow_mut().push('b'),
        );
        let quick = || Command::new("true");
        let stats = time_all(2, &[(&a, &quick), (&b, &quick)]).unwrap();
        assert_eq!(stats.len(), 2);
        assert_eq!(*order.borrow(), "ab".repeat(QUICK_RUNS as usize));
        for s in stats {
            assert!(
                0.0 < s.min && s.min <= s.median && s.median <= s.max,
                "{s:?}"
            );
        }
        // A command that fails is an error, not a figure.
        assert!(time(1, &|| {}, &|| Command::new("false")).is_err());
    }
}
