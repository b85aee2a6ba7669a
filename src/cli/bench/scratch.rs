//! Loop-mounted scratch filesystems for `--scratch-fs`: made when their turn comes, removed
//! before the next (and on Ctrl-C or SIGTERM), so one's background cleanup never lands on
//! another's timings.

use std::path::PathBuf;
use std::process::Command;

use anyhow::{Context, Result, bail};

use super::timing::{installed, output};
use crate::cli::workload::Workload;

/// A filesystem `--scratch-fs` can make.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(super) enum ScratchFs {
    Btrfs,
    Xfs,
    Ext4,
}

impl ScratchFs {
    pub(super) fn name(self) -> &'static str {
        match self {
            ScratchFs::Btrfs => "btrfs",
            ScratchFs::Xfs => "xfs",
            ScratchFs::Ext4 => "ext4",
        }
    }

    /// The mkfs program, its flags, and the Debian package that has it.
    fn mkfs(self) -> (&'static str, &'static [&'static str], &'static str) {
        match self {
            ScratchFs::Btrfs => ("mkfs.btrfs", &["-q"], "btrfs-progs"),
            ScratchFs::Xfs => ("mkfs.xfs", &["-q", "-m", "reflink=1"], "xfsprogs"),
            ScratchFs::Ext4 => ("mkfs.ext4", &["-q", "-F"], "e2fsprogs"),
        }
    }
}

/// A loop-mounted scratch filesystem, unmounted and removed on drop.
pub(super) struct Scratch {
    pub(super) mnt: PathBuf,
    img: PathBuf,
}

impl Scratch {
    /// Fails, saying what is missing, unless a scratch `fs` can be made here.
    pub(super) fn check(fs: ScratchFs) -> Result<()> {
        use std::os::unix::fs::MetadataExt;
        let (mkfs, _, package) = fs.mkfs();
        // /proc/self belongs to the process's effective user.
        if std::fs::metadata("/proc/self")
            .map(|m| m.uid())
            .unwrap_or(1)
            != 0
        {
            bail!(
                "--scratch-fs needs root to loop-mount a {} image",
                fs.name()
            );
        }
        if !installed(mkfs) {
            bail!(
                "--scratch-fs {}: {mkfs} not found (apt-get install {package})",
                fs.name()
            );
        }
        Ok(())
    }

    /// Makes and mounts a scratch `fs` with room for `workload` and every copy of it.
    pub(super) fn mount(fs: ScratchFs, workload: &Workload) -> Result<Scratch> {
        Scratch::check(fs)?;
        let (mkfs, flags, _) = fs.mkfs();
        let base = std::env::var_os("SNAPSTORE_SCRATCH_DIR")
            .map_or_else(|| PathBuf::from("/var/tmp"), PathBuf::from);
        let dir = tempfile::Builder::new()
            .prefix("snapstore-scratch-")
            .tempdir_in(&base)?
            .keep();
        let scratch = Scratch {
            mnt: dir.join("mnt"),
            img: dir.join(format!("{}.img", fs.name())),
        };
        // Room for the source, the store, and every copy the comparisons make, sparse on disk.
        let size = (10 * (workload.memory + workload.disk_data) + 10 * workload.disk).max(4 << 30);
        std::fs::File::create(&scratch.img)?.set_len(size)?;
        output({
            let mut c = Command::new(mkfs);
            c.args(flags).arg(&scratch.img);
            c
        })?;
        std::fs::create_dir(&scratch.mnt)?;
        output({
            let mut c = Command::new("mount");
            c.args(["-o", "loop"]).arg(&scratch.img).arg(&scratch.mnt);
            c
        })
        .with_context(|| format!("cannot loop-mount the {} image", fs.name()))?;
        Ok(scratch)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let umounted = Command::new("umount")
            .arg(&self.mnt)
            .status()
            .is_ok_and(|s| s.success());
        if !umounted {
            // Busy (an interrupted command still holds a file): detach now, free when closed.
            let _ = Command::new("umount").arg("-l").arg(&self.mnt).status();
        }
        if let Some(dir) = self.img.parent() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}
