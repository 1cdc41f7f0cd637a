//! docs/abi.md's register tables are checked against the declarations in `shared_abi::regs`:
//! every register is documented with its offset and access rule, and nothing else is.
use shared_abi::regs::{pf, queue, vf, vf_bank, AccessDoc, RegSpec};
use std::collections::BTreeSet;

fn docs() -> String {
    let p = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/abi.md");
    std::fs::read_to_string(p).expect("docs/abi.md")
}

/// Rows of the first table under the heading that starts with `heading`:
/// (name, offset, third column), with `X_LO/HI` rows at `a/b` offsets split in two, and rows
/// that name a window rather than a register left out.
fn table(doc: &str, heading: &str) -> BTreeSet<(String, u32, String)> {
    let at = doc
        .lines()
        .position(|l| l.starts_with(heading))
        .unwrap_or_else(|| panic!("no heading {heading}"));
    let mut rows = BTreeSet::new();
    let mut started = false;
    for line in doc.lines().skip(at + 1) {
        if !line.starts_with('|') {
            if started {
                break;
            }
            continue;
        }
        started = true;
        let cols: Vec<&str> = line.trim_matches('|').split('|').map(str::trim).collect();
        let Some(offs) = cols.first().filter(|c| c.starts_with("0x")) else {
            continue; // header and separator
        };
        let token = cols[1]
            .split(|c: char| c.is_whitespace() || c == ':' || c == '(')
            .next()
            .unwrap_or("");
        let (base, halves) = match token.strip_suffix("_LO/HI") {
            Some(b) => (b.to_string(), vec!["_LO", "_HI"]),
            None => (token.to_string(), vec![""]),
        };
        let ident = !base.is_empty()
            && base.starts_with(|c: char| c.is_ascii_uppercase())
            && base
                .chars()
                .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_');
        if !ident {
            continue; // a window (queue blocks, MSI-X table), not a register
        }
        let offs: Vec<u32> = offs
            .split('/')
            .map(|o| u32::from_str_radix(o.trim_start_matches("0x"), 16).expect("hex offset"))
            .collect();
        assert_eq!(offs.len(), halves.len(), "{line}");
        for (o, h) in offs.iter().zip(halves) {
            rows.insert((format!("{base}{h}"), *o, cols[2].to_string()));
        }
    }
    rows
}

fn declared<A: AccessDoc>(map: &[RegSpec<A>]) -> BTreeSet<(String, u32, String)> {
    map.iter()
        .map(|s| (s.name.to_string(), s.reg.0, s.access.doc().to_string()))
        .collect()
}

fn check<A: AccessDoc>(heading: &str, map: &[RegSpec<A>]) {
    let d = table(&docs(), heading);
    let c = declared(map);
    let missing: Vec<_> = c.difference(&d).collect();
    let extra: Vec<_> = d.difference(&c).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "{heading}: declared but not documented so: {missing:?}; documented but not declared so: {extra:?}"
    );
}

#[test]
fn pf_bar0_table_matches_the_declarations() {
    check("## 2. PF BAR0", pf::MAP);
}

#[test]
fn vf_bank_table_matches_the_declarations() {
    check("## 3. VF bank", vf_bank::MAP);
}

#[test]
fn queue_block_table_matches_the_declarations() {
    check("## 4. Queue block", queue::MAP);
}

#[test]
fn vf_bar0_table_matches_the_declarations() {
    check("## VF BAR0", vf::MAP);
}

/// docs/abi.md's opcode table is the declarations in `shared_abi::mailbox`: value, name,
/// request and response, row by row.
#[test]
fn opcode_table_matches_the_declarations() {
    use shared_abi::mailbox::Opcode;
    let d = docs();
    let at = d.find("### Opcodes").expect("opcode table");
    let documented: BTreeSet<(u16, String, String, String)> = d[at..]
        .lines()
        .skip_while(|l| !l.starts_with('|'))
        .take_while(|l| l.starts_with('|'))
        .filter_map(|l| {
            let c: Vec<&str> = l.trim_matches('|').split('|').map(str::trim).collect();
            let v = u16::from_str_radix(c[0].strip_prefix("0x")?, 16).ok()?;
            Some((v, c[1].into(), c[2].into(), c[3].into()))
        })
        .collect();
    let declared: BTreeSet<(u16, String, String, String)> = Opcode::ALL
        .iter()
        .map(|o| {
            let (req, resp) = o.payloads();
            (o.wire(), o.name().into(), req.into(), resp.into())
        })
        .collect();
    assert_eq!(documented, declared);
}

/// §8's submission entry table names every field of `jobs::Sqe` at its offset.
#[test]
fn submission_entry_table_matches_the_struct() {
    use shared_abi::jobs::Sqe;
    use std::mem::offset_of;
    let d = docs();
    let at = d.find("Submission entry (64 bytes):").expect("§8 table");
    let rows: Vec<(u32, String)> = d[at..]
        .lines()
        .skip(1)
        .skip_while(|l| !l.starts_with('|'))
        .take_while(|l| l.starts_with('|'))
        .filter_map(|l| {
            let c: Vec<&str> = l.trim_matches('|').split('|').map(str::trim).collect();
            let off = u32::from_str_radix(c.first()?.strip_prefix("0x")?, 16).ok()?;
            Some((off, c.get(1)?.split_whitespace().next()?.to_string()))
        })
        .collect();
    let want = vec![
        (offset_of!(Sqe, head) as u32, "head".to_string()),
        (offset_of!(Sqe, tag) as u32, "tag".into()),
        (offset_of!(Sqe, src) as u32, "src".into()),
        (offset_of!(Sqe, dst) as u32, "dst".into()),
        (offset_of!(Sqe, len) as u32, "len".into()),
        (offset_of!(Sqe, value) as u32, "value".into()),
        (offset_of!(Sqe, reserved) as u32, "reserved".into()),
    ];
    assert_eq!(rows, want);
    assert!(d.contains(&format!(
        "Completion entry ({} bytes)",
        shared_abi::jobs::CQE_SIZE
    )));
}
