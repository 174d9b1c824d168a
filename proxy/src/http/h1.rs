//! weir's HTTP/1.1 wire format for the direct path ([`crate::engine::own::direct`]): classifying a client's
//! request head, writing its upstream copy, reading the upstream's response head and its
//! body framing, writing the client's response head, and decoding chunked bodies.
//!
//! Why weir has its own: pingora-core's codec keeps every header in two maps, allocates a
//! 64 KiB body buffer per response and inserts `Date`/`Connection` into both maps on every
//! response — together over half of a direct-path request's instructions
//! (docs/benchmarks.md). Here a request's header fields are ranges into the bytes received,
//! the upstream copy is written straight from them, and the response head is rewritten as
//! it is copied to the client.
//!
//! Pure: bytes in, bytes out; all I/O is in `direct`. Strict by design: a request head this
//! module does not fully understand is not taken ([`classify`] leaves it to Pingora's
//! path), and an upstream response whose framing is in doubt — two different lengths, a
//! length and a transfer coding, an unknown coding, a malformed chunk — is an error (502),
//! never a guess: those are the shapes that split or smuggle responses.
//!
//! Must not: do I/O, or keep anything between requests.

pub use crate::http::chunked::ChunkedDecoder;
use crate::http::fields::{is_connection_scoped, CONNECTION_SCOPED};
use crate::http::forwarded::UpstreamHeaders;
use crate::http::hardening::{is_authority, Rejection};
use crate::http::request_view::RequestView;
use bytes::{BufMut, Bytes, BytesMut};
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::prelude::*;
use smallvec::SmallVec;
use std::mem::MaybeUninit;
use std::ops::Range;

/// A request head longer than this is left to Pingora (which reads on up to its own limit and
/// answers 400 beyond it; weir's header limits apply after).
pub(crate) const MAX_CLASSIFIED_HEAD: usize = 64 * 1024;
/// Headers classified; a request with more is left to Pingora.
const MAX_CLASSIFIED_HEADERS: usize = 128;
/// Largest request body the direct path takes: it must have arrived with the head (or right
/// after it) and is kept until the response, so that a retry can send it again. Larger
/// bodies, chunked ones and `Expect: 100-continue` go to Pingora, which streams them.
pub(crate) const MAX_BUFFERED_BODY: usize = 64 * 1024;
/// Largest upstream response head (status line and fields); a longer one is a 502.
pub(crate) const MAX_RESPONSE_HEAD: usize = 64 * 1024;
/// Most fields in an upstream response head; more is a 502.
const MAX_RESPONSE_FIELDS: usize = 128;

/// Response fields never copied to the client: the connection-scoped ones (weir writes the
/// client's `Connection` and framing itself) and `Date`, which weir writes too (as nginx and
/// Pingora do).
fn never_relayed(name: &[u8]) -> bool {
    is_connection_scoped(name) || name.eq_ignore_ascii_case(b"date")
}

/// The lengths of those names, one bit each (all are under 32 bytes): a response field
/// whose name has none of these lengths is copied without comparing it to each name
/// (~400 instructions per response, callgrind).
const NEVER_RELAYED_LENGTHS: u32 = name_lengths(&[&CONNECTION_SCOPED, &["date"]]);

const fn name_lengths(lists: &[&[&str]]) -> u32 {
    let mut lengths = 0u32;
    let mut i = 0;
    while i < lists.len() {
        let mut j = 0;
        while j < lists[i].len() {
            lengths |= 1 << lists[i][j].len();
            j += 1;
        }
        i += 1;
    }
    lengths
}

/// The field names an upstream's `Connection` value asks not to forward (RFC 9110 §7.6.1):
/// its options other than `close` and `keep-alive`. The framing fields are never among them:
/// an upstream naming `Content-Length` there would otherwise get a length-framed body relayed
/// without its length, and the client would read the next response as part of this one.
fn connection_options(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value
        .split(|b| *b == b',')
        .map(<[u8]>::trim_ascii)
        .filter(|token| {
            !token.is_empty()
                && !["close", "keep-alive", "content-length", "transfer-encoding"]
                    .iter()
                    .any(|kept| token.eq_ignore_ascii_case(kept.as_bytes()))
        })
}

/// Removes from a response on Pingora's path the fields the direct path never relays:
/// connection-scoped ones and those the upstream's `Connection` names. Pingora writes the
/// client's `Connection` and framing itself. A 101 keeps `Upgrade` and `Connection`: they are
/// the switch the client asked for.
pub(crate) fn remove_connection_scoped_fields(resp: &mut ResponseHeader) {
    if resp.status == http::StatusCode::SWITCHING_PROTOCOLS {
        return;
    }
    // One pass over the fields, collecting only what is there: most responses carry at most
    // `Connection: keep-alive` and lose nothing, so nothing is looked up or removed.
    let mut doomed: SmallVec<[http::HeaderName; 4]> = SmallVec::new();
    for (name, value) in resp.headers.iter() {
        if name == http::header::CONNECTION {
            doomed.extend(
                connection_options(value.as_bytes())
                    .filter_map(|token| http::HeaderName::from_bytes(token).ok()),
            );
        } else if name != http::header::TRANSFER_ENCODING
            && is_connection_scoped(name.as_str().as_bytes())
        {
            // `Transfer-Encoding` stays: Pingora frames the client's copy from it.
            doomed.push(name.clone());
        }
    }
    for name in &doomed {
        resp.remove_header(name);
    }
}

/// Where a simple head's parts are in the connection's buffer (byte ranges, so the buffer
/// can move on). With its [`HeadFields`], everything [`ClientRequest::parse`] needs: the head
/// is parsed once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeadView {
    pub(crate) host: Range<usize>,
    pub(crate) target: Range<usize>,
    /// Length of the head, and of the body that follows it (all in the buffer).
    pub head_len: usize,
    pub body_len: usize,
    method: Range<usize>,
    http10: bool,
    /// What the client's `Connection` field said, if anything.
    connection_close: bool,
    connection_keep_alive: bool,
}

impl HeadView {
    /// The head's framing, for a reader that is not the direct path.
    pub fn framing(&self) -> RequestFraming {
        RequestFraming {
            head_len: self.head_len,
            body: match self.body_len {
                0 => RequestBody::None,
                len => RequestBody::Length(len as u64),
            },
        }
    }
}

/// Where the fields of the head [`classify`] looked at last are, in order: one per client
/// connection, reused for each of its requests. (Kept inside each request's view, they were
/// copied with it every time it moved, ~400 bytes at a time.)
#[derive(Debug, Default)]
pub struct HeadFields(Vec<Field>);

/// Fields a [`HeadFields`] keeps room for between requests (16 bytes each).
const KEPT_FIELDS: usize = 32;

impl HeadFields {
    /// Called while its connection waits for the next request: a list grown by an unusually
    /// large head is freed; one of a usual head's size is kept for the next request (taking
    /// it anew each time cost more than the 512 bytes it holds).
    pub(crate) fn release(&mut self) {
        if self.0.capacity() > KEPT_FIELDS {
            self.0 = Vec::new();
        }
    }
}

/// How a request's body is framed, as the head says (RFC 9112 §6.3): what a reader must
/// take after the head before the next request starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestBody {
    /// No body: the next request starts right after the head.
    None,
    /// `Content-Length` bytes.
    Length(u64),
    /// A chunked body, up to and with its last chunk and trailer section.
    Chunked,
    /// An upgrade request (`Connection: upgrade`): if the upstream switches protocols,
    /// everything after the head is the new protocol's.
    Tunnel,
}

/// A complete, well-framed head: its length and its body's framing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestFraming {
    pub head_len: usize,
    pub body: RequestBody,
}

/// What the bytes at the start of a connection's buffer are.
#[derive(Debug, PartialEq, Eq)]
pub enum Classified {
    /// Not a complete head yet.
    Partial,
    /// A complete head with a small `Content-Length` body not all read yet.
    BodyPending,
    /// A complete request the direct path can serve whatever its route: HTTP/1.x in origin
    /// form, no body or a `Content-Length` body of at most [`MAX_BUFFERED_BODY`] bytes that is
    /// all in the buffer, no upgrade, no `Expect`, no hop-by-hop header but
    /// `Connection: keep-alive|close`.
    Simple(HeadView),
    /// A complete, well-framed head for Pingora's proxy.
    Other(RequestFraming),
    /// Not a request weir accepts: answered with the rejection's status, and the connection
    /// closed (what follows cannot be framed with confidence).
    Malformed(Rejection),
}

