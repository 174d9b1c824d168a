//! Basic auth's parsers from any bytes: the input up to a NUL is an htpasswd file, the rest
//! an `Authorization` value. Parsing may refuse lines, never panic; every user read has a
//! name without `:` and a hash of a scheme weir checks; the
//! `Authorization` value is read without panicking, and a password is checked against a
//! fast hash (the slow ones, bcrypt and SHA-crypt, only have their verification queued).
#![no_main]
use libfuzzer_sys::fuzz_target;
use std::sync::Arc;
use weir_discovery::htpasswd::Htpasswd;
use weir_proxy::request::auth::{BasicCheck, BasicOutcome};

fuzz_target!(|data: &[u8]| {
    let (file, authorization) = match data.iter().position(|b| *b == 0) {
        Some(at) => (&data[..at], &data[at + 1..]),
        None => (data, &b""[..]),
    };
    let text = String::from_utf8_lossy(file);
    let (users, _problems) = Htpasswd::parse_file(&text);
    for (user, hash) in users.users() {
        assert!(!user.is_empty() && !user.contains(':'), "{user:?}");
        assert!(!hash.scheme().is_empty());
    }
    let check = BasicCheck::new(&weir_discovery::BasicAuth {
        realm: "fuzz".into(),
        secret: weir_discovery::ObjectRef {
            kind: "Secret",
            namespace: "ns".into(),
            name: "users".into(),
        },
        users: Arc::new(users),
    });
    match check.check(Some(authorization)) {
        BasicOutcome::Allowed | BasicOutcome::Denied | BasicOutcome::Verify(_) => {}
    }
});
