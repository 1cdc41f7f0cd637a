//! The main job on the simulated device (filled in with the host driver).
use std::path::Path;

pub fn run(_root: &Path) -> Result<(), String> {
    Err("the demo needs accel-sim and accelctl".into())
}