/// The most bytes a request head may have before it is refused (431); the header limits
/// (`--max-request-header-bytes`, at most 1 MB) apply within it.
pub(crate) const MAX_HEAD: usize = 1024 * 1024 + 16 * 1024;
/// The most fields a request head may have (`--max-request-headers` applies within it).
const MAX_HEAD_FIELDS: usize = 10_000;

/// Field names weir frames the request by or sets itself: with `_` in place of a `-`, a
/// CGI-style backend (which reads `_` and `-` alike) would take them for the real ones.
const GUARDED_NAMES: [&str; 9] = [
    "content-length",
    "transfer-encoding",
    "connection",
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-forwarded-host",
    "x-forwarded-port",
    "x-real-ip",
    "proxy-connection",
];

/// Whether `name` contains `_` and reads as one of [`GUARDED_NAMES`] with `_` taken as `-`.
fn underscore_guarded(name: &str) -> bool {
    name.contains('_')
        && GUARDED_NAMES.iter().any(|guarded| {
            guarded.len() == name.len()
                && guarded
                    .bytes()
                    .zip(name.bytes())
                    .all(|(g, n)| g == n.to_ascii_lowercase() || (g == b'-' && n == b'_'))
        })
}

/// The rejection for an httparse error: the same labels the request core uses.
fn parse_rejection(error: httparse::Error) -> Rejection {
    match error {
        httparse::Error::HeaderName => Rejection::bad_request("invalid_header_name"),
        httparse::Error::HeaderValue => Rejection::bad_request("invalid_header_value"),
        httparse::Error::NewLine => Rejection::bad_request("invalid_line_ending"),
        httparse::Error::TooManyHeaders => Rejection::new(431, "header_too_large"),
        httparse::Error::Version => Rejection::bad_request("invalid_http_version"),
        httparse::Error::Token | httparse::Error::Status => {
            Rejection::bad_request("invalid_request_line")
        }
    }
}

/// Classifies the bytes at the start of `head` (see [`Classified`]); where its fields are goes
/// to `fields` (replacing what was there).
///
/// This is weir's one reading of an HTTP/1 request's framing, for every engine: the request
/// line (a method token, single spaces, an origin-, absolute- or (`OPTIONS`) asterisk-form
/// target, `HTTP/1.0` or `HTTP/1.1`), `Content-Length` (one field, digits only) and
/// `Transfer-Encoding` (`chunked` alone, HTTP/1.1 only, never beside a length), `Host` (an
/// authority, [`is_authority`]). A head
/// classified here reads the same to every HTTP/1 parser; anything else is `Malformed`.
pub fn classify(head: &[u8], fields: &mut HeadFields) -> Classified {
    let mut headers = uninit_headers::<MAX_CLASSIFIED_HEADERS>();
    let mut req = httparse::Request::new(&mut []);
    match req.parse_with_uninit_headers(head, &mut headers) {
        Ok(httparse::Status::Complete(len)) => classify_parsed(head, &req, len, fields),
        Ok(httparse::Status::Partial) if head.len() >= MAX_HEAD => {
            Classified::Malformed(Rejection::new(431, "header_too_large"))
        }
        Ok(httparse::Status::Partial) => Classified::Partial,
        Err(httparse::Error::TooManyHeaders) => {
            // Rare: more fields than fit on the stack; parse again with room for the most
            // any limit allows.
            let mut many = vec![httparse::EMPTY_HEADER; MAX_HEAD_FIELDS + 1];
            let mut req = httparse::Request::new(&mut many);
            match req.parse(head) {
                Ok(httparse::Status::Complete(len)) => classify_parsed(head, &req, len, fields),
                Ok(httparse::Status::Partial) if head.len() >= MAX_HEAD => {
                    Classified::Malformed(Rejection::new(431, "header_too_large"))
                }
                Ok(httparse::Status::Partial) => Classified::Partial,
                Err(e) => Classified::Malformed(parse_rejection(e)),
            }
        }
        Err(e) => Classified::Malformed(parse_rejection(e)),
    }
}

fn classify_parsed(
    head: &[u8],
    req: &httparse::Request<'_, '_>,
    head_len: usize,
    fields: &mut HeadFields,
) -> Classified {
    let malformed = |reason| Classified::Malformed(Rejection::bad_request(reason));
    let (Some(method), Some(target), Some(version)) = (req.method, req.path, req.version) else {
        return malformed("invalid_request_line");
    };
    // httparse takes a run of spaces between the parts; the grammar has exactly one SP.
    let start = range_in(head, method.as_bytes()).start;
    let line = &head[start..];
    let line = &line[..line.iter().position(|b| *b == b'\n').unwrap_or(line.len())];
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    if line.len() != method.len() + target.len() + b"  HTTP/1.1".len()
        || line.get(method.len()) != Some(&b' ')
        || line.get(method.len() + 1 + target.len()) != Some(&b' ')
    {
        return malformed("invalid_request_line");
    }
    let origin_form = target.starts_with('/');
    // Bytes, not `str` slices: a target may hold UTF-8 past its first bytes.
    let scheme = |prefix: &[u8]| {
        target
            .as_bytes()
            .get(..prefix.len())
            .is_some_and(|start| start.eq_ignore_ascii_case(prefix))
    };
    let absolute_form = target.len() > 8 && (scheme(b"http://") || scheme(b"https://"));
    let asterisk_form = target == "*" && method == "OPTIONS";
    if !(origin_form || absolute_form || asterisk_form) {
        return malformed("invalid_request_target");
    }
    let mut host = 0..0;
    let mut length = None;
    let mut chunked = false;
    let mut upgrade = false;
    // Whether the direct path may take it, the framing aside.
    let mut simple = origin_form && head_len <= MAX_CLASSIFIED_HEAD;
    let fields = &mut fields.0;
    fields.clear();
    let (mut connection_close, mut connection_keep_alive) = (false, false);
    for header in req.headers.iter() {
        let (name, value) = (header.name, header.value);
        fields.push(Field::new(
            range_in(head, name.as_bytes()),
            range_in(head, value),
        ));
        if name.eq_ignore_ascii_case("host") {
            if !is_authority(value) {
                return malformed("invalid_host");
            }
            host = range_in(head, value);
        } else if name.eq_ignore_ascii_case("content-length") {
            if length.is_some() {
                return malformed("duplicate_content_length");
            }
            let Some(len) = content_length(value) else {
                return malformed("invalid_content_length");
            };
            // `007`: forwarded in its normal form, which only Pingora's path writes.
            simple &= value.len() == 1 || value[0] != b'0';
            length = Some(len);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            if chunked {
                return malformed("duplicate_transfer_encoding");
            }
            if !value.eq_ignore_ascii_case(b"chunked") {
                return Classified::Malformed(Rejection::new(501, "unsupported_transfer_encoding"));
            }
            chunked = true;
            simple = false;
        } else if name.eq_ignore_ascii_case("connection") {
            if value.eq_ignore_ascii_case(b"close") {
                connection_close = true;
            } else if value.eq_ignore_ascii_case(b"keep-alive") {
                connection_keep_alive = true;
            } else {
                simple = false;
            }
        } else if name.eq_ignore_ascii_case("upgrade") {
            // What Pingora takes for an upgrade: an `Upgrade` field in HTTP/1.1, whatever
            // `Connection` says; its bytes after a 101 are the new protocol's.
            upgrade = version == 1;
            simple = false;
        } else if is_connection_scoped(name.as_bytes()) || name.eq_ignore_ascii_case("expect") {
            // An upgrade, `Expect` or another connection's field: Pingora's.
            simple = false;
        } else if underscore_guarded(name) {
            return malformed("underscore_in_guarded_field");
        }
    }
    if chunked && length.is_some() {
        return malformed("content_length_with_transfer_encoding");
    }
    if chunked && version == 0 {
        // RFC 9112 §6.1: HTTP/1.0 has no transfer codings; its framing is in doubt.
        return malformed("transfer_encoding_in_http10");
    }
    let body = match (chunked, length) {
        // An upgrade with a body: after a 101 the body's end would be read two ways (as
        // the body's, and as the new protocol's bytes).
        (true, _) | (false, Some(1..)) if upgrade => return malformed("upgrade_with_body"),
        (true, _) => RequestBody::Chunked,
        (false, Some(len)) if len > 0 => RequestBody::Length(len),
        _ if upgrade => RequestBody::Tunnel,
        _ => RequestBody::None,
    };
    let body_len = match body {
        RequestBody::None => 0,
        RequestBody::Length(len) if simple => match usize::try_from(len) {
            Ok(len) if len <= MAX_BUFFERED_BODY => len,
            _ => return Classified::Other(RequestFraming { head_len, body }),
        },
        _ => return Classified::Other(RequestFraming { head_len, body }),
    };
    if !simple {
        return Classified::Other(RequestFraming { head_len, body });
    }
    if head.len() < head_len + body_len {
        return Classified::BodyPending;
    }
    Classified::Simple(HeadView {
        host,
        target: range_in(head, target.as_bytes()),
        head_len,
        body_len,
        method: range_in(head, method.as_bytes()),
        http10: version == 0,
        connection_close,
        connection_keep_alive,
    })
}

