//! The real webhook router (`wati_ingest::http::webhook_routes`) driven in-process: the fuzzer
//! picks up to four requests (method, path, headers, how the body streams, which store
//! operations fail) against one fresh in-memory ledger and queue, and every answer is checked
//! against the documented table.
//!
//! Input layout: byte 0 is `n`, the next `n` bytes are the [`Control`] (read with `arbitrary`),
//! the rest is the main body. So `\0` followed by a fixture is a valid, authentic request, and the
//! body is mutated as raw bytes.

#![no_main]

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use arbitrary::{Arbitrary, Unstructured};
use axum::body::Body;
use axum::http::{header, HeaderName, HeaderValue, Method, Request, StatusCode};
use bytes::Bytes;
use http_body::{Frame, SizeHint};
use http_body_util::BodyExt;
use libfuzzer_sys::fuzz_target;
use tower::ServiceExt;
use wati_ingest::auth::SecretSet;
use wati_ingest::event::{idempotency_key, quarantine_key, WatiEvent};
use wati_ingest::http::{webhook_routes, WebhookService, DEFAULT_MAX_BODY_BYTES};
use wati_ingest::metrics::MetricsSink;
use wati_ingest::receiver::{Receiver, ReceiverSettings};
use wati_ingest::time::Clock;
use wati_ingest_fuzz::{
    encode_all, encode_segment, runtime, Contents, Faults, MemoryStore, FIXTURES, MAX_KEY_LEN,
    PREVIOUS_SECRET, SECRET,
};

/// The receiver's clock at the first request (the fixtures' base time).
const T0: i64 = 1_764_238_453;

/// `scripts/fuzz.sh` writes seeds by hand that rely on this layout (all fields before `more` take
/// 38 bytes; a `Step` before its `body` takes 34): keep it in step when changing fields.
#[derive(Arbitrary, Debug)]
struct Control {
    max_body: MaxBody,
    /// How long keys are remembered: the default 7 days, or shorter (so a later retry is new).
    ttl: Ttl,
    first: Shape,
    /// How many of `more` are sent after the first request (0..=3).
    more_count: u8,
    more: [Step; 3],
}

#[derive(Arbitrary, Debug)]
enum MaxBody {
    Default,
    Small(u16),
}

#[derive(Arbitrary, Debug)]
enum Ttl {
    Week,
    Zero,
    Seconds(u16),
}

#[derive(Arbitrary, Debug)]
struct Step {
    /// Seconds the receiver's clock moves on before this request.
    later_by: u32,
    shape: Shape,
    body: BodyChoice,
}

#[derive(Arbitrary, Debug)]
enum BodyChoice {
    /// The previous request's body again (a Wati retry).
    Again,
    /// The previous body with one more field first: same key, other body (as the v2 twin of a
    /// v1 callback is), so the receiver takes its variant path.
    Variant,
    /// One of the fixtures (v1/v2 twins, other events of the same message).
    Fixture(u8),
    /// The main body again, cut short.
    MainPrefix(u16),
    Main,
    Empty,
    Own(Vec<u8>),
}

#[derive(Arbitrary, Debug)]
struct Shape {
    method: MethodChoice,
    path: PathChoice,
    content_type: ContentType,
    content_length: ContentLength,
    transfer_encoding: TransferEncoding,
    extra_header: Option<(String, String)>,
    stream: StreamChoice,
    faults: Faults,
}

#[derive(Arbitrary, Debug)]
enum MethodChoice {
    Post,
    Get,
    Put,
    Head,
    Options,
    Delete,
    Patch,
    Other(String),
}

#[derive(Arbitrary, Debug)]
enum PathChoice {
    Correct,
    Previous,
    /// The secret with every byte percent-encoded: the same secret once decoded.
    PercentEncoded,
    WithQuery(String),
    /// Same length, last character changed.
    Wrong,
    Truncated(u8),
    Extended(String),
    CaseFlipped,
    Bare,
    BareSlash,
    Traversal(u8),
    /// `/webhook/<junk>`, one segment.
    Junk(String),
    /// A whole path of the fuzzer's choosing.
    Raw(String),
}

#[derive(Arbitrary, Debug)]
enum ContentType {
    Json,
    None,
    JsonCharset,
    Text,
    Form,
    Multipart,
    Junk(String),
}

#[derive(Arbitrary, Debug)]
enum ContentLength {
    None,
    Correct,
    Zero,
    Smaller(u16),
    Larger(u16),
    Huge,
    Negative,
    Twice,
    Junk(String),
}

