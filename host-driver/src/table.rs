//! Plain-text tables for the command-line tools: columns as wide as their widest cell, two
//! spaces between them, built whole so a caller prints it in one write.

/// `head` and `rows` as aligned columns, a line each, every line ending in a newline.
pub fn columns(head: &[&str], rows: &[Vec<String>]) -> String {
    let mut w: Vec<usize> = head.iter().map(|h| h.len()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            if let Some(x) = w.get_mut(i) {
                *x = (*x).max(c.len());
            }
        }
    }
    let mut out = String::new();
    let head: Vec<String> = head.iter().map(|s| s.to_string()).collect();
    for cells in std::iter::once(&head).chain(rows) {
        let s: Vec<String> = cells
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c:<w$}", w = w.get(i).copied().unwrap_or(0)))
            .collect();
        out.push_str(s.join("  ").trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn columns_line_up() {
        let t = super::columns(&["A", "LONGER"], &[vec!["wide cell".into(), "x".into()]]);
        assert_eq!(t, "A          LONGER\nwide cell  x\n");
    }
}