/// The upstream copy the direct path writes of the simple request at the start of `raw`
/// (head and body), with none of weir's own fields added; `None` if it is not one the direct
/// path takes. For differential tests of the framing check against what goes on
/// (`fuzz/fuzz_targets/h1_request.rs`).
pub fn upstream_copy(raw: &Bytes) -> Option<BytesMut> {
    let mut fields = HeadFields::default();
    let Classified::Simple(view) = classify(raw, &mut fields) else {
        return None;
    };
    let len = view.head_len + view.body_len;
    let request = ClientRequest::parse(raw.slice(..len), view, &fields).ok()?;
    let mut out = BytesMut::new();
    request.write_upstream(&UpstreamHeaders::new(), &mut out);
    Some(out)
}

/// Room for `N` header fields, left uninitialised: httparse fills what it uses, and
/// zeroing 128 fields (4 KiB) per parse cost more than the parse.
fn uninit_headers<'b, const N: usize>() -> [MaybeUninit<httparse::Header<'b>>; N] {
    [MaybeUninit::uninit(); N]
}

/// Where `part` (a slice httparse returned) lies in `whole`.
fn range_in(whole: &[u8], part: &[u8]) -> Range<usize> {
    let start = part.as_ptr() as usize - whole.as_ptr() as usize;
    start..start + part.len()
}

/// One header field of a [`ClientRequest`]: where its name and value are in the request's
/// bytes (the head is under [`MAX_CLASSIFIED_HEAD`]).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Field {
    name: Range<u32>,
    value: Range<u32>,
}

impl Field {
    fn new(name: Range<usize>, value: Range<usize>) -> Self {
        Field {
            name: name.start as u32..name.end as u32,
            value: value.start as u32..value.end as u32,
        }
    }
}

/// A simple request as received (see [`classify`]): its bytes and where its fields are, read
/// by weir's phases through [`RequestView`] (no header map is built).
pub(crate) struct ClientRequest<'f> {
    bytes: Bytes,
    head_len: usize,
    fields: &'f [Field],
    http10: bool,
    /// What the client's `Connection` field said, if anything.
    connection_close: bool,
    connection_keep_alive: bool,
    method: http::Method,
    /// The target as routed (replaced by its normal form in the phases).
    uri: http::Uri,
    /// The target as it goes upstream, when not the one received: Pingora's reading of a
    /// target with a fragment, or the normal form of the path.
    upstream_target: Option<Bytes>,
}

impl<'f> ClientRequest<'f> {
    /// The request [`classify`] found simple in `bytes` (exactly its head and body, at the
    /// start of the buffer `view` was taken from). An error for a method or target the `http`
    /// types refuse. Field names and values need no second check: httparse accepted them by
    /// the same rules as the `http` types (tokens; visible ASCII, spaces, tabs and obs-text),
    /// and a classified head is too short for a name over their 64 KiB limit.
    /// `fields`: where `classify` put the head's fields.
    pub(crate) fn parse(
        bytes: Bytes,
        view: HeadView,
        fields: &'f HeadFields,
    ) -> Result<ClientRequest<'f>> {
        let method = bytes.get(view.method.clone()).unwrap_or_default();
        let method = http::Method::from_bytes(method)
            .explain_err(ErrorType::InvalidHTTPHeader, |_| "invalid method")?;
        let (uri, upstream_target) = match shared_path_and_query(&bytes, &view.target) {
            // The usual target: the Uri shares the request's bytes.
            Some(path_and_query) => {
                let mut uri = http::uri::Parts::default();
                uri.path_and_query = Some(path_and_query);
                let uri = http::Uri::from_parts(uri)
                    .explain_err(ErrorType::InvalidHTTPHeader, |_| "invalid target")?;
                (uri, None)
            }
            // A fragment: Pingora's rules for the target (it drops the fragment). Targets
            // that are not UTF-8 never get here: `classify` leaves them to Pingora's path.
            None => {
                let target = bytes.get(view.target.clone()).unwrap_or_default();
                let pingoras = RequestHeader::build_no_case(method.as_str(), target, None)?;
                let upstream = Bytes::copy_from_slice(pingoras.raw_path());
                (pingoras.uri.clone(), Some(upstream))
            }
        };
        Ok(ClientRequest {
            bytes,
            head_len: view.head_len,
            fields: &fields.0,
            http10: view.http10,
            connection_close: view.connection_close,
            connection_keep_alive: view.connection_keep_alive,
            method,
            uri,
            upstream_target,
        })
    }

    /// The request body (empty for most requests).
    pub(crate) fn body(&self) -> &[u8] {
        &self.bytes[self.head_len..]
    }

    /// Whether the client asked to keep the connection open after this request (HTTP/1.1
    /// unless `Connection: close`; HTTP/1.0 only with `Connection: keep-alive`).
    pub(crate) fn wants_keep_alive(&self) -> bool {
        if self.http10 {
            self.connection_keep_alive && !self.connection_close
        } else {
            !self.connection_close
        }
    }

    /// Whether the client speaks HTTP/1.0 (no chunked responses, no 1xx).
    pub(crate) fn is_http10(&self) -> bool {
        self.http10
    }

    /// The bytes at `range` (a field's name or value).
    fn part(&self, range: &Range<u32>) -> &[u8] {
        self.bytes
            .get(range.start as usize..range.end as usize)
            .unwrap_or_default()
    }

    /// Writes the upstream copy of the request to `out`: HTTP/1.1 with its method and
    /// target (the normal form of the path, once set), the client's fields in their order and
    /// spelling except `Connection` and those `set` replaces, then `set`, then the body.
    pub(crate) fn write_upstream(&self, set: &UpstreamHeaders, out: &mut BytesMut) {
        out.reserve(self.bytes.len() + 256);
        out.put_slice(self.method.as_str().as_bytes());
        out.put_u8(b' ');
        out.put_slice(self.raw_path());
        out.put_slice(b" HTTP/1.1\r\n");
        let mut lines = LineCopier::new(&self.bytes);
        for field in self.fields {
            let name = self.part(&field.name);
            if name.eq_ignore_ascii_case(b"connection")
                || set
                    .iter()
                    .any(|(replaced, _)| name.eq_ignore_ascii_case(replaced.as_str().as_bytes()))
            {
                continue;
            }
            lines.line(out, field);
        }
        lines.flush(out);
        for (name, value) in set.iter().filter(|(_, value)| !value.is_empty()) {
            put_field(out, name.as_str().as_bytes(), value.as_bytes());
        }
        out.put_slice(b"\r\n");
        out.put_slice(self.body());
    }
}

impl RequestView for ClientRequest<'_> {
    fn method(&self) -> &http::Method {
        &self.method
    }

    fn uri(&self) -> &http::Uri {
        &self.uri
    }

    fn set_uri(&mut self, uri: http::Uri) {
        // As Pingora's `set_uri`: the new target is the one that goes upstream.
        self.uri = uri;
        self.upstream_target = None;
    }

    fn version(&self) -> http::Version {
        if self.http10 {
            http::Version::HTTP_10
        } else {
            http::Version::HTTP_11
        }
    }

    fn raw_path(&self) -> &[u8] {
        match &self.upstream_target {
            Some(target) => target,
            None => self
                .uri
                .path_and_query()
                .map_or(&b"/"[..], |p| p.as_str().as_bytes()),
        }
    }

    fn field(&self, name: &http::HeaderName) -> Option<&[u8]> {
        self.field_named(name.as_str().as_bytes())
    }

    fn field_named(&self, name: &[u8]) -> Option<&[u8]> {
        // Over the ranges directly: through `fields()` this lookup, three a request, cost
        // ~100 instructions more each (callgrind).
        self.fields
            .iter()
            .find(|field| self.part(&field.name).eq_ignore_ascii_case(name))
            .map(|field| self.part(&field.value))
    }

    fn fields(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        self.fields
            .iter()
            .map(|field| (self.part(&field.name), self.part(&field.value)))
    }
}