#[derive(Arbitrary, Debug)]
enum TransferEncoding {
    None,
    Chunked,
    GzipChunked,
    Identity,
    Junk(String),
}

#[derive(Arbitrary, Debug)]
enum StreamChoice {
    /// One buffer with an exact size (what hyper gives for a `content-length` body).
    Full,
    /// Several frames, size unknown (a chunked upload).
    Chunks([u8; 4]),
    /// Several frames, then the connection breaks.
    BrokenAfter([u8; 2]),
}

/// What the path choice means for authentication.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    /// The secret segment decodes to an accepted secret.
    Authentic,
    /// The route matches but the secret does not (or is missing): 401.
    Denied,
    /// No webhook route matches: 404.
    NoRoute,
    /// Unknown (fuzzer-built paths may well spell the secret).
    Either,
}

/// Paths around the secret that must not be taken for it, and where each must end up.
fn traversals() -> Vec<(String, Expect)> {
    use Expect::*;
    let s = SECRET;
    vec![
        (format!("/webhook/../webhook/{s}"), NoRoute),
        (format!("/webhook/./{s}"), NoRoute),
        (format!("/webhook//{s}"), NoRoute),
        (format!("//webhook/{s}"), NoRoute),
        (format!("/webhook/{s}/"), NoRoute),
        (format!("/webhook/{s}/.."), NoRoute),
        (format!("/webhook/%2e%2e/{s}"), NoRoute),
        (format!("/webhook/..%2F{s}"), Denied),
        (format!("/webhook/{s}%00"), Denied),
        (format!("/webhook/{s}%2F"), Denied),
        (format!("/webhook/%2F{s}"), Denied),
        (format!("/webhook/{s}%20"), Denied),
        (format!("/webhook/%20{s}"), Denied),
        (format!("/webhook/{s};x"), Denied),
        (format!("/webhook/{s}%FF"), Denied),
        (format!("/WEBHOOK/{s}"), NoRoute),
        (format!("/webhook;/{s}"), NoRoute),
        (format!("/api/../webhook/{s}"), NoRoute),
        ("/webhook/../../etc/passwd".into(), NoRoute),
        ("/webhook/%2e%2e%2f%2e%2e%2fetc%2fpasswd".into(), Denied),
        ("/webhook/%7Bsecret%7D".into(), Denied),
        (
            "/webhook/{secret}".replace('{', "%7B").replace('}', "%7D"),
            Denied,
        ),
        ("/webhook/%".into(), Denied),
        ("/webhook/%ZZ".into(), Denied),
        ("/webhook/%C0%AF".into(), Denied),
        (format!("/webhook/{s}?secret={s}"), Authentic),
        (format!("/webhook/{s}#fragment"), Either),
        (format!("/webhook?secret={s}"), Denied),
        (format!("/{s}"), NoRoute),
        ("/".into(), NoRoute),
        ("*".into(), Either),
    ]
}

fn path_for(choice: &PathChoice) -> (String, Expect) {
    let s = SECRET;
    match choice {
        PathChoice::Correct => (format!("/webhook/{s}"), Expect::Authentic),
        PathChoice::Previous => (format!("/webhook/{PREVIOUS_SECRET}"), Expect::Authentic),
        PathChoice::PercentEncoded => (
            format!("/webhook/{}", encode_all(s.as_bytes())),
            Expect::Authentic,
        ),
        PathChoice::WithQuery(query) => (
            format!("/webhook/{s}?{}", encode_segment(query.as_bytes())),
            Expect::Authentic,
        ),
        PathChoice::Wrong => {
            let mut wrong = s[..s.len() - 1].to_owned();
            wrong.push(if s.ends_with('0') { '1' } else { '0' });
            (format!("/webhook/{wrong}"), Expect::Denied)
        }
        PathChoice::Truncated(n) => {
            let n = usize::from(*n) % s.len();
            (format!("/webhook/{}", &s[..n]), Expect::Denied)
        }
        PathChoice::Extended(junk) => {
            let junk = encode_segment(junk.as_bytes());
            // Non-empty junk never decodes to nothing, so this is never an accepted secret.
            let expect = if junk.is_empty() {
                Expect::Authentic
            } else {
                Expect::Denied
            };
            (format!("/webhook/{s}{junk}"), expect)
        }
        PathChoice::CaseFlipped => (
            format!("/webhook/{}", s.to_ascii_uppercase()),
            Expect::Denied,
        ),
        PathChoice::Bare => ("/webhook".into(), Expect::Denied),
        PathChoice::BareSlash => ("/webhook/".into(), Expect::Denied),
        PathChoice::Traversal(n) => {
            let all = traversals();
            all[usize::from(*n) % all.len()].clone()
        }
        PathChoice::Junk(junk) => (
            format!("/webhook/{}", encode_segment(junk.as_bytes())),
            Expect::Either,
        ),
        PathChoice::Raw(raw) => (raw.clone(), Expect::Either),
    }
}

