//! Password files of basic auth: an htpasswd file (the `auth` key of a Secret) or an auth
//! map (a Secret whose keys are users and whose values are their hashes), parsed into users
//! and password hashes, and the check of a password against a hash.
//!
//! The schemes are the ones `htpasswd` writes: bcrypt (`$2y$`, `$2a$`, `$2b$`; `-B`), apr1
//! (`$apr1$`, its MD5 default), SHA-256 and SHA-512 crypt (`$5$`, `$6$`; `-2`, `-5`) and
//! `{SHA}` (`-s`). A line in another scheme (DES crypt, plain text) is refused with the
//! reason: that user cannot log in, the others can.
//!
//! Must not: do I/O, or put a password or a hash in a message (the reasons name the line
//! and the user only).

use md5::{Digest, Md5};
use std::collections::BTreeMap;
use subtle::ConstantTimeEq;

/// The highest bcrypt cost read (htpasswd's own limit for `-C`).
pub const MAX_BCRYPT_COST: u32 = 17;

/// The most SHA-crypt rounds read (htpasswd writes 5,000; a million take about a second).
pub const MAX_SHA_CRYPT_ROUNDS: u64 = 1_000_000;

/// The users of one password file and their hashes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Htpasswd {
    users: BTreeMap<String, PasswordHash>,
}

/// One user's password hash, checked by its scheme.
#[derive(Clone, PartialEq, Eq)]
pub enum PasswordHash {
    /// `$2y$cost$salt+hash` (also `$2a$`, `$2b$`).
    Bcrypt(Box<str>),
    /// `$apr1$salt$hash`: 1,000 rounds of MD5 (Apache's variant of MD5-crypt).
    Apr1 { salt: Box<str>, hash: Box<str> },
    /// `$5$[rounds=N$]salt$hash`.
    Sha256Crypt(Box<str>),
    /// `$6$[rounds=N$]salt$hash`.
    Sha512Crypt(Box<str>),
    /// `{SHA}` + base64 of the password's SHA-1 (unsalted).
    Sha1([u8; 20]),
}

/// Never shows the hash (the route snapshot is printed on `/debug/routes`).
impl std::fmt::Debug for PasswordHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.scheme())
    }
}

impl PasswordHash {
    /// A hash as htpasswd writes it, or why weir cannot check it.
    pub fn parse(text: &str) -> Result<PasswordHash, String> {
        let text = text.trim();
        if let Some(rest) = text.strip_prefix("{SHA}") {
            use base64::Engine as _;
            let digest = base64::engine::general_purpose::STANDARD
                .decode(rest)
                .ok()
                .and_then(|d| <[u8; 20]>::try_from(d).ok())
                .ok_or("{SHA} hash is not the base64 of 20 bytes")?;
            return Ok(PasswordHash::Sha1(digest));
        }
        if let Some(rest) = text.strip_prefix("$apr1$") {
            let (salt, hash) = rest
                .split_once('$')
                .filter(|(salt, hash)| {
                    !salt.is_empty() && salt.len() <= 8 && hash.len() == 22 && is_crypt64(hash)
                })
                .ok_or("apr1 hash is not $apr1$salt$hash")?;
            return Ok(PasswordHash::Apr1 {
                salt: salt.into(),
                hash: hash.into(),
            });
        }
        for prefix in ["$2y$", "$2a$", "$2b$"] {
            if text.starts_with(prefix) {
                // Cost and length as the bcrypt format has them: `$2y$NN$` + 53 characters;
                // the cost at most htpasswd's 17 (each step doubles a check's time: a cost
                // of 31 would hold a thread for hours per login).
                let cost_ok = text
                    .get(4..6)
                    .and_then(|c| c.parse::<u32>().ok())
                    .is_some_and(|c| (4..=MAX_BCRYPT_COST).contains(&c));
                if !cost_ok || text.len() != 60 || text.as_bytes()[6] != b'$' {
                    return Err(format!(
                    "bcrypt hash is not $2y$, a cost from 04 to {MAX_BCRYPT_COST}, $ and 53 characters"
                ));
                }
                return Ok(PasswordHash::Bcrypt(text.into()));
            }
        }
        if text.starts_with("$5$") || text.starts_with("$6$") {
            // `$5$[rounds=N$]salt$hash`: checked whole by sha-crypt; its shape here.
            let parts: Vec<&str> = text[3..].split('$').collect();
            let shape_ok = match parts.as_slice() {
                [rounds, salt, hash] => {
                    rounds
                        .strip_prefix("rounds=")
                        .and_then(|n| n.parse::<u64>().ok())
                        .is_some_and(|n| n <= MAX_SHA_CRYPT_ROUNDS)
                        && !salt.is_empty()
                        && is_crypt64(hash)
                }
                [salt, hash] => !salt.is_empty() && is_crypt64(hash),
                _ => false,
            };
            if !shape_ok {
                return Err(format!(
                    "SHA-crypt hash is not $5$ or $6$, [rounds=N$ with N at most {MAX_SHA_CRYPT_ROUNDS}], salt and hash"
                ));
            }
            return Ok(if text.starts_with("$5$") {
                PasswordHash::Sha256Crypt(text.into())
            } else {
                PasswordHash::Sha512Crypt(text.into())
            });
        }
        if text.starts_with("$1$") {
            return Err("MD5-crypt ($1$) is not supported; use htpasswd -B (bcrypt)".into());
        }
        if text.len() == 13 && is_crypt64(text) {
            return Err("DES crypt is not supported (it checks 8 characters at most); use htpasswd -B (bcrypt)".into());
        }
        Err("not a hash htpasswd writes (bcrypt, apr1, SHA-256/512 crypt or {SHA}); plain-text passwords are refused".into())
    }