/// The origin-form target at `range` of `bytes` as a path and query sharing those bytes, when
/// it is UTF-8 with no fragment: the form Pingora's `set_raw_path` stores unchanged.
fn shared_path_and_query(bytes: &Bytes, range: &Range<usize>) -> Option<http::uri::PathAndQuery> {
    let target = bytes.get(range.clone())?;
    if target.first() != Some(&b'/')
        || target.contains(&b'#')
        || std::str::from_utf8(target).is_err()
    {
        return None;
    }
    http::uri::PathAndQuery::from_maybe_shared(bytes.slice(range.clone())).ok()
}

/// Writes the HTTP/1.1 upstream copy of a body-less request that arrived over HTTP/2 as
/// `req` (its normal-form target already set): `Host` from `:authority` unless the client
/// sent one or `set` has one, the client's fields except connection-scoped ones and those `set` replaces, then
/// `set`. HTTP/2 may split `cookie` into several fields; HTTP/1.1 gets them joined into one
/// (RFC 9113 §8.2.3).
pub(crate) fn write_upstream_of_h2(
    req: &impl RequestView,
    set: &UpstreamHeaders,
    out: &mut BytesMut,
) {
    out.reserve(512);
    out.put_slice(req.method().as_str().as_bytes());
    out.put_u8(b' ');
    out.put_slice(req.raw_path());
    out.put_slice(b" HTTP/1.1\r\n");
    let host_set = set.iter().any(|(name, _)| name == http::header::HOST);
    if req.field(&http::header::HOST).is_none() && !host_set {
        let authority = req.authority();
        if !authority.is_empty() {
            put_field(out, b"host", authority.as_bytes());
        }
    }
    let mut cookies = 0;
    // HTTP/2 field names are lowercase, as `HeaderName`s are.
    for (name, value) in req.fields() {
        if name == b"cookie" {
            cookies += 1;
            continue;
        }
        // `te: trailers` is allowed in HTTP/2 but is hop-by-hop in HTTP/1.1.
        if is_connection_scoped(name)
            || set
                .iter()
                .any(|(replaced, _)| replaced.as_str().as_bytes() == name)
        {
            continue;
        }
        put_field(out, name, value);
    }
    if cookies > 0 {
        out.put_slice(b"cookie: ");
        for (i, value) in req.field_values(&http::header::COOKIE).enumerate() {
            if i > 0 {
                out.put_slice(b"; ");
            }
            out.put_slice(value);
        }
        out.put_slice(b"\r\n");
    }
    for (name, value) in set.iter().filter(|(_, value)| !value.is_empty()) {
        put_field(out, name.as_str().as_bytes(), value.as_bytes());
    }
    out.put_slice(b"\r\n");
}

/// A `Content-Length` value: one plain decimal number (no sign, no list).
fn content_length(value: &[u8]) -> Option<u64> {
    let digits = value.trim_ascii();
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(digits).ok()?.parse().ok()
}

/// The fields weir adds to every final response it sends: `Date`, and `Connection` saying
/// whether the client connection stays open.
pub(crate) fn put_own_fields(out: &mut BytesMut, date: &[u8], keep_alive: bool) {
    put_field(out, b"Date", date);
    let connection: &[u8] = if keep_alive { b"keep-alive" } else { b"close" };
    put_field(out, b"Connection", connection);
}

/// Copies field lines of a head in `source` to `out`, each adjacent run of them in one copy:
/// most requests relay all or nearly all of their fields, and writing each one in four
/// pieces cost ~60 instructions a field (callgrind). A line is copied as received — name,
/// colon, whitespace and value, all as httparse accepted them — when it ends in CRLF right
/// after its value; any other line (a bare LF, trailing whitespace) is written anew as
/// `name: value` CRLF.
struct LineCopier<'s> {
    source: &'s [u8],
    /// Lines waiting to be copied: whole CRLF-terminated lines of `source`.
    run: Range<usize>,
}

impl<'s> LineCopier<'s> {
    fn new(source: &'s [u8]) -> Self {
        LineCopier { source, run: 0..0 }
    }

    /// Adds `field`'s line.
    fn line(&mut self, out: &mut BytesMut, field: &Field) {
        let (name, value) = (
            field.name.start as usize..field.name.end as usize,
            field.value.start as usize..field.value.end as usize,
        );
        if name.start != self.run.end {
            self.flush(out);
            self.run = name.start..name.start;
        }
        let line_end = value.end + 2;
        if self.source.get(value.end..line_end) == Some(b"\r\n") {
            self.run.end = line_end;
        } else {
            self.flush(out);
            let part = |range: Range<usize>| self.source.get(range).unwrap_or_default();
            put_field(out, part(name), part(value));
        }
    }

    /// Copies the lines waiting.
    fn flush(&mut self, out: &mut BytesMut) {
        if let Some(lines) = self.source.get(self.run.clone()) {
            out.put_slice(lines);
        }
        self.run = 0..0;
    }
}

pub(crate) fn put_field(out: &mut BytesMut, name: &[u8], value: &[u8]) {
    out.put_slice(name);
    out.put_slice(b": ");
    out.put_slice(value);
    out.put_slice(b"\r\n");
}

/// How the body of an upstream response is delimited (RFC 9112 §6.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BodyFraming {
    /// No body: a `HEAD` request, 1xx, 204 or 304.
    Empty,
    /// `Content-Length` bytes.
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
    /// Everything until the upstream closes the connection.
    UntilClose,
}

/// What [`response_head`] read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ResponseHead {
    pub(crate) status: u16,
    pub(crate) head_len: usize,
    pub(crate) framing: BodyFraming,
    /// The body goes to the client chunked (an HTTP/1.1 client, and a chunked or
    /// close-delimited upstream body).
    pub(crate) chunked_to_client: bool,
    /// The client connection stays open after this response.
    pub(crate) client_keep_alive: bool,
    /// The upstream did not ask to close its connection.
    pub(crate) upstream_keep_alive: bool,
    /// Where the `Retry-After` value is in the buffer, if there is one.
    pub(crate) retry_after: Option<Range<usize>>,
}

/// The protocol the client speaks, as far as a response's head and framing depend on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ClientVersion {
    /// No chunked bodies, no 1xx: a body of unknown length ends with the connection.
    Http10,
    Http11,
    /// Frames of its own: bodies are never chunked, 1xx are not relayed, and the head's
    /// connection fields do not exist.
    Http2,
}

/// The status of the response whose status line begins `buf` (`HTTP/1.x NNN`), once its
/// three digits are in; `None` before, or when it is not a status line.
pub(crate) fn response_status(buf: &[u8]) -> Option<u16> {
    let line = buf.get(..12)?;
    if !line.starts_with(b"HTTP/1.") || line[8] != b' ' {
        return None;
    }
    line[9..12].iter().try_fold(0u16, |n, d| {
        d.is_ascii_digit().then(|| n * 10 + u16::from(d - b'0'))
    })
}

/// The client side of a response, as far as the head depends on it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ClientSide {
    pub(crate) version: ClientVersion,
    /// The client may keep the connection (its request said so, and weir is not stopping).
    pub(crate) keep_alive: bool,
    /// The request was a `HEAD`.
    pub(crate) head_request: bool,
}

