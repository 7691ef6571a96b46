//! `--auth token-file`: a file of token hashes, never tokens. One caller per line:
//!
//! ```text
//! # sha256 of the token (printf %s "$TOKEN" | sha256sum)   user    groups (comma-separated, optional)
//! 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08 alice team-a,ci
//! ```

use std::collections::HashMap;

use super::Caller;

#[derive(Debug, Default)]
pub struct TokenFile {
    callers: HashMap<[u8; 32], Caller>,
}

impl TokenFile {
    /// Parses the file's text; an error names the line.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut callers = HashMap::new();
        for (index, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let at = || format!("line {}", index + 1);
            let mut fields = line.split_whitespace();
            let hash = fields.next().unwrap_or_default();
            let hash = parse_hash(hash.strip_prefix("sha256:").unwrap_or(hash))
                .ok_or_else(|| format!("{}: the first field must be a token's SHA-256 in hex (64 digits)", at()))?;
            let user = fields.next().ok_or_else(|| format!("{}: a user name must follow the hash", at()))?;
            let groups = fields.next().map(|g| g.split(',').filter(|g| !g.is_empty()).map(str::to_string).collect());
            if fields.next().is_some() {
                return Err(format!("{}: expected `hash user [group,group]`", at()));
            }
            let caller = Caller { user: user.to_string(), groups: groups.unwrap_or_default(), ..Caller::default() };
            if callers.insert(hash, caller).is_some() {
                return Err(format!("{}: this hash is listed twice", at()));
            }
        }
        Ok(Self { callers })
    }

    pub fn caller(&self, hash: &[u8; 32]) -> Option<&Caller> {
        self.callers.get(hash)
    }

    pub fn len(&self) -> usize {
        self.callers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.callers.is_empty()
    }
}

fn parse_hash(hex: &str) -> Option<[u8; 32]> {
    if hex.len() != 64 || !hex.is_ascii() {
        return None;
    }
    let mut hash = [0u8; 32];
    for (i, byte) in hash.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(hash)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::token_hash;

    #[test]
    fn lists_callers_by_the_hash_of_their_token() {
        let file = TokenFile::parse(
            "# comment\n\n9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08 alice team-a,ci\n\
             sha256:60303ae22b998861bce3b28f33eec1be758a213c86c93c076dbe9f558c11c752 bob\n",
        )
        .expect("parses");
        assert_eq!(file.len(), 2);
        let alice = file.caller(&token_hash("test")).expect("alice");
        assert_eq!((alice.user.as_str(), alice.groups.clone()), ("alice", vec!["team-a".to_string(), "ci".into()]));
        assert_eq!(file.caller(&token_hash("test2")).map(|c| c.user.as_str()), Some("bob"));
        assert!(file.caller(&token_hash("nope")).is_none());
    }

    #[test]
    fn a_bad_line_is_named() {
        assert_eq!(TokenFile::parse("abc alice").unwrap_err().split(':').next(), Some("line 1"));
        let hash = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";
        assert!(TokenFile::parse(&format!("\n{hash}")).unwrap_err().starts_with("line 2: a user name"));
        assert!(TokenFile::parse(&format!("{hash} a\n{hash} b")).unwrap_err().contains("twice"));
        assert!(TokenFile::parse(&format!("{hash} a g extra")).is_err());
    }
}