/// A request body delivered in the frames the fuzzer chose, possibly ending in an error.
struct FuzzBody {
    frames: VecDeque<Bytes>,
    broken: bool,
    exact: Option<u64>,
}

impl http_body::Body for FuzzBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        if let Some(frame) = self.frames.pop_front() {
            return Poll::Ready(Some(Ok(Frame::data(frame))));
        }
        if self.broken {
            self.broken = false;
            return Poll::Ready(Some(Err(std::io::Error::new(
                std::io::ErrorKind::ConnectionReset,
                "connection reset",
            ))));
        }
        Poll::Ready(None)
    }

    fn is_end_stream(&self) -> bool {
        self.frames.is_empty() && !self.broken
    }

    fn size_hint(&self) -> SizeHint {
        match self.exact {
            Some(exact) => SizeHint::with_exact(exact),
            None => SizeHint::default(),
        }
    }
}

fn body_for(stream: &StreamChoice, body: &[u8]) -> (Body, bool) {
    let split = |cuts: &[u8]| {
        let mut frames = VecDeque::new();
        let mut rest = body;
        for &cut in cuts {
            let at = usize::from(cut).min(rest.len());
            let (head, tail) = rest.split_at(at);
            frames.push_back(Bytes::copy_from_slice(head));
            rest = tail;
        }
        frames.push_back(Bytes::copy_from_slice(rest));
        frames
    };
    match stream {
        StreamChoice::Full => (Body::from(body.to_vec()), false),
        StreamChoice::Chunks(cuts) => (
            Body::new(FuzzBody {
                frames: split(cuts),
                broken: false,
                exact: None,
            }),
            false,
        ),
        StreamChoice::BrokenAfter(cuts) => (
            Body::new(FuzzBody {
                frames: split(cuts),
                broken: true,
                exact: None,
            }),
            true,
        ),
    }
}

fn header_value(text: &str) -> Option<HeaderValue> {
    HeaderValue::from_str(text).ok()
}

/// Builds the request, or `None` when the fuzzer's method or path is not valid HTTP at all.
fn request_for(shape: &Shape, path: &str, body: &[u8]) -> Option<(Request<Body>, bool)> {
    let method = match &shape.method {
        MethodChoice::Post => Method::POST,
        MethodChoice::Get => Method::GET,
        MethodChoice::Put => Method::PUT,
        MethodChoice::Head => Method::HEAD,
        MethodChoice::Options => Method::OPTIONS,
        MethodChoice::Delete => Method::DELETE,
        MethodChoice::Patch => Method::PATCH,
        MethodChoice::Other(name) => Method::from_bytes(name.as_bytes()).ok()?,
    };
    let mut builder = Request::builder().method(method).uri(path);
    let headers = builder.headers_mut()?;
    let content_type = match &shape.content_type {
        ContentType::Json => Some("application/json".to_owned()),
        ContentType::None => None,
        ContentType::JsonCharset => Some("application/json; charset=utf-8".to_owned()),
        ContentType::Text => Some("text/plain".to_owned()),
        ContentType::Form => Some("application/x-www-form-urlencoded".to_owned()),
        ContentType::Multipart => Some("multipart/form-data; boundary=x".to_owned()),
        ContentType::Junk(junk) => Some(junk.clone()),
    };
    if let Some(value) = content_type.as_deref().and_then(header_value) {
        headers.insert(header::CONTENT_TYPE, value);
    }
    let length = body.len() as u64;
    let content_length = match &shape.content_length {
        ContentLength::None => None,
        ContentLength::Correct => Some(length.to_string()),
        ContentLength::Zero => Some("0".to_owned()),
        ContentLength::Smaller(by) => Some(length.saturating_sub(u64::from(*by)).to_string()),
        ContentLength::Larger(by) => Some((length + u64::from(*by) + 1).to_string()),
        ContentLength::Huge => Some(u64::MAX.to_string()),
        ContentLength::Negative => Some("-1".to_owned()),
        ContentLength::Twice => {
            headers.append(header::CONTENT_LENGTH, HeaderValue::from(length));
            Some((length + 1).to_string())
        }
        ContentLength::Junk(junk) => Some(junk.clone()),
    };
    if let Some(value) = content_length.as_deref().and_then(header_value) {
        headers.append(header::CONTENT_LENGTH, value);
    }
    let transfer_encoding = match &shape.transfer_encoding {
        TransferEncoding::None => None,
        TransferEncoding::Chunked => Some("chunked"),
        TransferEncoding::GzipChunked => Some("gzip, chunked"),
        TransferEncoding::Identity => Some("identity"),
        TransferEncoding::Junk(junk) => Some(junk.as_str()),
    };
    if let Some(value) = transfer_encoding.and_then(header_value) {
        headers.insert(header::TRANSFER_ENCODING, value);
    }
    if let Some((name, value)) = &shape.extra_header {
        if let (Ok(name), Some(value)) =
            (HeaderName::from_bytes(name.as_bytes()), header_value(value))
        {
            headers.append(name, value);
        }
    }
    let (body, broken) = body_for(&shape.stream, body);
    let request = builder.body(body).ok()?;
    Some((request, broken))
}

