//! Plain-text tables: columns padded to their widest cell, numbers right-aligned,
//! two spaces between columns, no trailing spaces.

/// How a column's cells line up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Align {
    Left,
    Right,
}

/// A table with a header row.
#[derive(Clone, Debug)]
pub struct Table {
    headers: Vec<String>,
    align: Vec<Align>,
    rows: Vec<Vec<String>>,
}

impl Table {
    /// A table with these columns.
    pub fn new(columns: &[(&str, Align)]) -> Self {
        Self {
            headers: columns.iter().map(|(h, _)| h.to_string()).collect(),
            align: columns.iter().map(|(_, a)| *a).collect(),
            rows: Vec::new(),
        }
    }

    /// Appends a row (missing cells are blank, extra cells ignored).
    pub fn row(&mut self, cells: Vec<String>) -> &mut Self {
        self.rows.push(cells);
        self
    }

    /// The table as lines ending in '\n'.
    pub fn render(&self) -> String {
        let n = self.headers.len();
        let cell = |row: &[String], i: usize| row.get(i).cloned().unwrap_or_default();
        let widths: Vec<usize> = (0..n)
            .map(|i| {
                std::iter::once(&self.headers)
                    .chain(&self.rows)
                    .map(|r| cell(r, i).chars().count())
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        let mut out = String::new();
        for row in std::iter::once(&self.headers).chain(&self.rows) {
            let line: Vec<String> = (0..n)
                .map(|i| pad(&cell(row, i), widths[i], self.align[i]))
                .collect();
            out.push_str(line.join("  ").trim_end());
            out.push('\n');
        }
        out
    }
}

fn pad(s: &str, width: usize, align: Align) -> String {
    let fill = " ".repeat(width.saturating_sub(s.chars().count()));
    match align {
        Align::Left => format!("{s}{fill}"),
        Align::Right => format!("{fill}{s}"),
    }
}

/// `key  value` lines with the values aligned.
pub fn key_values(pairs: &[(&str, String)]) -> String {
    let width = pairs
        .iter()
        .map(|(k, _)| k.chars().count())
        .max()
        .unwrap_or(0);
    pairs
        .iter()
        .map(|(k, v)| {
            format!(
                "{}\n",
                format!("{}  {v}", pad(k, width, Align::Left)).trim_end()
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_are_padded_and_numbers_right_aligned() {
        let mut t = Table::new(&[("SOURCE", Align::Left), ("STORED", Align::Right)]);
        t.row(vec!["kafka".into(), "7".into()])
            .row(vec!["grpc".into(), "1234567".into()]);
        assert_eq!(
            t.render(),
            "SOURCE   STORED\n\
             kafka         7\n\
             grpc    1234567\n"
        );
    }

    #[test]
    fn short_rows_and_wide_characters() {
        let mut t = Table::new(&[("A", Align::Left), ("B", Align::Left)]);
        t.row(vec!["é".into()]);
        assert_eq!(t.render(), "A  B\né\n");
    }

    #[test]
    fn key_values_align() {
        let text = key_values(&[("uptime", "5s".into()), ("queue depth", "0".into())]);
        assert_eq!(text, "uptime       5s\nqueue depth  0\n");
    }
}