/// Reads the upstream response head at the start of `buf` (`Ok(None)` while it is
/// incomplete) and writes the client's copy of it to `out`: status line, the upstream's
/// fields without the hop-by-hop ones, then weir's `Date`, `Connection` and, when the body is
/// re-framed, `Transfer-Encoding: chunked`. `added`: fields weir adds to a final response
/// (the route's response filters), after the upstream's. A 1xx head is written only for
/// HTTP/1.1 clients, without `Date`, `Connection` or `added`. `Err` names what is wrong with
/// a head that cannot be relayed safely.
pub(crate) fn response_head(
    buf: &[u8],
    client: ClientSide,
    date: &[u8],
    added: &[crate::http::fields::ResponseField],
    out: &mut impl ResponseHeadOut,
) -> std::result::Result<Option<ResponseHead>, &'static str> {
    let mut headers = uninit_headers::<MAX_RESPONSE_FIELDS>();
    let mut resp = httparse::Response::new(&mut []);
    let head_len = match httparse::ParserConfig::default().parse_response_with_uninit_headers(
        &mut resp,
        buf,
        &mut headers,
    ) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err("too many response header fields"),
        Err(_) => return Err("malformed response head"),
    };
    let status = resp.code.unwrap_or(0);
    let informational = (100..200).contains(&status);
    let upstream_http10 = resp.version == Some(0);
    // Connection options first: they name further fields not to copy.
    let mut listed: SmallVec<[&[u8]; 4]> = SmallVec::new();
    let mut upstream_close = false;
    let mut upstream_keep_alive_token = false;
    let mut length: Option<u64> = None;
    let mut chunked = false;
    let mut retry_after = None;
    for header in resp.headers.iter() {
        let (name, value) = (header.name, header.value);
        if name.eq_ignore_ascii_case("connection") {
            for token in value.split(|b| *b == b',').map(<[u8]>::trim_ascii) {
                if token.eq_ignore_ascii_case(b"close") {
                    upstream_close = true;
                } else if token.eq_ignore_ascii_case(b"keep-alive") {
                    upstream_keep_alive_token = true;
                }
            }
            listed.extend(connection_options(value));
        } else if name.eq_ignore_ascii_case("content-length") {
            let parsed = content_length(value).ok_or("invalid Content-Length in response")?;
            match length {
                Some(earlier) if earlier != parsed => {
                    return Err("conflicting Content-Length in response")
                }
                _ => length = Some(parsed),
            }
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            if chunked || !value.trim_ascii().eq_ignore_ascii_case(b"chunked") {
                return Err("unsupported Transfer-Encoding in response");
            }
            chunked = true;
        } else if name.eq_ignore_ascii_case("retry-after") {
            retry_after = Some(range_in(buf, value));
        }
    }
    if status == 101 {
        return Err("101 to a request without upgrade");
    }
    if chunked && length.is_some() {
        return Err("Content-Length with Transfer-Encoding in response");
    }
    let framing = if informational || status == 204 || status == 304 || client.head_request {
        BodyFraming::Empty
    } else if chunked {
        BodyFraming::Chunked
    } else if let Some(length) = length {
        BodyFraming::Length(length)
    } else {
        BodyFraming::UntilClose
    };
    let reframed = matches!(framing, BodyFraming::Chunked | BodyFraming::UntilClose);
    let chunked_to_client = reframed && client.version == ClientVersion::Http11;
    // An HTTP/1.0 client learns where such a body ends only from the close.
    let client_keep_alive =
        client.keep_alive && !(reframed && client.version == ClientVersion::Http10);
    let head = ResponseHead {
        status,
        head_len,
        framing,
        chunked_to_client,
        client_keep_alive,
        upstream_keep_alive: if upstream_http10 {
            upstream_keep_alive_token && !upstream_close
        } else {
            !upstream_close
        },
        retry_after,
    };
    if informational && client.version != ClientVersion::Http11 {
        return Ok(Some(head));
    }
    out.start(status, resp.reason, &buf[..head_len])?;
    for header in resp.headers.iter() {
        let name = header.name.as_bytes();
        let maybe_never_relayed = NEVER_RELAYED_LENGTHS
            .checked_shr(name.len() as u32)
            .is_some_and(|bits| bits & 1 == 1);
        let hop_by_hop = (maybe_never_relayed && never_relayed(name))
            || listed.iter().any(|n| name.eq_ignore_ascii_case(n));
        let replaced = !added.is_empty()
            && added
                .iter()
                .any(|f| f.replaces && name.eq_ignore_ascii_case(f.name.as_str().as_bytes()));
        if !hop_by_hop && !replaced {
            // The line as received, when it ends in CRLF right after the value.
            let start = range_in(buf, name).start;
            let value_at = range_in(buf, header.value);
            let line = buf
                .get(start..value_at.end + 2)
                .filter(|line| line.ends_with(b"\r\n"));
            out.field(RelayedField {
                name,
                value: header.value,
                line,
            })?;
        }
    }
    if !informational {
        // A replacing field with no value only removes the upstream's.
        for field in added.iter().filter(|f| !(f.replaces && f.value.is_empty())) {
            out.field(RelayedField {
                name: field.name.as_str().as_bytes(),
                value: field.value.as_bytes(),
                line: None,
            })?;
        }
    }
    out.finish(&head, date)?;
    Ok(Some(head))
}

/// Where [`response_head`] writes the client's copy of a response head: the bytes of an
/// HTTP/1.1 head ([`BytesMut`]) or the HPACK block of an HTTP/2 one ([`HpackResponseHead`]). It is
/// given only the end-to-end fields; `finish` adds what the client's protocol needs.
pub(crate) trait ResponseHeadOut {
    /// The status line; `head`: the whole head as received.
    fn start(
        &mut self,
        status: u16,
        reason: Option<&str>,
        head: &[u8],
    ) -> std::result::Result<(), &'static str>;
    fn field(&mut self, field: RelayedField<'_>) -> std::result::Result<(), &'static str>;
    fn finish(&mut self, head: &ResponseHead, date: &[u8])
        -> std::result::Result<(), &'static str>;
}

/// One end-to-end field of a response head, as [`response_head`] relays it.
pub(crate) struct RelayedField<'a> {
    pub(crate) name: &'a [u8],
    pub(crate) value: &'a [u8],
    /// The whole field line as received, when it ends in CRLF right after the value (an
    /// HTTP/1.1 head copies it in one piece).
    pub(crate) line: Option<&'a [u8]>,
}

impl ResponseHeadOut for BytesMut {
    fn start(
        &mut self,
        status: u16,
        reason: Option<&str>,
        head: &[u8],
    ) -> std::result::Result<(), &'static str> {
        self.reserve(head.len() + 128);
        self.put_slice(b"HTTP/1.1 ");
        // httparse read exactly three digits.
        self.put_slice(&[
            b'0' + (status / 100 % 10) as u8,
            b'0' + (status / 10 % 10) as u8,
            b'0' + (status % 10) as u8,
            b' ',
        ]);
        match reason.filter(|r| !r.is_empty()) {
            Some(reason) => self.put_slice(reason.as_bytes()),
            None => self.put_slice(
                http::StatusCode::from_u16(status)
                    .ok()
                    .and_then(|s| s.canonical_reason())
                    .unwrap_or("")
                    .as_bytes(),
            ),
        }
        self.put_slice(b"\r\n");
        Ok(())
    }

    fn field(&mut self, field: RelayedField<'_>) -> std::result::Result<(), &'static str> {
        match field.line {
            Some(line) => self.put_slice(line),
            None => put_field(self, field.name, field.value),
        }
        Ok(())
    }

    fn finish(
        &mut self,
        head: &ResponseHead,
        date: &[u8],
    ) -> std::result::Result<(), &'static str> {
        if !(100..200).contains(&head.status) {
            put_own_fields(self, date, head.client_keep_alive);
            if head.chunked_to_client {
                put_field(self, b"Transfer-Encoding", b"chunked");
            }
        }
        self.put_slice(b"\r\n");
        Ok(())
    }
}

/// The client's copy of a response head as an HPACK header block, for weir's own HTTP/2
/// server ([`crate::engine::own::h2_server`]): status, the end-to-end fields with their names
/// lowercased (HTTP/2 requires it; HTTP/1 upstreams write them in any case), then `date`.
#[derive(Default)]
pub(crate) struct HpackResponseHead {
    pub(crate) block: BytesMut,
    /// The head is complete (a final response: 1xx heads are not relayed to HTTP/2).
    pub(crate) done: bool,
}

