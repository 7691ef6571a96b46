//! `artifacts.tar.gz`: every file of an output set in one gzipped tar, made as it is sent. Pure parts: the
//! tar headers and padding; the stream itself only moves bytes.

use bytes::Bytes;

const BLOCK: usize = 512;

/// The header block(s) of a regular file `path` of `size` bytes: a GNU long-name entry first when the
/// path does not fit the header's 100 bytes.
pub fn entry_header(path: &str, size: u64, mtime: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(3 * BLOCK);
    if path.len() > 99 {
        let mut long = tar::Header::new_gnu();
        long.set_entry_type(tar::EntryType::GNULongName);
        long.set_size(path.len() as u64 + 1);
        long.set_mode(0o644);
        copy_name(&mut long, "././@LongLink");
        long.set_cksum();
        out.extend_from_slice(long.as_bytes());
        out.extend_from_slice(path.as_bytes());
        out.push(0);
        out.resize(out.len() + padding(path.len() as u64 + 1), 0);
    }
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(tar::EntryType::Regular);
    header.set_size(size);
    header.set_mode(0o644);
    header.set_mtime(mtime);
    copy_name(&mut header, &path[..floor_char_boundary(path, 99)]);
    header.set_cksum();
    out.extend_from_slice(header.as_bytes());
    out
}

fn copy_name(header: &mut tar::Header, name: &str) {
    let field = &mut header.as_old_mut().name;
    field.fill(0);
    field[..name.len()].copy_from_slice(name.as_bytes());
}

fn floor_char_boundary(text: &str, mut at: usize) -> usize {
    at = at.min(text.len());
    while !text.is_char_boundary(at) {
        at -= 1;
    }
    at
}

/// Zero bytes after a file of `size` bytes, up to the next block.
pub fn padding(size: u64) -> usize {
    let rest = usize::try_from(size % BLOCK as u64).unwrap_or(0);
    if rest == 0 { 0 } else { BLOCK - rest }
}

/// Two zero blocks end an archive.
pub fn end_of_archive() -> Bytes {
    Bytes::from(vec![0u8; 2 * BLOCK])
}

/// Compresses as bytes come: each `push` returns what the encoder has ready.
pub struct Gzip(flate2::write::GzEncoder<Vec<u8>>);

impl Default for Gzip {
    fn default() -> Self {
        Self(flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast()))
    }
}

impl Gzip {
    pub fn push(&mut self, bytes: &[u8]) -> std::io::Result<Bytes> {
        use std::io::Write;
        self.0.write_all(bytes)?;
        Ok(Bytes::from(std::mem::take(self.0.get_mut())))
    }

    pub fn finish(self) -> std::io::Result<Bytes> {
        Ok(Bytes::from(self.0.finish()?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_archive_made_of_these_parts_reads_back_with_the_tar_crate() {
        let long = format!("samples/{}.jsonl", "t".repeat(120));
        let files = [("results.json", b"{}".to_vec()), (long.as_str(), vec![b'x'; 1000])];
        let mut gzip = Gzip::default();
        let mut compressed = Vec::new();
        for (path, content) in &files {
            compressed.extend_from_slice(&gzip.push(&entry_header(path, content.len() as u64, 1)).expect("push"));
            compressed.extend_from_slice(&gzip.push(content).expect("push"));
            compressed.extend_from_slice(&gzip.push(&vec![0; padding(content.len() as u64)]).expect("push"));
        }
        compressed.extend_from_slice(&gzip.push(&end_of_archive()).expect("push"));
        compressed.extend_from_slice(&gzip.finish().expect("finish"));
        let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(&compressed[..]));
        let mut seen = Vec::new();
        for entry in archive.entries().expect("entries") {
            let mut entry = entry.expect("entry");
            let mut content = Vec::new();
            std::io::Read::read_to_end(&mut entry, &mut content).expect("read");
            seen.push((entry.path().expect("path").to_string_lossy().into_owned(), content));
        }
        let expected: Vec<(String, Vec<u8>)> = files.iter().map(|(p, c)| (p.to_string(), c.clone())).collect();
        assert_eq!(seen, expected);
    }
}
