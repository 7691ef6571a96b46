//! A log's bytes as lines, wherever the log is kept (the local backend's file, an output store's object, a pod's
//! log): splitting chunks at `\n` with every line cut at `MAX_LINE_BYTES`, and finding where its last lines begin
//! by reading chunks from its end. Pure. However long a line, no more than `MAX_LINE_BYTES` of it is held.

/// The longest line served (and written by the driver): the rest of a longer line is dropped, and the line
/// ends in `… [line cut at 65536 of its N bytes]`.
pub const MAX_LINE_BYTES: usize = 64 * 1024;

/// One line being gathered: its first `MAX_LINE_BYTES` bytes kept, the rest only counted.
#[derive(Debug, Default)]
pub struct CutLine {
    kept: Vec<u8>,
    length: u64,
}

impl CutLine {
    pub fn extend(&mut self, bytes: &[u8]) {
        let room = MAX_LINE_BYTES.saturating_sub(self.kept.len());
        self.kept.extend_from_slice(&bytes[..bytes.len().min(room)]);
        self.length += bytes.len() as u64;
    }

    pub fn is_empty(&self) -> bool {
        self.length == 0
    }

    /// What is kept of the line so far.
    pub fn kept(&self) -> &[u8] {
        &self.kept
    }

    /// The line gathered so far, cut and marked if it was longer than `MAX_LINE_BYTES`; the gatherer starts over.
    pub fn take(&mut self) -> Vec<u8> {
        let length = std::mem::take(&mut self.length);
        let kept = std::mem::take(&mut self.kept);
        if length == kept.len() as u64 { kept } else { cut(kept, length) }
    }
}

/// `kept`, the first bytes of a line of `length` bytes, ended at a character boundary and marked as cut.
fn cut(mut kept: Vec<u8>, length: u64) -> Vec<u8> {
    // A character the cut split in two is dropped whole; bytes that were never UTF-8 are left as they are.
    if let Err(e) = std::str::from_utf8(&kept)
        && e.error_len().is_none()
    {
        kept.truncate(e.valid_up_to());
    }
    kept.extend_from_slice(format!("… [line cut at {MAX_LINE_BYTES} of its {length} bytes]").as_bytes());
    kept
}

/// `line` as served: cut at `MAX_LINE_BYTES` like every other.
pub fn cut_line(line: &str) -> std::borrow::Cow<'_, str> {
    if line.len() <= MAX_LINE_BYTES {
        return line.into();
    }
    let mut gathered = CutLine::default();
    gathered.extend(line.as_bytes());
    String::from_utf8_lossy(&gathered.take()).into_owned().into()
}

/// Splits bytes into lines at `\n`, keeping the unfinished one, each cut at `MAX_LINE_BYTES`.
#[derive(Default)]
pub struct Lines {
    partial: CutLine,
}

impl Lines {
    pub fn push(&mut self, bytes: &[u8]) -> Vec<String> {
        let mut lines = Vec::new();
        let mut rest = bytes;
        while let Some(newline) = rest.iter().position(|&b| b == b'\n') {
            let line = &rest[..newline];
            if self.partial.is_empty() && line.len() <= MAX_LINE_BYTES {
                lines.push(String::from_utf8_lossy(line).into_owned());
            } else {
                self.partial.extend(line);
                lines.push(String::from_utf8_lossy(&self.partial.take()).into_owned());
            }
            rest = &rest[newline + 1..];
        }
        self.partial.extend(rest);
        lines
    }

    /// The unfinished last line, if there is one.
    pub fn rest(&mut self) -> Option<String> {
        Some(self.partial.take())
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
    fn long_lines_are_cut_and_marked_without_holding_them() {
        let mut lines = Lines::default();
        let chunk = vec![b'x'; 1024 * 1024];
        for _ in 0..100 {
            assert!(lines.push(&chunk).is_empty());
            assert!(lines.partial.kept().len() <= MAX_LINE_BYTES, "never more than the cut is held");
        }
        let done = lines.push(b"x\nshort\n");
        let cut = format!("{}… [line cut at 65536 of its {} bytes]", "x".repeat(MAX_LINE_BYTES), 100 * 1024 * 1024 + 1);
        assert_eq!(done, [cut.as_str(), "short"]);
        // A long line inside one chunk, and an unfinished one at the end, are cut the same way.
        let mut lines = Lines::default();
        let long = vec![b'y'; MAX_LINE_BYTES + 1];
        let got = lines.push(&[&long[..], b"\n", &long[..]].concat());
        assert_eq!(got.len(), 1);
        assert!(got[0].ends_with("[line cut at 65536 of its 65537 bytes]"), "{}", &got[0][MAX_LINE_BYTES..]);
        assert!(lines.rest().expect("rest").ends_with("of its 65537 bytes]"));
        // A line of exactly the limit is whole.
        let exact = vec![b'z'; MAX_LINE_BYTES];
        assert_eq!(Lines::default().push(&[&exact[..], b"\n"].concat())[0].len(), MAX_LINE_BYTES);
    }

    #[test]
    fn a_cut_never_splits_a_character() {
        let line = format!("{}é and more", "a".repeat(MAX_LINE_BYTES - 1));
        let cut = cut_line(&line);
        assert!(cut.starts_with(&"a".repeat(MAX_LINE_BYTES - 1)));
        assert!(!cut.contains('\u{fffd}'), "no replacement character where é was split");
        assert!(cut.ends_with(&format!("… [line cut at 65536 of its {} bytes]", line.len())));
        assert_eq!(cut_line("short"), "short");
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