fuzz_target!(|data: &[u8]| {
    let Some((&n, rest)) = data.split_first() else {
        return;
    };
    let (control, main) = rest.split_at(usize::from(n).min(rest.len()));
    let Ok(control) = Control::arbitrary_take_rest(Unstructured::new(control)) else {
        return;
    };
    runtime().block_on(run(control, main));
});

async fn run(control: Control, main: &[u8]) {
    let store = Arc::new(MemoryStore::default());
    let max_body_bytes = match control.max_body {
        MaxBody::Default => DEFAULT_MAX_BODY_BYTES,
        MaxBody::Small(limit) => usize::from(limit),
    };
    let clock = Clock::manual(T0);
    // `..Default` so settings added to the receiver later need no change here.
    #[allow(clippy::needless_update)]
    let settings = ReceiverSettings {
        dedup_ttl_seconds: match control.ttl {
            Ttl::Week => 7 * 24 * 60 * 60,
            Ttl::Zero => 0,
            Ttl::Seconds(seconds) => i64::from(seconds),
        },
        clock: clock.clone(),
        ..ReceiverSettings::default()
    };
    let router = webhook_routes(Arc::new(WebhookService {
        receiver: Receiver::new(store.clone(), store.clone(), settings),
        secrets: SecretSet::new([SECRET, PREVIOUS_SECRET]).expect("valid secrets"),
        max_body_bytes,
        metrics: MetricsSink::Off,
    }));

    let mut previous: Vec<u8> = main.to_vec();
    let steps = std::iter::once((&control.first, None, 0)).chain(
        control.more[..usize::from(control.more_count % 4)]
            .iter()
            .map(|step| (&step.shape, Some(&step.body), step.later_by)),
    );
    for (shape, choice, later_by) in steps {
        clock.set(clock.now() + i64::from(later_by));
        let body: Vec<u8> = match choice {
            None | Some(BodyChoice::Main) => main.to_vec(),
            Some(BodyChoice::Again) => previous.clone(),
            Some(BodyChoice::Variant) => match previous.strip_prefix(b"{") {
                Some(rest) => [&b"{\"fuzzVariant\":1,"[..], rest].concat(),
                None => previous.clone(),
            },
            Some(BodyChoice::Fixture(n)) => FIXTURES[usize::from(*n) % FIXTURES.len()].to_vec(),
            Some(BodyChoice::MainPrefix(cut)) => main[..usize::from(*cut).min(main.len())].to_vec(),
            Some(BodyChoice::Empty) => Vec::new(),
            Some(BodyChoice::Own(own)) => own.clone(),
        };
        let (path, expect) = path_for(&shape.path);
        let Some((request, broken)) = request_for(shape, &path, &body) else {
            continue;
        };
        let is_post = request.method() == Method::POST;
        store.set_faults(shape.faults);
        let before = store.snapshot();
        let response = router
            .clone()
            .oneshot(request)
            .await
            .expect("the router is infallible");
        let status = response.status();
        let bytes = response
            .into_body()
            .collect()
            .await
            .expect("a buffered response body")
            .to_bytes();
        let after = store.snapshot();
        check(Check {
            status,
            answer: &bytes,
            expect,
            is_post,
            broken,
            faults: shape.faults,
            body: &body,
            max_body_bytes,
            before: &before,
            after: &after,
        });
        previous = body;
    }
}

