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

use crate::http::fields::{is_connection_scoped, CONNECTION_SCOPED};
use crate::http::forwarded::UpstreamHeaders;
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
/// Most bytes of trailer fields after a chunked body (they are dropped, not forwarded).
const MAX_TRAILER_BYTES: usize = 16 * 1024;

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
pub(crate) struct HeadView {
    pub(crate) host: Range<usize>,
    pub(crate) target: Range<usize>,
    /// Length of the head, and of the body that follows it (all in the buffer).
    pub(crate) head_len: usize,
    pub(crate) body_len: usize,
    method: Range<usize>,
    http10: bool,
    /// What the client's `Connection` field said, if anything.
    connection_close: bool,
    connection_keep_alive: bool,
}

/// Where the fields of the head [`classify`] looked at last are, in order: one per client
/// connection, reused for each of its requests. (Kept inside each request's view, they were
/// copied with it every time it moved, ~400 bytes at a time.)
#[derive(Debug, Default)]
pub(crate) struct HeadFields(Vec<Field>);

/// What the bytes at the start of a connection's buffer are.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Classified {
    /// Not a complete head yet.
    Partial,
    /// A complete head with a small `Content-Length` body not all read yet.
    BodyPending,
    /// A complete request the direct path can serve whatever its route: HTTP/1.x in origin
    /// form, no body or a `Content-Length` body of at most [`MAX_BUFFERED_BODY`] bytes that is
    /// all in the buffer, no upgrade, no `Expect`, no hop-by-hop header but
    /// `Connection: keep-alive|close`.
    Simple(HeadView),
    /// A complete head for Pingora, or bytes that are no head at all (Pingora answers them).
    Other,
}