    /// The scheme's name, for messages and metrics.
    pub fn scheme(&self) -> &'static str {
        match self {
            PasswordHash::Bcrypt(_) => "bcrypt",
            PasswordHash::Apr1 { .. } => "apr1",
            PasswordHash::Sha256Crypt(_) => "sha256-crypt",
            PasswordHash::Sha512Crypt(_) => "sha512-crypt",
            PasswordHash::Sha1(_) => "sha1",
        }
    }

    /// Whether checking a password costs enough that a cache of verified passwords is worth
    /// it (bcrypt and the SHA crypts, by design; apr1 takes 1,000 rounds of MD5).
    pub fn is_slow(&self) -> bool {
        !matches!(self, PasswordHash::Sha1(_))
    }

    /// Whether `password` is the one this hash was made from (in time independent of where
    /// the two differ).
    pub fn verify(&self, password: &[u8]) -> bool {
        match self {
            PasswordHash::Bcrypt(hash) => bcrypt::verify(password, hash).unwrap_or(false),
            PasswordHash::Apr1 { salt, hash } => {
                let made = apr1(password, salt.as_bytes());
                made.as_bytes().ct_eq(hash.as_bytes()).into()
            }
            PasswordHash::Sha256Crypt(hash) => std::str::from_utf8(password)
                .is_ok_and(|p| sha_crypt::sha256_check(p, hash).is_ok()),
            PasswordHash::Sha512Crypt(hash) => std::str::from_utf8(password)
                .is_ok_and(|p| sha_crypt::sha512_check(p, hash).is_ok()),
            PasswordHash::Sha1(digest) => {
                let made = sha1::Sha1::digest(password);
                made.as_slice().ct_eq(digest).into()
            }
        }
    }
}

