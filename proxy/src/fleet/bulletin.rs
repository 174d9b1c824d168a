//! Bulletins: the reports this replica changed, sent at once to every live peer, so that the
//! fleet hears of a failure in about one network hop rather than after the gossip rounds it
//! takes chitchat to spread it (several rounds of 200 ms, while a failing endpoint may fail
//! hundreds of requests a second). Gossip still carries every report: a lost bulletin only
//! delays what a peer hears until the next rounds.
//!
//! A bulletin is text: `WB1 <sent-ms> <node-id>` on its first line, then `<key> <value>`
//! lines, the keys and values of the sender's gossip state (`ep:`, `hc:`). It travels in one
//! authenticated datagram ([`super::transport`]); reports that do not fit one go in several.
//!
//! Must not: do I/O (the transport sends and receives them).

/// What every bulletin begins with; gossip messages begin otherwise (chitchat's magic number).
pub const PREFIX: &[u8] = b"WB1 ";

/// The largest bulletin body: one datagram within a common path MTU with its tag and headers.
pub const MAX_BODY: usize = 1_200;

/// One bulletin as received.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Bulletin {
    /// The sender's node id.
    pub node_id: String,
    /// When it was sent (Unix ms of the sender's clock).
    pub sent_ms: u64,
    pub entries: Vec<(String, String)>,
}

/// The bodies telling `entries`, each at most [`MAX_BODY`] bytes (an entry that could not fit
/// even alone is left out: keys and values are short, so none is that long).
pub fn encode(node_id: &str, sent_ms: u64, entries: &[(String, String)]) -> Vec<Vec<u8>> {
    let head = format!("WB1 {sent_ms} {node_id}\n");
    let mut bodies = Vec::new();
    let mut body = head.clone().into_bytes();
    for (key, value) in entries {
        let line = format!("{key} {value}\n");
        if head.len() + line.len() > MAX_BODY {
            continue;
        }
        if body.len() + line.len() > MAX_BODY {
            bodies.push(std::mem::replace(&mut body, head.clone().into_bytes()));
        }
        body.extend_from_slice(line.as_bytes());
    }
    if body.len() > head.len() {
        bodies.push(body);
    }
    bodies
}

/// The bulletin `body` says; `None` for anything else.
pub fn decode(body: &[u8]) -> Option<Bulletin> {
    let text = std::str::from_utf8(body.strip_prefix(PREFIX)?).ok()?;
    let (head, rest) = text.split_once('\n')?;
    let (sent_ms, node_id) = head.split_once(' ')?;
    if node_id.is_empty() {
        return None;
    }
    let entries = rest
        .lines()
        .map(|line| {
            let (key, value) = line.split_once(' ')?;
            Some((key.to_string(), value.to_string()))
        })
        .collect::<Option<Vec<_>>>()?;
    Some(Bulletin {
        node_id: node_id.to_string(),
        sent_ms: sent_ms.parse().ok()?,
        entries,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bulletins_round_trip_and_split_to_fit_a_datagram() {
        let entries: Vec<(String, String)> = (0..100)
            .map(|i| {
                (
                    format!("ep:10.0.0.{i}:8080"),
                    format!("{i} 1700000000000 0"),
                )
            })
            .collect();
        let bodies = encode("weir-0", 1_700_000_000_123, &entries);
        assert!(bodies.len() > 1, "100 reports do not fit one datagram");
        let mut heard = Vec::new();
        for body in &bodies {
            assert!(body.len() <= MAX_BODY);
            let b = decode(body).expect("a bulletin");
            assert_eq!(
                (b.node_id.as_str(), b.sent_ms),
                ("weir-0", 1_700_000_000_123)
            );
            heard.extend(b.entries);
        }
        assert_eq!(heard, entries);
        assert!(encode("weir-0", 1, &[]).is_empty());
    }

    #[test]
    fn what_is_not_a_bulletin_is_refused() {
        for body in [
            &b""[..],
            b"WB1 ",
            b"WB1 12 \n",
            b"WB1 twelve weir-0\nep:a 1 2 3\n",
            b"WB1 12 weir-0\nno-value-here\n",
            b"WB2 12 weir-0\n",
            b"WB1 12 weir-0\n\xff\xfe 1\n",
        ] {
            assert_eq!(decode(body), None, "{body:?}");
        }
        assert_eq!(decode(b"WB1 12 weir-0\n").map(|b| b.entries.len()), Some(0));
    }
}
