//! `cargo xtask vm`: boot a Linux guest under QEMU (TCG) with vfio-user devices attached and
//! run a script in it. The first run fetches QEMU, a Debian kernel, busybox and pciutils from
//! Debian's package registry into the VM cache (`$ACCELVIRT_VM_CACHE`, else target/vm-cache).

use std::path::Path;
use vm_harness::{vfio_user_device, Assets, Guest};

const USAGE: &str = "\
usage: cargo xtask vm [--fetch] [--socket PATH]... [--device JSON]... [--script FILE]

  --fetch        fetch and unpack the guest assets, then stop
  --socket PATH  attach a vfio-user socket (accel-sim's PF or a VF); repeatable
  --device JSON  attach a device given as a QEMU -device value (a handoff line's); repeatable
  --script FILE  the guest's script (busybox sh -e); accelctl is at /bin/accelctl
                 [default: list our functions with lspci -vv, and accelctl info on each PF]

Prints the guest's serial console and QEMU's messages; exits with the script's status.

Inside the guest, accelctl reaches a function over kernel VFIO: bind it to vfio-pci first
(the PF's ID is 1fac:a0c0, a VF's 1fac:a0c1), then give accelctl its PCI address:
  echo 1fac a0c1 > /sys/bus/pci/drivers/vfio-pci/new_id
  accelctl -d 0000:00:03.0 run --job crc32c --seconds 1

Example:
  target/debug/accel-sim --socket /tmp/accelvirt/accel0.sock &
  cargo xtask vm --socket /tmp/accelvirt/accel0.sock";

const DEFAULT_SCRIPT: &str = r#"lspci -nn -vv -d 1fac:
for d in /sys/bus/pci/devices/*; do
  if [ "$(cat $d/vendor):$(cat $d/device)" = "0x1fac:0xa0c0" ]; then
    echo 1fac a0c0 > /sys/bus/pci/drivers/vfio-pci/new_id 2>/dev/null || true
    accelctl -d "${d##*/}" info
  fi
done
"#;

pub fn run(root: &Path, args: &[String]) -> Result<i32, String> {
    let mut devices = Vec::new();
    let mut script = DEFAULT_SCRIPT.to_string();
    let mut fetch_only = false;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut val = || {
            it.next()
                .cloned()
                .ok_or_else(|| format!("{a} needs a value\n{USAGE}"))
        };
        match a.as_str() {
            "--fetch" => fetch_only = true,
            "--socket" => devices.push(vfio_user_device(Path::new(&val()?))),
            "--device" => devices.push(val()?),
            "--script" => {
                let f = val()?;
                script = std::fs::read_to_string(&f).map_err(|e| format!("{f}: {e}"))?;
            }
            "-h" | "--help" => {
                println!("{USAGE}");
                return Ok(0);
            }
            other => return Err(format!("unknown argument {other}\n{USAGE}")),
        }
    }
    let cache = vm_harness::assets::default_cache_dir();
    eprintln!("vm: guest assets in {}", cache.display());
    let assets = Assets::fetch(&cache).map_err(|e| e.to_string())?;
    eprint!("{}", assets.versions);
    if fetch_only {
        return Ok(0);
    }
    let bins = super::build_debug(root, &["-p", "host-driver", "--bin", "accelctl"])?;
    let mut guest = Guest::new(&script).file("bin/accelctl", &bins.join("accelctl"));
    for d in devices {
        guest = guest.device(d);
    }
    let work = super::target_dir(root).join("vm-run");
    let out = guest.boot(&assets, &work).map_err(|e| e.to_string())?;
    print!("{}", out.serial);
    eprint!("{}", out.qemu_stderr);
    match out.status {
        Some(s) => Ok(s),
        None => Err(format!(
            "the guest never reported its script's status (serial log: {})",
            work.join("serial.log").display()
        )),
    }
}