struct Check<'a> {
    status: StatusCode,
    answer: &'a [u8],
    expect: Expect,
    is_post: bool,
    broken: bool,
    faults: Faults,
    body: &'a [u8],
    max_body_bytes: usize,
    before: &'a Contents,
    after: &'a Contents,
}

fn check(c: Check<'_>) {
    let status = c.status.as_u16();
    let untouched = c.before == c.after;
    let answer: Option<serde_json::Value> = serde_json::from_slice(c.answer).ok();
    match status {
        // Rejected before anything is read or stored: not a single store call.
        401 | 404 | 405 | 400 | 413 => assert!(untouched, "{status} touched the store"),
        200 | 503 => {}
        other => panic!("undocumented status {other}"),
    }
    if status != 404 && status != 405 {
        let answer = answer.as_ref().expect("a JSON answer");
        assert!(answer.is_object(), "{answer}");
    }
    // Only POST reaches the webhook handler.
    if !c.is_post {
        assert!(matches!(status, 404 | 405), "{status} for a non-POST");
        return;
    }
    match c.expect {
        Expect::Denied => assert_eq!(status, 401),
        Expect::NoRoute => assert_eq!(status, 404),
        Expect::Authentic => {
            let expected = if c.body.len() > c.max_body_bytes {
                Some(413)
            } else if c.broken {
                Some(400)
            } else if !c.faults.any() {
                Some(200)
            } else {
                None
            };
            if let Some(expected) = expected {
                assert_eq!(status, expected, "authentic request");
            }
        }
        Expect::Either => {}
    }
    match status {
        413 => assert!(c.body.len() > c.max_body_bytes),
        400 => assert!(c.broken, "400 without a broken body"),
        503 => {
            assert!(c.faults.any(), "503 without a store fault");
            assert!(c.answer_field("error").is_some(), "503 without an error");
        }
        200 => check_receipt(&c, answer.as_ref().expect("a JSON answer")),
        _ => {}
    }
}

impl Check<'_> {
    fn answer_field(&self, name: &str) -> Option<String> {
        let answer: serde_json::Value = serde_json::from_slice(self.answer).ok()?;
        answer.get(name)?.as_str().map(str::to_owned)
    }
}

/// A 200 names a key that is now durably held, consistent with the body.
fn check_receipt(c: &Check<'_>, answer: &serde_json::Value) {
    assert!(c.body.len() <= c.max_body_bytes);
    assert!(!c.broken);
    let outcome = answer["status"].as_str().expect("a status");
    let key = answer["key"].as_str().expect("a key");
    assert!(!key.is_empty() && key.len() <= MAX_KEY_LEN, "key {key:?}");
    let parsed = WatiEvent::parse(c.body);
    match outcome {
        "quarantined" => {
            assert!(parsed.is_err(), "a usable body was quarantined");
            assert_eq!(key, quarantine_key(c.body));
            let kept = c.after.quarantined.get(key).expect("quarantined durably");
            assert_eq!(kept.key, key);
        }
        "accepted" | "duplicate" => {
            let event = parsed.expect("only usable bodies are accepted");
            let expected = idempotency_key(&event, c.body);
            assert_eq!(key, expected);
            let text = std::str::from_utf8(c.body).expect("UTF-8");
            let enqueued = c.after.sent[c.before.sent.len()..]
                .iter()
                .any(|sent| sent.body == text && sent.key.starts_with(key));
            let marked = c.after.ledger.iter().any(|(k, row)| {
                k.starts_with(key) && row.redrive_at.is_some() && row.entry.body == c.body
            });
            let recorded = c.after.ledger.contains_key(key);
            // Accepted or duplicate, the event (or its variant) is on the queue or marked for
            // the sweeper: a duplicate is sent again, since the first send may have been lost.
            assert!(
                enqueued || marked,
                "{outcome} {key} is neither sent nor marked"
            );
            if outcome == "duplicate" {
                assert!(recorded, "duplicate {key} is not in the ledger");
            }
            if !c.faults.any() {
                assert!(enqueued, "{outcome} {key} was not sent");
            }
        }
        other => panic!("undocumented outcome {other}"),
    }
}
