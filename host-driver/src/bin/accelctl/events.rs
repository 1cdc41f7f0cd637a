//! `accelctl events [--follow]` and `accelctl health`: what acceld saw, as it tells it.

use crate::backend::Backend;
use accelvirt_api::v1;
use host_driver::daemon::reply;
use host_driver::error::{Error, Result};
use host_driver::time::utc;
use serde_json::json;

fn need_daemon(what: &str) -> Error {
    Error::Invalid(format!(
        "{what} needs acceld, which reads the firmware's event ring and watches the device \
         (start it with `acceld --device DEV`, or name its socket with --acceld)"
    ))
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
