//! `accelctl events [--follow]` and `accelctl health`: what acceld saw, as it tells it.

use crate::backend::Backend;
use accelvirt_api::v1;
use host_driver::daemon::reply;
use host_driver::error::{Error, Result};
use serde_json::json;

fn need_daemon(what: &str) -> Error {
    Error::Invalid(format!(
        "{what} needs acceld, which reads the firmware's event ring and watches the device \
         (start it with `acceld --device DEV`, or name its socket with --acceld)"
    ))
}

/// `seconds` since the epoch as `YYYY-MM-DDTHH:MM:SS.mmmZ` (UTC).
pub fn utc(seconds: f64) -> String {
    let ms = (seconds * 1000.0).max(0.0) as u64;
    let (secs, ms) = (ms / 1000, ms % 1000);
    let (days, rem) = ((secs / 86_400) as i64, secs % 86_400);
    // Civil from days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{ms:03}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

fn print(e: &v1::Event, json: bool) {
    if json {
        println!(
            "{}",
            json!({
                "seq": e.seq,
                "time": utc(e.time),
                "device": e.device,
                "kind": e.kind,
                "vf": e.vf,
                "code": e.code,
                "data": e.data,
                "message": e.message,
            })
        );
    } else {
        println!(
            "{} {}{} {}: {}",
            utc(e.time),
            e.device,
            e.vf.map(|v| format!(" vf {v}")).unwrap_or_default(),
            e.kind,
            e.message
        );
    }
}

/// Prints the kept events, and with `follow` each new one until interrupted.
pub async fn events(b: &Backend, follow: bool, json: bool) -> Result<()> {
    let (mut c, device) = b.daemon().ok_or_else(|| need_daemon("accelctl events"))?;
    let req = v1::EventsRequest { device };
    if !follow {
        for e in reply(c.list_events(req).await)?.events {
            print(&e, json);
        }
        return Ok(());
    }
    let mut s = reply(c.watch_events(req).await)?;
    loop {
        match s.message().await {
            Ok(Some(e)) => {
                print(&e, json);
                use std::io::Write;
                let _ = std::io::stdout().flush();
            }
            Ok(None) => {
                return Err(Error::Daemon {
                    code: 5,
                    message: "acceld ended the event stream (it is stopping)".into(),
                })
            }
            Err(s) => return Err(host_driver::daemon::status_error(&s)),
        }
    }
}

/// Prints the device's health; an error (exit 8) when something needs attention.
pub async fn health(b: &Backend, json: bool) -> Result<()> {
    let (mut c, device) = b.daemon().ok_or_else(|| need_daemon("accelctl health"))?;
    let h = reply(c.get_health(v1::DeviceRequest { device }).await)?;
    let st = shared_abi::regs::DevStatus::from_bits_retain(h.dev_status);
    let firmware = if !h.online {
        "unreachable".to_string()
    } else if st
        .intersects(shared_abi::regs::DevStatus::FAULT | shared_abi::regs::DevStatus::HALTED)
    {
        format!(
            "faulted ({}, code {})",
            host_driver::error::fault_name(h.fault_code),
            h.fault_code
        )
    } else if st.contains(shared_abi::regs::DevStatus::READY) {
        "ready".to_string()
    } else {
        "not ready".to_string()
    };
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&json!({
                "device": h.device,
                "online": h.online,
                "firmware": firmware,
                "fault_code": h.fault_code,
                "heartbeat_ok": h.heartbeat_ok,
                "heartbeat_age_seconds": h.heartbeat_age_seconds,
                "event_backlog": h.event_backlog,
                "events_dropped": h.events_dropped,
                "vfs": h.vfs.iter().map(|v| json!({
                    "vf": v.vf,
                    "faults": v.faults,
                    "flrs": v.flrs,
                    "faults_per_minute": v.faults_per_minute,
                    "flrs_per_minute": v.flrs_per_minute,
                })).collect::<Vec<_>>(),
                "drift": h.drift,
                "drift_details": h.drift_details,
                "restores": h.restores,
                "problems": h.problems,
            }))
            .unwrap_or_default()
        );
    } else {
        println!("device:      {}", h.device);
        println!("firmware:    {firmware}");
        println!(
            "heartbeat:   {} (last moved {:.1} s ago)",
            if h.heartbeat_ok { "ok" } else { "LOST" },
            h.heartbeat_age_seconds
        );
        println!(
            "events:      {} waiting, {} dropped by the firmware",
            h.event_backlog, h.events_dropped
        );
        println!(
            "layout:      {}",
            if h.drift {
                format!("DRIFT: {}", h.drift_details.join("; "))
            } else {
                "as desired".to_string()
            }
        );
        println!("restores:    {}", h.restores);
        if !h.vfs.is_empty() {
            println!();
            println!(
                "{:>4} {:>10} {:>8} {:>12} {:>10}",
                "VF", "faults", "FLRs", "faults/min", "FLRs/min"
            );
            for v in &h.vfs {
                println!(
                    "{:>4} {:>10} {:>8} {:>12.1} {:>10.1}",
                    v.vf, v.faults, v.flrs, v.faults_per_minute, v.flrs_per_minute
                );
            }
        }
        if !h.problems.is_empty() {
            println!();
            for p in &h.problems {
                println!("attention: {p}");
            }
        }
    }
    if h.problems.is_empty() {
        Ok(())
    } else {
        Err(Error::Daemon {
            code: 8,
            message: format!("{} needs attention: {}", h.device, h.problems.join("; ")),
        })
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn utc_dates() {
        assert_eq!(super::utc(0.0), "1970-01-01T00:00:00.000Z");
        assert_eq!(super::utc(1_796_400_000.5), "2026-12-04T16:00:00.500Z");
        assert_eq!(super::utc(951_782_400.0), "2000-02-29T00:00:00.000Z");
    }
}