/// Classifies the bytes at the start of `head` (see [`Classified`]); where its fields are goes
/// to `fields` (replacing what was there).
pub(crate) fn classify(head: &[u8], fields: &mut HeadFields) -> Classified {
    let mut headers = uninit_headers::<MAX_CLASSIFIED_HEADERS>();
    let mut req = httparse::Request::new(&mut []);
    let head_len = match req.parse_with_uninit_headers(head, &mut headers) {
        // Longer heads are Pingora's (see MAX_CLASSIFIED_HEAD).
        Ok(httparse::Status::Complete(len)) if len <= MAX_CLASSIFIED_HEAD => len,
        Ok(httparse::Status::Complete(_)) => return Classified::Other,
        Ok(httparse::Status::Partial) => return Classified::Partial,
        Err(_) => return Classified::Other,
    };
    let Some(target) = req.path.filter(|p| p.starts_with('/')) else {
        return Classified::Other;
    };
    let mut host = 0..0;
    let mut body_len = None;
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
            host = range_in(head, value);
        } else if name.eq_ignore_ascii_case("content-length") {
            // One plain decimal length; anything else (a list, a sign, a second field) is
            // for Pingora's path and weir's framing checks there.
            let len = content_length(value)
                .and_then(|len| usize::try_from(len).ok())
                .filter(|len| *len <= MAX_BUFFERED_BODY);
            match (len, body_len) {
                (Some(len), None) => body_len = Some(len),
                _ => return Classified::Other,
            }
        } else if name.eq_ignore_ascii_case("connection") {
            if value.eq_ignore_ascii_case(b"close") {
                connection_close = true;
            } else if value.eq_ignore_ascii_case(b"keep-alive") {
                connection_keep_alive = true;
            } else {
                return Classified::Other;
            }
        } else if is_connection_scoped(name.as_bytes()) || name.eq_ignore_ascii_case("expect") {
            // A chunked body, an upgrade, `Expect` or another connection's field: Pingora's.
            return Classified::Other;
        }
    }
    let body_len = body_len.unwrap_or(0);
    if head.len() < head_len + body_len {
        return Classified::BodyPending;
    }
    Classified::Simple(HeadView {
        host,
        target: range_in(head, target.as_bytes()),
        head_len,
        body_len,
        // Always there in a complete head; an empty one would be refused as invalid.
        method: req.method.map_or(0..0, |m| range_in(head, m.as_bytes())),
        http10: req.version == Some(0),
        connection_close,
        connection_keep_alive,
    })
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
        for (name, value) in set {
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
/// sent one, the client's fields except connection-scoped ones and those `set` replaces, then
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
    if req.field(&http::header::HOST).is_none() {
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
    for (name, value) in set {
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
/// re-framed, `Transfer-Encoding: chunked`. A 1xx head is written only for HTTP/1.1 clients,
/// without `Date` or `Connection`. `Err` names what is wrong with a head that cannot be
/// relayed safely.
pub(crate) fn response_head(
    buf: &[u8],
    client: ClientSide,
    date: &[u8],
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
        if !hop_by_hop {
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

/// Where a [`ChunkedDecoder`] is in the body.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
enum ChunkState {
    /// In the hex size of a chunk (`digits` read so far).
    #[default]
    Size,
    /// After the size: optional whitespace and chunk extensions, up to CR.
    Extension,
    /// CR read after the size line; LF next.
    SizeLf,
    /// In a chunk's data (`remaining` bytes left).
    Data,
    /// CR then LF after a chunk's data.
    DataCr,
    DataLf,
    /// At the start of a trailer line (or the final CRLF).
    TrailerStart,
    /// In a trailer line, up to CR; then LF.
    Trailer,
    TrailerLf,
    /// CR of the final empty line read; LF next.
    EndLf,
    Done,
}

/// Decodes a chunked body incrementally (RFC 9112 §7.1), strictly: hex sizes of at most 16
/// digits, CRLF line ends only, no control characters in extensions or trailers. Extensions
/// and trailers are dropped.
#[derive(Debug, Default)]
pub(crate) struct ChunkedDecoder {
    state: ChunkState,
    digits: u8,
    remaining: u64,
    trailer_bytes: usize,
}

impl ChunkedDecoder {
    /// Whether the last chunk and the trailer section are through.
    pub(crate) fn is_done(&self) -> bool {
        self.state == ChunkState::Done
    }

    /// Decodes from `input`, passing each piece of body data to `data`. Returns how many
    /// bytes it consumed: all of `input`, or fewer when the body ended inside it.
    pub(crate) fn decode(
        &mut self,
        input: &[u8],
        mut data: impl FnMut(&[u8]),
    ) -> std::result::Result<usize, &'static str> {
        let mut at = 0;
        while at < input.len() {
            let byte = input[at];
            match self.state {
                ChunkState::Size => {
                    if let Some(digit) = (byte as char).to_digit(16) {
                        if self.digits == 16 {
                            return Err("chunk size too long");
                        }
                        self.digits += 1;
                        self.remaining = self.remaining << 4 | u64::from(digit);
                    } else if self.digits == 0 {
                        return Err("chunk without a size");
                    } else if byte == b'\r' {
                        self.state = ChunkState::SizeLf;
                    } else if byte == b';' || byte == b' ' || byte == b'\t' {
                        self.state = ChunkState::Extension;
                    } else {
                        return Err("invalid chunk size");
                    }
                }
                ChunkState::Extension => {
                    if byte == b'\r' {
                        self.state = ChunkState::SizeLf;
                    } else if byte.is_ascii_control() && byte != b'\t' {
                        return Err("control character in chunk extension");
                    }
                }
                ChunkState::SizeLf => {
                    if byte != b'\n' {
                        return Err("chunk size line without CRLF");
                    }
                    self.state = if self.remaining == 0 {
                        ChunkState::TrailerStart
                    } else {
                        ChunkState::Data
                    };
                }
                ChunkState::Data => {
                    let available = (input.len() - at) as u64;
                    let take = self.remaining.min(available) as usize;
                    data(&input[at..at + take]);
                    self.remaining -= take as u64;
                    at += take;
                    if self.remaining == 0 {
                        self.state = ChunkState::DataCr;
                    }
                    continue;
                }
                ChunkState::DataCr => {
                    if byte != b'\r' {
                        return Err("chunk data longer than its size");
                    }
                    self.state = ChunkState::DataLf;
                }
                ChunkState::DataLf => {
                    if byte != b'\n' {
                        return Err("chunk data without CRLF");
                    }
                    self.state = ChunkState::Size;
                    self.digits = 0;
                }
                ChunkState::TrailerStart => {
                    if byte == b'\r' {
                        self.state = ChunkState::EndLf;
                    } else if byte.is_ascii_control() {
                        return Err("control character in trailer");
                    } else {
                        self.state = ChunkState::Trailer;
                    }
                }
                ChunkState::Trailer => {
                    self.trailer_bytes += 1;
                    if self.trailer_bytes > MAX_TRAILER_BYTES {
                        return Err("trailer section too long");
                    }
                    if byte == b'\r' {
                        self.state = ChunkState::TrailerLf;
                    } else if byte.is_ascii_control() && byte != b'\t' {
                        return Err("control character in trailer");
                    }
                }
                ChunkState::TrailerLf => {
                    if byte != b'\n' {
                        return Err("trailer line without CRLF");
                    }
                    self.state = ChunkState::TrailerStart;
                }
                ChunkState::EndLf => {
                    if byte != b'\n' {
                        return Err("chunked body without final CRLF");
                    }
                    self.state = ChunkState::Done;
                    return Ok(at + 1);
                }
                ChunkState::Done => return Ok(at),
            }
            at += 1;
        }
        Ok(at)
    }
}

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
        let handed_off: [&[u8]; 15] = [
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 65537\r\n\r\nxyz",
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3, 3\r\n\r\nxyz",
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +3\r\n\r\nxyz",
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\nxyz",
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length:\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\n\r\n",
            b"PUT / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: a\r\nTE: trailers\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close, x-secret\r\n\r\n",
            b"GET http://a/ HTTP/1.1\r\nHost: a\r\n\r\n",
            b"CONNECT a:443 HTTP/1.1\r\nHost: a\r\n\r\n",
            b"OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n",
            b"GET / HTTP/1.1\r\nBad Header: x\r\n\r\n",
        ];
        for head in handed_off {
            let other = classify(head, &mut HeadFields::default()) == Classified::Other;
            assert!(other, "{}", String::from_utf8_lossy(head));
        }
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
        let head = response_head(raw, client, DATE, &mut out);
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
        let head = response_head(raw, client, b"Mon, 23 Nov 2026 10:00:00 GMT", &mut out);
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

    fn decode_all(
        input: &[u8],
        step: usize,
    ) -> std::result::Result<(Vec<u8>, usize), &'static str> {
        let mut decoder = ChunkedDecoder::default();
        let mut body = Vec::new();
        let mut at = 0;
        while at < input.len() && !decoder.is_done() {
            let end = (at + step).min(input.len());
            at += decoder.decode(&input[at..end], |d| body.extend_from_slice(d))?;
        }
        assert!(decoder.is_done(), "body not finished");
        Ok((body, at))
    }

    #[test]
    fn chunked_bodies_decode_in_any_pieces_and_stop_at_their_end() {
        let input = b"5\r\nhello\r\n7;ext=\"x\"\r\n, world\r\nA \r\n0123456789\r\n0\r\nX-Trailer: t\r\n\r\nHTTP/1.1 200";
        let end = input.len() - b"HTTP/1.1 200".len();
        for step in [1, 2, 3, 7, input.len()] {
            let (body, consumed) = decode_all(input, step).expect("valid");
            assert_eq!(body, b"hello, world0123456789", "step {step}");
            assert_eq!(consumed, end, "step {step}");
        }
        let (body, _) = decode_all(b"0\r\n\r\n", 1).expect("valid");
        assert!(body.is_empty());
        let refused: [&[u8]; 8] = [
            b"\r\n",
            b"g\r\n",
            b"5\nhello\r\n0\r\n\r\n",
            b"3\r\nhello\r\n0\r\n\r\n",
            b"5\r\nhello\n0\r\n\r\n",
            b"11111111111111111\r\n",
            b"5;a\0b\r\nhello\r\n0\r\n\r\n",
            b"0\r\nX: 1\n\r\n",
        ];
        for input in refused {
            let mut decoder = ChunkedDecoder::default();
            let result = decoder.decode(input, |_| {});
            assert!(result.is_err(), "{}", String::from_utf8_lossy(input));
        }
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
