//! Config-space conformance: Debian's `lspci -F` (pciutils) decodes the PF's config space as
//! the device model dumps it, with SR-IOV enabled for 4 VFs. The `lspci` is the one the guest
//! harness fetches from Debian's registry (run through its own loader: no system package
//! needed); the host's is used only if those packages cannot be had.
use accelvirt_tests::bin;
use std::process::Command;

#[test]
fn lspci_decodes_pcie_msix_and_sriov_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let dump = dir.path().join("pf.txt");
    let o = Command::new(bin("accel-sim"))
        .arg("--dump-config")
        .arg(&dump)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let text = std::fs::read_to_string(&dump).unwrap();
    assert_eq!(
        text.lines()
            .filter(|l| l.contains(':') && !l.starts_with("00:00.0"))
            .count(),
        256,
        "all 4096 bytes"
    );
    let mut lspci = match vm_harness::assets::Assets::fetch(&vm_harness::assets::default_cache_dir())
    {
        Ok(a) => a.lspci(),
        Err(e) => {
            eprintln!("Debian's pciutils could not be fetched ({e}): using the host's lspci");
            Command::new("lspci")
        }
    };
    let lspci = lspci
        .arg("-F")
        .arg(&dump)
        .arg("-vvv")
        .output()
        .expect("no lspci: neither Debian's pciutils through the guest harness nor the host's");
    assert!(lspci.status.success());
    let out = String::from_utf8_lossy(&lspci.stdout);
    let expect = [
        "Processing accelerators: Device 1fac:a0c0 (rev 01)",
        "Region 0: Memory at fe000000 (64-bit, non-prefetchable)",
        "Capabilities: [40] Power Management version 3",
        "Capabilities: [50] MSI-X: Enable- Count=8 Masked-",
        "Vector table: BAR=0 offset=00030000",
        "PBA: BAR=0 offset=00038000",
        "Capabilities: [70] Express (v2) Endpoint, MSI 00",
        "MaxPayload 256 bytes",
        "FLReset+",
        "LnkCap:\tPort #0, Speed 16GT/s, Width x16",
        "Capabilities: [100 v1] Single Root I/O Virtualization (SR-IOV)",
        "IOVCtl:\tEnable+ Migration- Interrupt- MSE+ ARIHierarchy-",
        "Initial VFs: 64, Total VFs: 64, Number of VFs: 4, Function Dependency Link: 00",
        "VF offset: 1, stride: 1, Device ID: a0c1",
        "Supported Page Size: 00000553, System Page Size: 00000001",
        "Region 0: Memory at 00000000fd000000 (64-bit, non-prefetchable)",
        "Region 2: Memory at 0000000000000000 (64-bit, prefetchable)",
    ];
    for e in expect {
        assert!(out.contains(e), "lspci output lacks '{e}':\n{out}");
    }
    assert!(!out.contains("Interrupt: pin"), "no INTx pin");
}
