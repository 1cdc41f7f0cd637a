//! `accelctl flash`: the download with a progress bar on a terminal, and the figures after.

use host_driver::error::Result;
use host_driver::update::Flashed;
use host_driver::Accel;
use std::time::{Duration, Instant};

/// What a flash did.
#[derive(Debug)]
pub struct Report {
    pub flashed: Flashed,
    pub elapsed: Duration,
    pub header: fw_image::Header,
}

/// Streams `image` into the device, drawing progress on stderr when it is a terminal (and
/// not with --json).
pub async fn run(a: &Accel, image: &[u8], allow_downgrade: bool, json: bool) -> Result<Report> {
    let header = fw_image::header(image)
        .map_err(|e| host_driver::Error::Invalid(format!("not a usable image: {e}")))?;
    let bar = (!json && crate::output::interactive()).then(|| {
        let b = indicatif::ProgressBar::new(image.len() as u64);
        b.set_style(
            indicatif::ProgressStyle::with_template(
                "flashing {bar:40} {bytes}/{total_bytes} {bytes_per_sec} {eta}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        b
    });
    let start = Instant::now();
    let mut progress = |done: usize, _total: usize| {
        if let Some(b) = &bar {
            b.set_position(done as u64);
        }
    };
    let flashed = a.flash(image, allow_downgrade, &mut progress).await;
    if let Some(b) = &bar {
        b.finish_and_clear();
    }
    let flashed = flashed?;
    if flashed.resumed_from != 0 {
        eprintln!(
            "accelctl: resumed the interrupted download at byte {}",
            flashed.resumed_from
        );
    }
    Ok(Report {
        flashed,
        elapsed: start.elapsed(),
        header,
    })
}
