//! The seed CSV of published GVLKs, shared by the catalog tests.

/// `(section, edition, gvlk)` rows of the seed CSV.
pub(crate) fn parse_seed(text: &str) -> Vec<(String, String, String)> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|line| {
            let mut fields = vec![];
            let mut cur = String::new();
            let mut quoted = false;
            for ch in line.chars() {
                match ch {
                    '"' => quoted = !quoted,
                    ',' if !quoted => fields.push(std::mem::take(&mut cur)),
                    _ => cur.push(ch),
                }
            }
            fields.push(cur);
            assert_eq!(fields.len(), 3, "seed line {line}");
            (
                fields[0].clone(),
                fields[1].clone(),
                fields[2].trim().to_owned(),
            )
        })
        .collect()
}
