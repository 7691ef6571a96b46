//! A log's bytes as lines, wherever the log is kept (the local backend's file, an output store's object):
//! splitting chunks at `\n`, and finding where its last lines begin by reading chunks from its end. Pure.

/// Splits bytes into lines at `\n`, keeping the unfinished one.
#[derive(Default)]
pub struct Lines {
    partial: Vec<u8>,
}

impl Lines {
    pub fn push(&mut self, bytes: &[u8]) -> Vec<String> {
        let mut lines = Vec::new();
        let mut start = 0;
        for (i, byte) in bytes.iter().enumerate() {
            if *byte == b'\n' {
                if self.partial.is_empty() {
                    lines.push(String::from_utf8_lossy(&bytes[start..i]).into_owned());
                } else {
                    self.partial.extend_from_slice(&bytes[start..i]);
                    lines.push(String::from_utf8_lossy(&std::mem::take(&mut self.partial)).into_owned());
                }
                start = i + 1;
            }
        }
        self.partial.extend_from_slice(&bytes[start..]);
        lines
    }

    /// The unfinished last line, if there is one.
    pub fn rest(&mut self) -> Option<String> {
        Some(std::mem::take(&mut self.partial))
            .filter(|rest| !rest.is_empty())
            .map(|rest| String::from_utf8_lossy(&rest).into_owned())
    }
}

/// Where the last `wanted` complete lines begin, found from chunks read backwards from the end (the newline that
/// ends the last complete line counts as the first: `wanted` lines begin after the `wanted + 1`-th).
pub struct LastLines {
    wanted: usize,
    newlines: usize,
}

impl LastLines {
    pub fn new(wanted: usize) -> Self {
        Self { wanted, newlines: 0 }
    }

    /// Looks at `piece`, which starts at offset `start`, the chunk just before those already looked at; the
    /// offset the last lines begin at once it is found. If none is found by the start of the log, they begin at 0.
    pub fn look_back(&mut self, start: u64, piece: &[u8]) -> Option<u64> {
        for (i, byte) in piece.iter().enumerate().rev() {
            if *byte == b'\n' {
                self.newlines += 1;
                if self.newlines == self.wanted + 1 {
                    return Some(start + i as u64 + 1);
                }
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_split_across_chunks() {
        let mut lines = Lines::default();
        assert_eq!(lines.push(b"one\ntw"), ["one"]);
        assert_eq!(lines.push(b"o\n\nthr"), ["two", ""]);
        assert_eq!(lines.rest().as_deref(), Some("thr"));
        assert_eq!(lines.rest(), None);
    }

    #[test]
    fn the_last_lines_begin_after_the_newline_before_them() {
        let log = b"a\nb\nc\npartial";
        let mut last = LastLines::new(2);
        assert_eq!(last.look_back(7, &log[7..]), None, "no newline in the last chunk");
        assert_eq!(last.look_back(0, &log[..7]), Some(2), "b and c, then the unfinished line");
        assert_eq!(LastLines::new(0).look_back(0, b"a\nb\n"), Some(4));
        assert_eq!(LastLines::new(5).look_back(0, b"a\nb\n"), None);
    }
}
