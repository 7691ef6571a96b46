//! lm-eval's output as lines: split at `\n` and at tqdm's `\r` redraws, each cut at `MAX_LINE_BYTES` (so a line
//! without an end is never held whole), and sent to every destination.

use tokio::io::AsyncWriteExt;

use super::record::RecordWriter;
use crate::log_lines::CutLine;

/// Splits one stream's bytes into lines at `\n` and `\r`, dropping empty lines and cutting long ones.
#[derive(Debug, Default)]
pub struct LineSplitter {
    partial: CutLine,
}

impl LineSplitter {
    /// The lines `bytes` completes.
    pub fn push(&mut self, bytes: &[u8]) -> Vec<Vec<u8>> {
        let mut lines = Vec::new();
        let mut rest = bytes;
        while let Some(end) = rest.iter().position(|&b| b == b'\n' || b == b'\r') {
            self.partial.extend(&rest[..end]);
            if !self.partial.is_empty() {
                lines.push(self.partial.take());
            }
            rest = &rest[end + 1..];
        }
        self.partial.extend(rest);
        lines
    }

    /// The line being written (a progress bar redraws it without ending it), as far as it is kept.
    pub fn pending(&self) -> &[u8] {
        self.partial.kept()
    }

    /// What is left once the stream has ended.
    pub fn finish(&mut self) -> Option<Vec<u8>> {
        Some(self.partial.take()).filter(|line| !line.is_empty())
    }
}

/// Where each complete output line goes: the log file, with `--echo` standard output, and in a pod the run
/// record's log tail.
pub struct LineSink {
    pub log: Option<tokio::fs::File>,
    pub echo: Option<tokio::io::Stdout>,
    pub recorder: Option<RecordWriter>,
}

impl LineSink {
    pub async fn write_line(&mut self, line: &[u8]) -> std::io::Result<()> {
        let mut with_newline = Vec::with_capacity(line.len() + 1);
        with_newline.extend_from_slice(line);
        with_newline.push(b'\n');
        if let Some(log) = self.log.as_mut() {
            log.write_all(&with_newline).await?;
        }
        if let Some(out) = self.echo.as_mut() {
            out.write_all(&with_newline).await?;
        }
        if let Some(recorder) = self.recorder.as_mut() {
            recorder.line(line);
        }
        Ok(())
    }

    pub async fn flush_echo(&mut self) -> std::io::Result<()> {
        match self.echo.as_mut() {
            Some(out) => out.flush().await,
            None => Ok(()),
        }
    }

    /// Makes the log file durable: a restarted service reads it after the driver is gone.
    pub async fn sync_log(&mut self) -> std::io::Result<()> {
        if let Some(log) = self.log.as_mut() {
            log.flush().await?;
            log.sync_data().await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_at_line_feeds_and_carriage_returns_across_chunks() {
        let mut lines = LineSplitter::default();
        assert_eq!(lines.push(b"loading\r\n 10%|#"), [b"loading".to_vec()]);
        assert_eq!(lines.pending(), b" 10%|#");
        assert_eq!(lines.push(b"  | 1/10\r 20%|##"), [b" 10%|#  | 1/10".to_vec()]);
        assert!(lines.push(b"\n\n\r").len() == 1, "empty lines are dropped");
        assert_eq!(lines.push(b"tail"), Vec::<Vec<u8>>::new());
        assert_eq!(lines.finish(), Some(b"tail".to_vec()));
        assert_eq!(lines.finish(), None);
    }

    #[test]
    fn a_line_without_an_end_is_held_only_up_to_the_cut() {
        let mut lines = LineSplitter::default();
        for _ in 0..64 {
            assert!(lines.push(&[b'x'; 1024 * 1024]).is_empty());
            assert!(lines.pending().len() <= crate::log_lines::MAX_LINE_BYTES);
        }
        let line = lines.finish().expect("the cut line");
        assert!(line.ends_with(b"[line cut at 65536 of its 67108864 bytes]"));
        assert!(lines.push(b"\rnext\n") == [b"next".to_vec()], "a cut line's end starts the next one");
    }
}
