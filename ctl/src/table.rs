//! Plain-text tables as kubectl prints them: upper-case headers, columns padded to the
//! widest cell and separated by three spaces, no trailing blanks.

/// Spaces between columns.
const GAP: usize = 3;

/// A table built up row by row, then rendered at once.
#[derive(Debug, Clone, Default)]
pub struct Table {
    headers: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    /// A table with these column headers.
    pub fn new<S: Into<String>>(headers: impl IntoIterator<Item = S>) -> Self {
        Table {
            headers: headers.into_iter().map(Into::into).collect(),
            rows: Vec::new(),
        }
    }

    /// Adds a row (missing cells are blank, extra cells are kept).
    pub fn push(&mut self, row: Vec<String>) {
        self.rows.push(row);
    }

    /// True when no rows were added.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// Column widths over the header and every row.
    fn widths(&self) -> Vec<usize> {
        let mut widths: Vec<usize> = self.headers.iter().map(|h| h.chars().count()).collect();
        for row in &self.rows {
            grow(&mut widths, row);
        }
        widths
    }

    /// The whole table, header first, one line per row, each ending in `\n`.
    pub fn render(&self) -> String {
        let widths = self.widths();
        let mut out = String::new();
        if !self.headers.is_empty() {
            out.push_str(&line(&widths, &self.headers));
        }
        for row in &self.rows {
            out.push_str(&line(&widths, row));
        }
        out
    }

    /// The rows without the header (`--no-headers`), padded to the widest cell of
    /// the rows alone.
    pub fn render_rows(&self) -> String {
        let mut widths = Vec::new();
        for row in &self.rows {
            grow(&mut widths, row);
        }
        self.rows.iter().map(|row| line(&widths, row)).collect()
    }

    /// [`Table::render`], or [`Table::render_rows`] when `headers` is false.
    pub fn render_with(&self, headers: bool) -> String {
        if headers {
            self.render()
        } else {
            self.render_rows()
        }
    }

    /// Turns the table into one that prints later rows aligned with these.
    pub fn into_stream(self) -> StreamingTable {
        StreamingTable {
            widths: self.widths(),
        }
    }

    /// The same table indented by `indent` spaces (for `describe`).
    pub fn render_indented(&self, indent: usize) -> String {
        let pad = " ".repeat(indent);
        self.render()
            .lines()
            .map(|l| format!("{pad}{l}\n"))
            .collect()
    }
}

/// Rows printed one at a time (e.g. by `get --watch`), aligned with the rows printed
/// before; a wider cell widens its column from then on.
#[derive(Debug, Clone, Default)]
pub struct StreamingTable {
    widths: Vec<usize>,
}

impl StreamingTable {
    /// One row as a line ending in `\n`.
    pub fn line(&mut self, row: &[String]) -> String {
        grow(&mut self.widths, row);
        line(&self.widths, row)
    }
}

fn grow(widths: &mut Vec<usize>, row: &[String]) {
    if widths.len() < row.len() {
        widths.resize(row.len(), 0);
    }
    for (width, cell) in widths.iter_mut().zip(row) {
        *width = (*width).max(cell.chars().count());
    }
}

fn line(widths: &[usize], row: &[String]) -> String {
    let mut out = String::new();
    for (i, cell) in row.iter().enumerate() {
        out.push_str(cell);
        if i + 1 < row.len() {
            let width = widths.get(i).copied().unwrap_or(0);
            let pad = width.saturating_sub(cell.chars().count()) + GAP;
            out.extend(std::iter::repeat_n(' ', pad));
        }
    }
    let trimmed = out.trim_end().len();
    out.truncate(trimmed);
    out.push('\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(cells: &[&str]) -> Vec<String> {
        cells.iter().map(|c| (*c).to_string()).collect()
    }

    #[test]
    fn pads_columns_to_the_widest_cell() {
        let mut t = Table::new(["NAME", "READY", "AGE"]);
        t.push(row(&["web", "3/3", "5m"]));
        t.push(row(&["database-primary", "0/1", "12s"]));
        assert_eq!(
            t.render(),
            "NAME               READY   AGE\n\
             web                3/3     5m\n\
             database-primary   0/1     12s\n"
        );
    }

    #[test]
    fn blank_last_cells_leave_no_trailing_spaces() {
        let mut t = Table::new(["NAME", "NODE"]);
        t.push(row(&["a", ""]));
        assert_eq!(t.render(), "NAME   NODE\na\n");
    }

    #[test]
    fn streamed_rows_line_up_with_the_first_batch() {
        let mut t = Table::new(["NAME", "PHASE", "AGE"]);
        t.push(row(&["web-1", "Running", "1m"]));
        let head = t.render();
        let mut stream = t.into_stream();
        let next = stream.line(&row(&["web-2", "Pending", "0s"]));
        assert_eq!(
            head.lines().nth(1).map(|l| l.find("1m")),
            Some(next.find("0s"))
        );
        let wide = stream.line(&row(&["a-much-longer-name", "Pending", "0s"]));
        assert_eq!(wide, "a-much-longer-name   Pending   0s\n");
    }

    #[test]
    fn renders_rows_without_the_header() {
        let mut t = Table::new(["NAME", "READY"]);
        t.push(row(&["web", "3/3"]));
        assert_eq!(t.render_rows(), "web   3/3\n");
        assert_eq!(t.render_with(true), t.render());
    }

    #[test]
    fn indents_for_describe() {
        let mut t = Table::new(["TYPE", "STATUS"]);
        t.push(row(&["Ready", "True"]));
        assert_eq!(t.render_indented(2), "  TYPE    STATUS\n  Ready   True\n");
    }
}
