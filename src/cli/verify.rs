//! `snapstore verify [REF...]`: data files re-hashed against their recorded chunk digests.

use anyhow::{Result, bail};
use snapstore::{VerifyOptions, VerifyStatus};

use super::progress::Tracked;
use super::{Output, human_bytes};

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Snapshots to verify [default: all]
    #[arg(value_name = "REF")]
    refs: Vec<String>,
    /// Compute and record digests for snapshots that have none yet
    #[arg(long)]
    record: bool,
}

pub(crate) async fn run(store: Tracked, args: Args, out: Output) -> Result<()> {
    let report = store
        .verify(
            &args.refs,
            VerifyOptions {
                record: args.record,
            },
        )
        .await?;
    drop(store);
    if out.json {
        out.json(&report)?;
    } else {
        for s in &report.snapshots {
            let status = match s.status {
                VerifyStatus::Ok => "ok",
                VerifyStatus::Mismatch => "MISMATCH",
                VerifyStatus::Unrecorded => "no digests recorded (verify --record records them)",
                VerifyStatus::Recorded => "digests recorded",
            };
            out.line(format_args!(
                "{} {:?}: {status} ({} read)",
                s.id,
                s.name,
                human_bytes(s.bytes_checked)
            ))?;
            for m in &s.mismatches {
                out.line(format_args!(
                    "  {:?} bytes {}..{}: {}",
                    m.file, m.start, m.end, m.reason
                ))?;
            }
        }
    }
    if report.has_mismatch() {
        bail!("data differs from the recorded digests");
    }
    Ok(())
}