impl Htpasswd {
    /// An htpasswd file: `user:hash` lines; blank lines and `#` comments are skipped. Returns
    /// the users and, per line weir cannot use, why (no user at all is the caller's error).
    pub fn parse_file(text: &str) -> (Htpasswd, Vec<String>) {
        let mut file = Htpasswd::default();
        let mut problems = Vec::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let Some((user, hash)) = line.split_once(':') else {
                problems.push(format!("line {}: not user:hash", n + 1));
                continue;
            };
            // htpasswd may append `:comment` to a hash (SHA-crypt and bcrypt have no `:`).
            let hash = hash.split(':').next().unwrap_or(hash);
            file.add(user, hash, &format!("line {}", n + 1), &mut problems);
        }
        (file, problems)
    }

    /// An auth map: each entry a user and their hash.
    pub fn from_map<'a>(
        entries: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> (Htpasswd, Vec<String>) {
        let mut file = Htpasswd::default();
        let mut problems = Vec::new();
        for (user, hash) in entries {
            file.add(user, hash, &format!("key {user:?}"), &mut problems);
        }
        (file, problems)
    }

    fn add(&mut self, user: &str, hash: &str, at: &str, problems: &mut Vec<String>) {
        let user = user.trim();
        if user.is_empty() || user.contains(':') || user.chars().any(char::is_control) {
            problems.push(format!("{at}: the user name is empty or not valid"));
            return;
        }
        match PasswordHash::parse(hash) {
            Ok(hash) => {
                if self.users.insert(user.to_string(), hash).is_some() {
                    problems.push(format!(
                        "{at}: user {user:?} is listed again; the last entry is used"
                    ));
                }
            }
            Err(reason) => problems.push(format!("{at} (user {user:?}): {reason}")),
        }
    }

    /// The hash of `user`, if the file lists them.
    pub fn get(&self, user: &str) -> Option<&PasswordHash> {
        self.users.get(user)
    }

    /// Every user and their hash.
    pub fn users(&self) -> impl Iterator<Item = (&str, &PasswordHash)> {
        self.users.iter().map(|(u, h)| (u.as_str(), h))
    }

    pub fn len(&self) -> usize {
        self.users.len()
    }

    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }
}

/// The alphabet of crypt's base64 (not RFC 4648's).
const CRYPT64: &[u8; 64] = b"./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

fn is_crypt64(text: &str) -> bool {
    !text.is_empty() && text.bytes().all(|b| CRYPT64.contains(&b))
}

