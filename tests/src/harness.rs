//! What the integration tests share beyond the test bed: where cargo put
//! the product's binaries, and waiting for a condition.

use std::{
    path::PathBuf,
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, ensure};

/// The cargo profile directory (`target/<profile>`) of the running test,
/// where cargo also puts the workspace's binaries. A test runs as
/// `target/<profile>/deps/<name>-<hash>`.
pub fn profile_dir() -> Result<PathBuf> {
    let exe = std::env::current_exe().context("cannot find the test binary")?;
    exe.parent()
        .and_then(|deps| deps.parent())
        .map(PathBuf::from)
        .with_context(|| format!("{} is not under target/<profile>/deps", exe.display()))
}

/// Polls `condition` until it holds. The deadline only stops a broken test
/// from hanging; a working appliance meets the condition long before.
pub fn eventually(what: &str, mut condition: impl FnMut() -> Result<bool>) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !condition()? {
        ensure!(Instant::now() < deadline, "gave up waiting until {what}");
        thread::sleep(Duration::from_millis(100));
    }
    Ok(())
}