impl ResponseHeadOut for HpackResponseHead {
    fn start(
        &mut self,
        status: u16,
        _reason: Option<&str>,
        head: &[u8],
    ) -> std::result::Result<(), &'static str> {
        self.block.reserve(head.len());
        weir_http2::hpack::Encoder.status(status, &mut self.block);
        Ok(())
    }

    fn field(&mut self, field: RelayedField<'_>) -> std::result::Result<(), &'static str> {
        // httparse leaves no CR or LF in a value; HTTP/2 forbids NUL too.
        if field.value.contains(&0) {
            return Err("invalid response field value");
        }
        let mut name = SmallVec::<[u8; 32]>::from_slice(field.name);
        name.make_ascii_lowercase();
        weir_http2::hpack::Encoder.field(&name, field.value, &mut self.block);
        Ok(())
    }

    /// Adds weir's `date` (the upstream's is not relayed, as on every path).
    fn finish(&mut self, _: &ResponseHead, date: &[u8]) -> std::result::Result<(), &'static str> {
        weir_http2::hpack::Encoder.field(b"date", date, &mut self.block);
        self.done = true;
        Ok(())
    }
}

/// Writes one piece of body to the client: as a chunk when the response is re-framed as
/// chunked, else as it is.
pub(crate) fn put_body(out: &mut BytesMut, data: &[u8], chunked: bool) {
    if data.is_empty() {
        return;
    }
    if chunked {
        out.reserve(data.len() + 20);
        let mut size = [0u8; 16];
        let mut at = size.len();
        let mut n = data.len();
        loop {
            at -= 1;
            size[at] = b"0123456789abcdef"[n % 16];
            n /= 16;
            if n == 0 {
                break;
            }
        }
        out.put_slice(&size[at..]);
        out.put_slice(b"\r\n");
        out.put_slice(data);
        out.put_slice(b"\r\n");
    } else {
        out.put_slice(data);
    }
}

/// The end of a chunked body sent to the client.
pub(crate) const LAST_CHUNK: &[u8] = b"0\r\n\r\n";

#[cfg(test)]
mod tests {
    use super::*;

    #[allow(clippy::panic)]
    #[test]
    fn simple_heads_are_origin_form_http1_with_small_bodies_and_no_hop_by_hop_headers() {
        let taken: [&[u8]; 7] = [
            b"POST /p HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nxyz",
            b"PUT /p HTTP/1.1\r\nHost: a\r\ncontent-length: 2\r\n\r\nokGET / HTTP/1.1\r\n",
            b"GET / HTTP/1.1\r\nHost: a.example\r\n\r\n",
            b"GET /x?y=1 HTTP/1.0\r\nHost: a.example\r\nConnection: keep-alive\r\n\r\n",
            b"DELETE /x HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\nConnection: Close\r\n\r\n",
            b"HEAD / HTTP/1.1\r\nHost: a\r\nX-Anything: 1\r\n\r\nGET / HTTP/1.1\r\n",
            b"GET / HTTP/1.1\r\n\r\n",
        ];
        for head in taken {
            let simple = matches!(
                classify(head, &mut HeadFields::default()),
                Classified::Simple(_)
            );
            assert!(simple, "{}", String::from_utf8_lossy(head));
        }
        let head = b"GET /p?q HTTP/1.1\r\nhOsT: a.example:8080\r\n\r\n";
        let mut fields = HeadFields::default();
        let Classified::Simple(view) = classify(head, &mut fields) else {
            panic!("not simple");
        };
        assert_eq!(&head[view.host], b"a.example:8080");
        assert_eq!(&head[view.target], b"/p?q");
        assert_eq!(
            classify(b"GET / HTTP/1.1\r\nHost: a\r\n", &mut HeadFields::default()),
            Classified::Partial
        );
        assert_eq!(
            classify(
                b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nxy",
                &mut HeadFields::default()
            ),
            Classified::BodyPending
        );
        let handed_off: [&[u8]; 10] = [
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 65537\r\n\r\nxyz",
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\n\r\n",
            b"PUT / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: a\r\nTE: trailers\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close, x-secret\r\n\r\n",
            b"GET http://a/ HTTP/1.1\r\nHost: a\r\n\r\n",
            b"OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 003\r\n\r\nxyz",
        ];
        for head in handed_off {
            let other = matches!(
                classify(head, &mut HeadFields::default()),
                Classified::Other(_)
            );
            assert!(other, "{}", String::from_utf8_lossy(head));
        }
    }