/// The 22 characters of an apr1 hash of `password` with `salt` (MD5-crypt, with `$apr1$` as
/// its magic string).
fn apr1(password: &[u8], salt: &[u8]) -> String {
    const MAGIC: &[u8] = b"$apr1$";
    let salt = &salt[..salt.len().min(8)];
    let alternate = Md5::new()
        .chain_update(password)
        .chain_update(salt)
        .chain_update(password)
        .finalize();
    let mut ctx = Md5::new()
        .chain_update(password)
        .chain_update(MAGIC)
        .chain_update(salt);
    let mut left = password.len();
    while left > 0 {
        let n = left.min(16);
        ctx.update(&alternate[..n]);
        left -= n;
    }
    // One byte per bit of the length: a zero for a set bit, the password's first byte for a
    // clear one.
    let mut bits = password.len();
    while bits > 0 {
        if bits & 1 == 1 {
            ctx.update([0u8]);
        } else {
            ctx.update(&password[..1]);
        }
        bits >>= 1;
    }
    let mut digest = ctx.finalize();
    for round in 0..1000 {
        let mut ctx = Md5::new();
        if round % 2 == 1 {
            ctx.update(password);
        } else {
            ctx.update(digest);
        }
        if round % 3 != 0 {
            ctx.update(salt);
        }
        if round % 7 != 0 {
            ctx.update(password);
        }
        if round % 2 == 1 {
            ctx.update(digest);
        } else {
            ctx.update(password);
        }
        digest = ctx.finalize();
    }
    let mut out = String::with_capacity(22);
    let mut encode = |value: u32, chars: usize| {
        let mut value = value;
        for _ in 0..chars {
            out.push(char::from(CRYPT64[(value & 0x3f) as usize]));
            value >>= 6;
        }
    };
    let d = |i: usize| u32::from(digest[i]);
    for (a, b, c) in [(0, 6, 12), (1, 7, 13), (2, 8, 14), (3, 9, 15), (4, 10, 5)] {
        encode((d(a) << 16) | (d(b) << 8) | d(c), 4);
    }
    encode(d(11), 2);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    // Vectors made by `openssl passwd` and `htpasswd` (apache2-utils), not by this code.
    const APR1: &str = "$apr1$Wn8cSTgH$v4YIIy8GDcWo/5uLUdO9V/"; // "s3cret pass"
    const SHA256: &str = "$5$saltsalt$OIdfjX.u4Y3SJ4I2bX8w5BMf1VAUhHABNUirScDzZi3"; // hunter2
    const SHA512: &str = "$6$8charsal$x22Su7ing8UtiDeYtIvKj6jM6UfU4YgUF9iK9o9jGS8Iy3P5Y2TTPcMlO6Od7A7dEOFghsNfAmGMiAWsDapLT1"; // hunter2
    const SHA1: &str = "{SHA}87u9ZqY9S/F0eUBXjsPQEDUw4h0="; // hunter2
    const BCRYPT: &str = "$2y$05$lWv2jNyPSj9xG3ZuTEhyGu./3seiniFabWPh8UDFYJpneAZrig/xG"; // "wonder land"

    #[test]
    fn every_scheme_htpasswd_writes_checks_the_right_password_only() {
        for (hash, password, scheme) in [
            (APR1, "s3cret pass", "apr1"),
            (SHA256, "hunter2", "sha256-crypt"),
            (SHA512, "hunter2", "sha512-crypt"),
            (SHA1, "hunter2", "sha1"),
            (BCRYPT, "wonder land", "bcrypt"),
        ] {
            let parsed = PasswordHash::parse(hash).expect(scheme);
            assert_eq!(parsed.scheme(), scheme);
            assert!(
                parsed.verify(password.as_bytes()),
                "{scheme}: right password"
            );
            for wrong in [
                "",
                "hunter",
                "hunter22",
                "Hunter2",
                "s3cret pas",
                "wonder land ",
            ] {
                if wrong != password {
                    assert!(!parsed.verify(wrong.as_bytes()), "{scheme}: {wrong:?}");
                }
            }
        }
        // `$2a$` and `$2b$` are read as `$2y$`.
        let two_b = BCRYPT.replacen("$2y$", "$2b$", 1);
        assert!(PasswordHash::parse(&two_b)
            .expect("2b")
            .verify(b"wonder land"));
    }

    #[test]
    fn a_file_keeps_good_lines_and_names_the_bad_ones_without_their_hashes() {
        let text = format!(
            "# users\nalice:{BCRYPT}\n\nbob:{APR1}\ncarol:plaintext\ndave:abcdefghijklm\nnocolon\n:{SHA1}\neve:{SHA512}:a comment\n"
        );
        let (file, problems) = Htpasswd::parse_file(&text);
        let users: Vec<&str> = file.users().map(|(u, _)| u).collect();
        assert_eq!(users, ["alice", "bob", "eve"]);
        assert_eq!(problems.len(), 4, "{problems:?}");
        assert!(
            problems[0].starts_with("line 5 (user \"carol\")"),
            "{problems:?}"
        );
        assert!(problems[1].contains("DES crypt"), "{problems:?}");
        assert!(problems[2].starts_with("line 7: not user:hash"));
        assert!(problems[3].contains("user name"));
        assert!(!problems
            .iter()
            .any(|p| p.contains("plaintext") || p.contains("abcdefghijklm")));
        assert!(file.get("eve").expect("eve").verify(b"hunter2"));
        assert!(format!("{file:?}").contains("bcrypt") && !format!("{file:?}").contains("$2y$"));
    }

    #[test]
    fn an_auth_map_reads_each_key_as_a_user() {
        let (map, problems) = Htpasswd::from_map([("alice", SHA1), ("bob", "nope")]);
        assert_eq!(map.len(), 1);
        assert!(map.get("alice").expect("alice").verify(b"hunter2"));
        assert_eq!(problems.len(), 1);
        assert!(problems[0].starts_with("key \"bob\""));
    }

    #[test]
    fn malformed_hashes_are_refused_not_panicked_on() {
        for bad in [
            "$apr1$",
            "$apr1$salt",
            "$apr1$toolongsalt$v4YIIy8GDcWo/5uLUdO9V/",
            "$2y$",
            "$2y$99$",
            "$2y$05$short",
            "$5$",
            "$6$$",
            "$6$rounds=5000$",
            "{SHA}",
            "{SHA}not base64!",
            "$1$abc$def",
            "",
            "é",
        ] {
            assert!(PasswordHash::parse(bad).is_err(), "{bad:?}");
        }
        // Costs that would hold a thread for minutes or hours per check.
        let slow_bcrypt = BCRYPT.replacen("$05$", "$31$", 1);
        let slow_sha = SHA512.replacen("$6$", "$6$rounds=999999999$", 1);
        let htpasswd_max = BCRYPT.replacen("$05$", "$17$", 1);
        assert!(PasswordHash::parse(&slow_bcrypt).is_err());
        assert!(PasswordHash::parse(&slow_sha).is_err());
        assert!(PasswordHash::parse(&htpasswd_max).is_ok());
    }
}