    fn framing_of(head: &[u8]) -> Result<RequestBody, (u16, &'static str)> {
        match classify(head, &mut HeadFields::default()) {
            Classified::Other(framing) => Ok(framing.body),
            Classified::Simple(view) => Ok(view.framing().body),
            Classified::Malformed(r) => Err((r.status, r.reason)),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn every_request_is_framed_one_way_or_refused() {
        let framed: [(&[u8], RequestBody); 11] = [
            (b"GET / HTTP/1.1\r\nHost: a\r\n\r\n", RequestBody::None),
            (
                b"GET / HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\n\r\n",
                RequestBody::Tunnel,
            ),
            (
                b"GET / HTTP/1.0\r\nConnection: Upgrade\r\nUpgrade: x\r\n\r\n",
                RequestBody::None,
            ),
            (
                b"GET / HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\n\r\n",
                RequestBody::None,
            ),
            (
                "GET /\u{e9}\u{e9}\u{e9}\u{e9} HTTP/1.1\r\nHost: a\r\n\r\n".as_bytes(),
                RequestBody::None,
            ),
            (
                "GET /\u{e9}\u{e9}\u{e9}\u{e9}?q HTTP/1.1\r\nHost: a\r\n\r\n".as_bytes(),
                RequestBody::None,
            ),
            (
                b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n",
                RequestBody::None,
            ),
            (
                b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 70000\r\n\r\n",
                RequestBody::Length(70_000),
            ),
            (
                b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n",
                RequestBody::Chunked,
            ),
            (
                b"GET / HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
                RequestBody::Tunnel,
            ),
            (b"\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n", RequestBody::None),
        ];
        for (head, body) in framed {
            assert_eq!(
                framing_of(head),
                Ok(body),
                "{}",
                String::from_utf8_lossy(head)
            );
        }
        let refused: [(&[u8], u16, &str); 22] = [
            (b"POST / HTTP/1.1\r\nHost: a\r\nUpgrade: x\r\nContent-Length: 3\r\n\r\nabc", 400, "upgrade_with_body"),
            (b"POST / HTTP/1.1\r\nHost: a\r\nUpgrade: x\r\nTransfer-Encoding: chunked\r\n\r\n", 400, "upgrade_with_body"),
            (b"GET GET /b HTTP/1.1\r\nHost: a\r\n\r\n", 400, "invalid_http_version"),
            (b"GET /a b HTTP/1.1\r\nHost: a\r\n\r\n", 400, "invalid_http_version"),
            (b"GET  /a HTTP/1.1\r\nHost: a\r\n\r\n", 400, "invalid_request_line"),
            (b"GET /a  HTTP/1.1\r\nHost: a\r\n\r\n", 400, "invalid_http_version"),
            (b"GET /a HTTP/1.1 \r\nHost: a\r\n\r\n", 400, "invalid_line_ending"),
            (b"GET /a HTTP/2.0\r\nHost: a\r\n\r\n", 400, "invalid_http_version"),
            (b"GET a HTTP/1.1\r\nHost: a\r\n\r\n", 400, "invalid_request_target"),
            (b"CONNECT a:443 HTTP/1.1\r\nHost: a\r\n\r\n", 400, "invalid_request_target"),
            (b"GET * HTTP/1.1\r\nHost: a\r\n\r\n", 400, "invalid_request_target"),
            (b"G(T / HTTP/1.1\r\nHost: a\r\n\r\n", 400, "invalid_request_line"),
            (b"GET / HTTP/1.1\r\nBad Header: x\r\n\r\n", 400, "invalid_header_name"),
            (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3, 3\r\n\r\nxyz", 400, "invalid_content_length"),
            (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +3\r\n\r\nxyz", 400, "invalid_content_length"),
            (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\nxyz", 400, "duplicate_content_length"),
            (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n", 400, "content_length_with_transfer_encoding"),
            (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n", 400, "duplicate_transfer_encoding"),
            (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", 501, "unsupported_transfer_encoding"),
            (b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", 400, "transfer_encoding_in_http10"),
            (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer_Encoding: chunked\r\n\r\n", 400, "underscore_in_guarded_field"),
            (b"GET / HTTP/1.1\r\nHost: u@a\r\n\r\n", 400, "invalid_host"),
        ];
        for (head, status, reason) in refused {
            assert_eq!(
                framing_of(head),
                Err((status, reason)),
                "{}",
                String::from_utf8_lossy(head)
            );
        }
        // Underscores elsewhere are a backend's business.
        assert_eq!(
            framing_of(b"GET / HTTP/1.1\r\nHost: a\r\nX_Custom: 1\r\n\r\n"),
            Ok(RequestBody::None)
        );
    }

    const DATE: &[u8] = b"Mon, 23 Nov 2026 10:00:00 GMT";

    fn client_11() -> ClientSide {
        ClientSide {
            version: ClientVersion::Http11,
            keep_alive: true,
            head_request: false,
        }
    }

    fn head_of(
        raw: &[u8],
        client: ClientSide,
    ) -> (
        std::result::Result<Option<ResponseHead>, &'static str>,
        String,
    ) {
        let mut out = BytesMut::new();
        let head = response_head(raw, client, DATE, &[], &mut out);
        (head, String::from_utf8_lossy(&out).into_owned())
    }

    #[test]
    fn response_heads_are_copied_without_hop_by_hop_fields() {
        let raw = b"HTTP/1.1 200 Fine\r\nServer: up\r\nDate: yesterday\r\nConnection: keep-alive, X-Hop\r\nX-Hop: 1\r\nKeep-Alive: timeout=5\r\nContent-Length: 2\r\nX-Kept: yes\r\n\r\nok";
        let (head, out) = head_of(raw, client_11());
        let head = head.expect("valid").expect("complete");
        assert_eq!(head.status, 200);
        assert_eq!(head.framing, BodyFraming::Length(2));
        assert_eq!(head.head_len, raw.len() - 2);
        assert!(head.upstream_keep_alive && head.client_keep_alive && !head.chunked_to_client);
        assert_eq!(
            out,
            "HTTP/1.1 200 Fine\r\nServer: up\r\nContent-Length: 2\r\nX-Kept: yes\r\n\
             Date: Mon, 23 Nov 2026 10:00:00 GMT\r\nConnection: keep-alive\r\n\r\n"
        );
        // An HTTP/1.0 upstream closes unless it says keep-alive; `close` closes any.
        let (head, _) = head_of(b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n", client_11());
        assert!(!head.expect("valid").expect("complete").upstream_keep_alive);
        let (head, _) = head_of(
            b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n",
            client_11(),
        );
        assert!(!head.expect("valid").expect("complete").upstream_keep_alive);
        // A missing reason phrase gets the standard one.
        let (_, out) = head_of(b"HTTP/1.1 404 \r\nContent-Length: 0\r\n\r\n", client_11());
        assert!(out.starts_with("HTTP/1.1 404 Not Found\r\n"), "{out}");
        let (head, _) = head_of(b"HTTP/1.1 200 OK\r\nContent-Len", client_11());
        assert_eq!(head, Ok(None));
        // Lines that end in a bare LF, or in whitespace after the value, reach the client
        // ending in CRLF; the others as they came.
        let (_, out) = head_of(
            b"HTTP/1.1 200 OK\r\nX-A: a\nX-B:b \r\nX-C:  c\r\nContent-Length: 0\r\n\r\n",
            client_11(),
        );
        assert_eq!(
            out,
            "HTTP/1.1 200 OK\r\nX-A: a\r\nX-B: b\r\nX-C:  c\r\nContent-Length: 0\r\n\
             Date: Mon, 23 Nov 2026 10:00:00 GMT\r\nConnection: keep-alive\r\n\r\n"
        );
    }

    #[test]
    fn http2_response_heads_carry_the_end_to_end_fields_with_their_values() {
        let raw = b"HTTP/1.1 200 Fine\r\nServer: up\r\nConnection: keep-alive, X-Hop\r\n\
            X-Hop: 1\r\nSet-Cookie: a=1\r\nX-Odd:  spaced \t\r\nSet-Cookie: b=2\nX-E:\r\n\
            Content-Length: 2\r\n\r\nok";
        let client = ClientSide {
            version: ClientVersion::Http2,
            ..client_11()
        };
        let mut out = HpackResponseHead::default();
        let head = response_head(raw, client, b"Mon, 23 Nov 2026 10:00:00 GMT", &[], &mut out);
        assert_eq!(head.expect("valid").expect("complete").status, 200);
        assert!(out.done);
        let mut fields: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
        weir_http2::hpack::Decoder::new(4096)
            .decode(&out.block.freeze(), 64 * 1024, |f| {
                fields.push((f.name.to_vec(), f.value.to_vec()))
            })
            .expect("a valid HPACK block");
        // As received, names lowercased, the connection's fields and the upstream's date
        // dropped, weir's date last.
        let expected: [(&[u8], &[u8]); 8] = [
            (b":status", b"200"),
            (b"server", b"up"),
            (b"set-cookie", b"a=1"),
            (b"x-odd", b"spaced"),
            (b"set-cookie", b"b=2"),
            (b"x-e", b""),
            (b"content-length", b"2"),
            (b"date", b"Mon, 23 Nov 2026 10:00:00 GMT"),
        ];
        let fields: Vec<(&[u8], &[u8])> = fields
            .iter()
            .map(|(n, v)| (n.as_slice(), v.as_slice()))
            .collect();
        assert_eq!(fields, expected);
    }

    #[test]
    fn response_framing_follows_rfc_9112_and_reframes_for_the_client() {
        let chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n";
        let (head, out) = head_of(chunked, client_11());
        let head = head.expect("valid").expect("complete");
        assert_eq!(head.framing, BodyFraming::Chunked);
        assert!(head.chunked_to_client && head.client_keep_alive);
        assert!(out.ends_with("Connection: keep-alive\r\nTransfer-Encoding: chunked\r\n\r\n"));
        // HTTP/1.0 clients get the bare body, delimited by the close.
        let http10 = ClientSide {
            version: ClientVersion::Http10,
            ..client_11()
        };
        let (head, out) = head_of(chunked, http10);
        let head = head.expect("valid").expect("complete");
        assert!(!head.chunked_to_client && !head.client_keep_alive);
        assert!(out.ends_with("Connection: close\r\n\r\n"), "{out}");
        let (head, _) = head_of(b"HTTP/1.1 200 OK\r\nServer: x\r\n\r\n", client_11());
        let head = head.expect("valid").expect("complete");
        assert_eq!(head.framing, BodyFraming::UntilClose);
        assert!(head.chunked_to_client);
        for raw in [
            &b"HTTP/1.1 204 No Content\r\n\r\n"[..],
            b"HTTP/1.1 304 Not Modified\r\nContent-Length: 10\r\n\r\n",
        ] {
            let (head, _) = head_of(raw, client_11());
            assert_eq!(
                head.expect("valid").expect("complete").framing,
                BodyFraming::Empty
            );
        }
        let head_request = ClientSide {
            head_request: true,
            ..client_11()
        };
        let (head, out) = head_of(
            b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n",
            head_request,
        );
        assert_eq!(
            head.expect("valid").expect("complete").framing,
            BodyFraming::Empty
        );
        assert!(out.contains("Content-Length: 10\r\n"));
        // 1xx: relayed without Date or Connection to HTTP/1.1 clients, not at all to 1.0.
        let (head, out) = head_of(
            b"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n",
            client_11(),
        );
        assert_eq!(head.expect("valid").expect("complete").status, 103);
        assert_eq!(out, "HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n");
        let (_, out) = head_of(b"HTTP/1.1 100 Continue\r\n\r\n", http10);
        assert_eq!(out, "");
    }

    #[test]
    fn ambiguous_response_framing_is_an_error() {
        let refused: [&[u8]; 9] = [
            b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 3, 3\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: +3\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999999\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nX-Bad: a\0b\r\n\r\n",
        ];
        for raw in refused {
            let (head, out) = head_of(raw, client_11());
            assert!(head.is_err(), "{}", String::from_utf8_lossy(raw));
            assert_eq!(out, "", "nothing is written for a refused head");
        }
        // The same length twice is one length.
        let (head, _) = head_of(
            b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\ncontent-length: 3\r\n\r\n",
            client_11(),
        );
        assert_eq!(
            head.expect("valid").expect("complete").framing,
            BodyFraming::Length(3)
        );
        let mut many = b"HTTP/1.1 200 OK\r\n".to_vec();
        for i in 0..=MAX_RESPONSE_FIELDS {
            many.extend_from_slice(format!("X-{i}: 1\r\n").as_bytes());
        }
        many.extend_from_slice(b"\r\n");
        assert!(head_of(&many, client_11()).0.is_err());
    }

    #[test]
    fn body_pieces_are_framed_as_chunks_when_reframed() {
        let mut out = BytesMut::new();
        put_body(&mut out, &[b'a'; 26], true);
        put_body(&mut out, b"", true);
        put_body(&mut out, b"xyz", false);
        let expected = format!("1a\r\n{}\r\nxyz", "a".repeat(26));
        assert_eq!(&out[..], expected.as_bytes());
    }

    #[test]
    fn a_client_request_reads_as_pingoras_header_of_the_same_head() {
        let heads: [&[u8]; 5] = [
            b"GET /a/b?x=1&y=%20 HTTP/1.1\r\nHost: shop\r\nAccept: */*\r\naccept: text/html\r\nX-Custom-Case: v\r\n\r\n",
            b"HEAD / HTTP/1.0\r\nHost: shop\r\n\r\n",
            b"GET /page#section HTTP/1.1\r\nHost: shop\r\n\r\n",
            b"GET /caf%C3%A9/%ff?q=a/b HTTP/1.1\r\nHost: shop\r\n\r\n",
            b"DELETE /x?#y HTTP/1.1\r\nHost: shop\r\nCookie: a=1\r\nCookie: b=2\r\n\r\n",
        ];
        for raw in heads {
            let mut fields = HeadFields::default();
            let Classified::Simple(view) = classify(raw, &mut fields) else {
                panic!("simple: {}", String::from_utf8_lossy(raw));
            };
            let mut ours =
                ClientRequest::parse(Bytes::from_static(raw), view, &fields).expect("parses");
            // Pingora's own reading of the same head.
            let mut fields = [httparse::EMPTY_HEADER; 16];
            let mut parsed = httparse::Request::new(&mut fields);
            assert!(parsed.parse(raw).expect("parses").is_complete());
            let path = parsed.path.expect("target");
            let mut theirs =
                RequestHeader::build_no_case(parsed.method.expect("method"), path.as_bytes(), None)
                    .expect("builds");
            if parsed.version == Some(0) {
                theirs.set_version(http::Version::HTTP_10);
            }
            for field in parsed.headers.iter() {
                theirs
                    .append_header(field.name.to_string(), field.value)
                    .expect("appends");
            }
            let what = String::from_utf8_lossy(raw);
            same_view(&ours, &theirs, &what);
            // Both replace the target the same way (the normal form of the path).
            let normal = http::Uri::from_static("/normal?form");
            RequestView::set_uri(&mut ours, normal.clone());
            RequestView::set_uri(&mut theirs, normal);
            same_view(&ours, &theirs, &what);
        }
    }

    /// `ours` and `theirs` read the same through [`RequestView`] (field names in any case).
    fn same_view(ours: &ClientRequest, theirs: &RequestHeader, what: &str) {
        assert_eq!(ours.method(), theirs.method(), "{what}");
        assert_eq!(ours.uri(), theirs.uri(), "{what}");
        assert_eq!(ours.raw_path(), RequestView::raw_path(theirs), "{what}");
        assert_eq!(ours.version(), RequestView::version(theirs), "{what}");
        assert_eq!(ours.host(), theirs.host(), "{what}");
        let lowercase = |fields: Vec<(&[u8], &[u8])>| -> Vec<(Vec<u8>, Vec<u8>)> {
            fields
                .into_iter()
                .map(|(name, value)| (name.to_ascii_lowercase(), value.to_vec()))
                .collect()
        };
        assert_eq!(
            lowercase(ours.fields().collect()),
            lowercase(theirs.fields().collect()),
            "{what}"
        );
        for name in [
            http::header::HOST,
            http::header::ACCEPT,
            http::header::COOKIE,
        ] {
            assert_eq!(
                ours.field(&name),
                RequestView::field(theirs, &name),
                "{what}"
            );
            assert_eq!(
                ours.field_values(&name).collect::<Vec<_>>(),
                theirs.field_values(&name).collect::<Vec<_>>(),
                "{what}"
            );
        }
    }

    #[test]
    fn relayed_field_lines_end_in_crlf_whatever_the_client_used() {
        // A bare LF, extra and no whitespace after the colon, trailing whitespace, an empty
        // value: every line goes upstream ending in CRLF, in its order, with its value.
        let raw: &'static [u8] = b"GET / HTTP/1.1\r\nHost: a\nX-A:  spaced\r\nX-B:b\r\n\
            X-T: t \t\r\nX-E:\r\nConnection: close\r\nX-Last: z\n\r\n";
        let mut fields = HeadFields::default();
        let Classified::Simple(view) = classify(raw, &mut fields) else {
            panic!("simple");
        };
        let request = ClientRequest::parse(Bytes::from_static(raw), view, &fields).expect("parses");
        let mut out = BytesMut::new();
        request.write_upstream(&UpstreamHeaders::new(), &mut out);
        let text = String::from_utf8_lossy(&out).into_owned();
        let head = text
            .strip_suffix("\r\n\r\n")
            .expect("head ends in CRLF CRLF");
        let lines: Vec<&str> = head.split("\r\n").collect();
        // No bare CR or LF left inside a line.
        assert!(lines.iter().all(|l| !l.contains(['\r', '\n'])), "{text:?}");
        let fields: Vec<(String, String)> = lines[1..]
            .iter()
            .map(|line| {
                let (name, value) = line.split_once(':').expect("a field line");
                (
                    name.to_string(),
                    value.trim_matches([' ', '\t']).to_string(),
                )
            })
            .collect();
        let expected = [
            ("Host", "a"),
            ("X-A", "spaced"),
            ("X-B", "b"),
            ("X-T", "t"),
            ("X-E", ""),
            ("X-Last", "z"),
        ];
        let expected: Vec<(String, String)> = expected
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect();
        assert_eq!(fields, expected, "{text:?}");
        assert_eq!(lines[0], "GET / HTTP/1.1");
    }

    #[test]
    fn upstream_requests_keep_the_clients_fields_but_connection_and_replaced_ones() {
        let raw = b"POST /a/../b HTTP/1.1\r\nHost: shop\r\nX-Forwarded-For: 6.6.6.6\r\nConnection: keep-alive\r\nX-Custom-Case: v\r\nContent-Length: 3\r\n\r\nabc";
        let mut fields = HeadFields::default();
        let Classified::Simple(view) = classify(raw, &mut fields) else {
            panic!("simple");
        };
        assert_eq!((view.head_len, view.body_len), (raw.len() - 3, 3));
        let mut request =
            ClientRequest::parse(Bytes::from_static(raw), view, &fields).expect("parses");
        assert_eq!(request.method(), http::Method::POST);
        assert_eq!(
            request.field(&http::HeaderName::from_static("x-custom-case")),
            Some(&b"v"[..])
        );
        assert_eq!(request.body(), b"abc");
        assert!(request.wants_keep_alive() && !request.is_http10());
        let mut set = UpstreamHeaders::new();
        set.push((
            http::HeaderName::from_static("x-forwarded-for"),
            http::HeaderValue::from_static("10.0.0.1"),
        ));
        let mut out = BytesMut::new();
        request.set_uri(http::Uri::from_static("/b"));
        request.write_upstream(&set, &mut out);
        assert_eq!(
            &out[..],
            &b"POST /b HTTP/1.1\r\nHost: shop\r\nX-Custom-Case: v\r\nContent-Length: 3\r\n\
               x-forwarded-for: 10.0.0.1\r\n\r\nabc"[..]
        );
        let keep_alive = |raw: &'static [u8]| {
            let mut fields = HeadFields::default();
            let Classified::Simple(view) = classify(raw, &mut fields) else {
                panic!("simple");
            };
            ClientRequest::parse(Bytes::from_static(raw), view, &fields)
                .expect("parses")
                .wants_keep_alive()
        };
        assert!(!keep_alive(
            b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"
        ));
        assert!(!keep_alive(b"GET / HTTP/1.0\r\n\r\n"));
        assert!(keep_alive(
            b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"
        ));
    }
}
