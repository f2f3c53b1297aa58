//! The bad-input table, shared by `tests/local/bad_input.rs` (the real local server over HTTP)
//! and `tests/contract/bad_input.rs` (the Lambda routers over DynamoDB Local and the SQS
//! emulator), so that both backends are held to the same answers: README.md's table for
//! `POST /webhook/{secret}`, and 401 / 404 / 400 for the read API.
//!
//! A case is one request and what must come back: the HTTP status, the `status` field of the JSON
//! answer, and what is stored afterwards. Each suite runs the cases that answer "nothing stored"
//! first, on empty storage, and checks after each one that storage is still entirely empty.
//!
//! The wrong-types sweep ([`wrong_type_mutations`]) replaces, in real fixtures, the value of every
//! field with values of every JSON type: only a non-string `eventType` makes a body unusable.

#![allow(dead_code)] // each suite uses its own part of the table

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use serde_json::{json, Map, Value};

/// What the table needs to know about the server under test.
pub struct Setup<'a> {
    pub webhook_secret: &'a str,
    pub api_token: &'a str,
    pub max_body_bytes: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// `POST /webhook/{secret}`: the receiver.
    Webhook,
    /// `GET /v1/...`, `/healthz`: the read API.
    Read,
}

/// What must be stored after the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stored {
    /// Nothing at all: no ledger entry, no quarantine entry, nothing queued.
    Nothing,
    /// One new quarantine entry holding the raw body; nothing in the ledger, nothing queued.
    Quarantined,
    /// One new ledger entry holding the raw body, and one event queued.
    Accepted,
}

/// Which backend a known bug shows on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Local,
    Aws,
}

#[derive(Debug, Clone)]
pub struct Case {
    pub name: String,
    pub target: Target,
    pub method: &'static str,
    /// Path and query exactly as sent on the wire (percent-encodings kept).
    pub path: String,
    pub headers: Vec<(&'static str, Vec<u8>)>,
    pub body: Vec<u8>,
    /// The documented status (two when either is documented, e.g. 400 or 404 for a bad id).
    pub statuses: Vec<u16>,
    /// The `status` field of the JSON answer (`accepted`, `quarantined`), when there is one.
    pub outcome: Option<&'static str>,
    pub stored: Stored,
    /// The local test that already covers this case: the local suite skips it, the AWS suite
    /// runs it (nothing else sends it through the Lambda routers).
    pub covered_locally_by: Option<&'static str>,
    /// A case that shows a known bug on one backend: that backend's table skips it and runs it
    /// in an `#[ignore = "bug: ..."]` test instead.
    pub known_bug: Option<(Backend, &'static str)>,
}

impl Case {
    /// `POST path` with a JSON content type, answered `200 accepted` unless said otherwise.
    pub fn post(
        name: impl Into<String>,
        path: impl Into<String>,
        body: impl Into<Vec<u8>>,
    ) -> Case {
        Case {
            name: name.into(),
            target: Target::Webhook,
            method: "POST",
            path: path.into(),
            headers: vec![("content-type", b"application/json".to_vec())],
            body: body.into(),
            statuses: vec![200],
            outcome: Some("accepted"),
            stored: Stored::Accepted,
            covered_locally_by: None,
            known_bug: None,
        }
    }

    /// `GET path` on the read API with `authorization`, answered 404 unless said otherwise.
    pub fn get(
        name: impl Into<String>,
        path: impl Into<String>,
        authorization: Option<&[u8]>,
    ) -> Case {
        Case {
            name: name.into(),
            target: Target::Read,
            method: "GET",
            path: path.into(),
            headers: authorization
                .map(|value| vec![("authorization", value.to_vec())])
                .unwrap_or_default(),
            body: Vec::new(),
            statuses: vec![404],
            outcome: None,
            stored: Stored::Nothing,
            covered_locally_by: None,
            known_bug: None,
        }
    }

    fn unauthorized(self) -> Case {
        self.answers(&[401], None, Stored::Nothing)
    }

    fn quarantined(self) -> Case {
        self.answers(&[200], Some("quarantined"), Stored::Quarantined)
    }

    fn answers(mut self, statuses: &[u16], outcome: Option<&'static str>, stored: Stored) -> Case {
        self.statuses = statuses.to_vec();
        self.outcome = outcome;
        self.stored = stored;
        self
    }

    fn content_type(mut self, value: Option<&str>) -> Case {
        self.headers.retain(|(name, _)| *name != "content-type");
        if let Some(value) = value {
            self.headers
                .push(("content-type", value.as_bytes().to_vec()));
        }
        self
    }

    fn header(mut self, name: &'static str, value: impl AsRef<[u8]>) -> Case {
        self.headers.push((name, value.as_ref().to_vec()));
        self
    }

    fn method(mut self, method: &'static str) -> Case {
        self.method = method;
        self
    }

    fn covered_by(mut self, test: &'static str) -> Case {
        self.covered_locally_by = Some(test);
        self
    }

    fn bug(mut self, backend: Backend, what: &'static str) -> Case {
        self.known_bug = Some((backend, what));
        self
    }

    /// Whether `backend` should run this case in its table (not a known bug there).
    pub fn runs_on(&self, backend: Backend) -> bool {
        !matches!(self.known_bug, Some((on, _)) if on == backend)
    }

    pub fn header_value(&self, name: &str) -> Option<&[u8]> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_slice())
    }
}

impl std::fmt::Display for Case {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let path: String = self.path.chars().take(120).collect();
        write!(f, "[{}] {} {path}", self.name, self.method)
    }
}

pub fn fixtures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/events")
}

/// Every fixture as (file name, body), in file order.
pub fn fixtures() -> Vec<(String, Vec<u8>)> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(fixtures_dir())
        .expect("fixtures dir")
        .map(|entry| entry.expect("entry").path())
        .filter(|path| path.extension().is_some_and(|e| e == "json"))
        .collect();
    paths.sort();
    paths
        .into_iter()
        .map(|path| {
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read(&path).expect("read fixture"))
        })
        .collect()
}

pub fn fixture(prefix: &str) -> Vec<u8> {
    fixtures()
        .into_iter()
        .find(|(name, _)| name.starts_with(prefix))
        .unwrap_or_else(|| panic!("no fixture {prefix}"))
        .1
}

/// A delivered-status event of its own message (`bad-input-<n>`), plus `extra` fields.
fn event(n: &str, extra: Value) -> Vec<u8> {
    let mut object = json!({
        "eventType": "sentMessageDELIVERED",
        "id": format!("bad-input-{n}"),
        "whatsappMessageId": format!("wamid.BADINPUT{n}"),
        "timestamp": "1764238518",
    });
    if let (Value::Object(base), Value::Object(extra)) = (&mut object, extra) {
        base.extend(extra);
    }
    serde_json::to_vec(&object).unwrap()
}

/// `{"eventType":"message","id":"bad-input-<n>","data":<depth levels of objects>}`.
fn nested_event(n: &str, depth: usize) -> Vec<u8> {
    format!(
        r#"{{"eventType":"message","id":"bad-input-{n}","data":{}1{}}}"#,
        r#"{"a":"#.repeat(depth),
        "}".repeat(depth)
    )
    .into_bytes()
}

/// A valid `message` event of exactly `size` bytes (its text is padding).
fn event_of_size(n: &str, size: usize) -> Vec<u8> {
    let head = format!(r#"{{"eventType":"message","id":"bad-input-{n}","text":""#);
    let tail = r#""}"#;
    let padding = size - head.len() - tail.len();
    let mut body = head.into_bytes();
    body.extend(vec![b'a'; padding]);
    body.extend(tail.as_bytes());
    assert_eq!(body.len(), size);
    body
}

fn utf16le_with_bom(text: &str) -> Vec<u8> {
    let mut bytes = vec![0xFF, 0xFE];
    for unit in text.encode_utf16() {
        bytes.extend(unit.to_le_bytes());
    }
    bytes
}

/// `POST /webhook/{secret}`: every answer in README.md's table, for bad and odd requests.
pub fn webhook_cases(setup: &Setup) -> Vec<Case> {
    let secret = setup.webhook_secret;
    let url = format!("/webhook/{secret}");
    let body = fixture("07-");
    let mut same_length = secret.as_bytes().to_vec();
    *same_length.last_mut().unwrap() ^= 1;
    let same_length = String::from_utf8(same_length).unwrap();
    let lookalike = secret.replacen('e', "%D0%B5", 1); // Cyrillic "е" for the first "e"
    assert_ne!(
        lookalike, secret,
        "the secret needs an 'e' for the lookalike case"
    );
    let over_limit = event_of_size("over-limit", setup.max_body_bytes + 1);
    let at_limit = event_of_size("at-limit", setup.max_body_bytes);
    let webhook = "webhook::wrong_or_missing_secret_is_rejected_without_storing";
    let unusable = "webhook::unusable_bodies_are_quarantined_and_kept";

    let mut cases = vec![
        // --- Not authenticated: 401, nothing read or stored (README: "wrong or missing secret").
        Case::post("wrong secret", "/webhook/nope", body.clone())
            .unauthorized()
            .covered_by(webhook),
        Case::post("no secret", "/webhook", body.clone())
            .unauthorized()
            .covered_by(webhook),
        Case::post("empty secret", "/webhook/", body.clone())
            .unauthorized()
            .covered_by(webhook),
        Case::post("secret cut short", format!("/webhook/{}", &secret[..10]), body.clone())
            .unauthorized()
            .covered_by(webhook),
        Case::post("secret with a character added", format!("{url}x"), body.clone())
            .unauthorized()
            .covered_by(webhook),
        Case::post("secret and an encoded slash", format!("{url}%2F"), body.clone())
            .unauthorized()
            .covered_by(webhook),
        Case::post("wrong secret of the same length", format!("/webhook/{same_length}"), body.clone())
            .unauthorized(),
        Case::post("secret one character short", format!("/webhook/{}", &secret[..secret.len() - 1]), body.clone())
            .unauthorized(),
        Case::post("secret in upper case", format!("/webhook/{}", secret.to_uppercase()), body.clone())
            .unauthorized(),
        Case::post("a 16-character secret (the minimum length)", "/webhook/0123456789abcdef", body.clone())
            .unauthorized(),
        Case::post("an 8 KiB secret", format!("/webhook/{}", "s".repeat(8 * 1024)), body.clone())
            .unauthorized(),
        Case::post("secret with a NUL appended", format!("{url}%00"), body.clone()).unauthorized(),
        Case::post("secret with an encoded space appended", format!("{url}%20"), body.clone())
            .unauthorized(),
        Case::post("secret that is not UTF-8", "/webhook/%FF%FE%FD%FC%FB%FA%F9%F8%F7%F6%F5%F4%F3%F2%F1%F0", body.clone())
            .unauthorized(),
        Case::post("secret with a Unicode lookalike", format!("/webhook/{lookalike}"), body.clone())
            .unauthorized(),
        Case::post("secret in the query string", format!("/webhook?secret={secret}"), body.clone())
            .unauthorized(),
        Case::post("secret in the query string, empty segment", format!("/webhook/?secret={secret}"), body.clone())
            .unauthorized(),
        Case::post("secret as a bearer token", "/webhook", body.clone())
            .header("authorization", format!("Bearer {secret}"))
            .unauthorized(),
        Case::post("secret in a custom header", "/webhook", body.clone())
            .header("x-webhook-secret", secret)
            .unauthorized(),
        Case::post("the read API token as the secret", format!("/webhook/{}", setup.api_token), body.clone())
            .unauthorized(),
        Case::post("wrong secret and an unusable body", "/webhook/wrong-secret-0123456789", b"{not json".to_vec())
            .unauthorized(),
        Case::post("wrong secret and a body over the limit", "/webhook/wrong-secret-0123456789", over_limit.clone())
            .unauthorized(),
        Case::post("wrong secret and a text/plain body", "/webhook/wrong-secret-0123456789", body.clone())
            .content_type(Some("text/plain"))
            .unauthorized(),
        // --- Not the webhook: no route, nothing stored.
        Case::post("an extra path segment after the secret", format!("{url}/extra"), body.clone())
            .answers(&[404], None, Stored::Nothing),
        Case::post("GET instead of POST", url.clone(), Vec::new())
            .method("GET")
            .answers(&[405], None, Stored::Nothing),
        Case::post("PUT instead of POST", url.clone(), body.clone())
            .method("PUT")
            .answers(&[405], None, Stored::Nothing),
        // --- Too large: 413, nothing stored.
        Case::post("one byte over MAX_BODY_BYTES", url.clone(), over_limit)
            .answers(&[413], None, Stored::Nothing),
        // --- Authentic and usable: 200 accepted, whatever the content type.
        // On AWS the queued copy (JSON-escaped, with its key) is larger than 256 KiB: it relies
        // on SQS's 1 MiB message limit.
        Case::post("exactly MAX_BODY_BYTES", url.clone(), at_limit),
        Case::post("a 128 KiB event", url.clone(), event_of_size("128k", 128 * 1024)),
        Case::post("text/plain content type", url.clone(), event("text-plain", json!({})))
            .content_type(Some("text/plain")),
        Case::post("no content type", url.clone(), event("no-type", json!({}))).content_type(None),
        Case::post("application/xml content type", url.clone(), event("xml", json!({})))
            .content_type(Some("application/xml")),
        Case::post("application/octet-stream content type", url.clone(), event("octets", json!({})))
            .content_type(Some("application/octet-stream")),
        Case::post("JSON declared as latin-1", url.clone(), event("latin1", json!({})))
            .content_type(Some("application/json; charset=iso-8859-1")),
        Case::post("a made-up content type", url.clone(), event("made-up", json!({})))
            .content_type(Some("x/y; q=???")),
        // Unknown or odd eventType strings: archived under a body-hash key, never dropped.
        Case::post("eventType in upper case (unknown)", url.clone(), event("upper", json!({"eventType": "SENTMESSAGEDELIVERED"}))),
        Case::post("empty eventType string", url.clone(), event("empty-type", json!({"eventType": ""}))),
        Case::post("eventType of 20 000 characters", url.clone(), event("long-type", json!({"eventType": "x".repeat(20_000)}))),
        Case::post("eventType with a NUL and Unicode", url.clone(), event("nul-type", json!({"eventType": "message\u{0}✓"}))),
        Case::post("unknown event type alone", url.clone(), br#"{"eventType":"somethingWatiAddsNextYear"}"#.to_vec()),
        Case::post("JSON nested 100 levels inside a field", url.clone(), nested_event("nested-100", 100)),
        // Timestamps out of range or unreadable: the event is dated by its receipt.
        Case::post("timestamp -1 (string)", url.clone(), event("ts-neg-string", json!({"timestamp": "-1"}))),
        Case::post("timestamp -1 (number)", url.clone(), event("ts-neg", json!({"timestamp": -1}))),
        Case::post("timestamp 0", url.clone(), event("ts-zero", json!({"timestamp": 0}))),
        Case::post("timestamp in the year 10000", url.clone(), event("ts-10000", json!({"timestamp": "253402300800"}))),
        Case::post("timestamp 99999999999999", url.clone(), event("ts-huge", json!({"timestamp": "99999999999999"}))),
        Case::post("timestamp past i64 (string)", url.clone(), event("ts-i64-string", json!({"timestamp": "9223372036854775808"}))),
        Case::post("timestamp u64::MAX (number)", url.clone(), event("ts-u64", json!({"timestamp": u64::MAX}))),
        Case::post("timestamp below i64::MIN (number)", url.clone(), event("ts-i64-min", json!({"timestamp": -9.3e18}))),
        Case::post("timestamp with a fraction", url.clone(), event("ts-fraction", json!({"timestamp": 1764238518.5}))),
        Case::post("timestamp as an exponent string", url.clone(), event("ts-exp", json!({"timestamp": "1.764238518e9"}))),
        Case::post("timestamp 1e300", url.clone(), event("ts-1e300", json!({"timestamp": 1e300}))),
        Case::post("timestamp in milliseconds", url.clone(), event("ts-ms", json!({"timestamp": "1764238518000"}))),
        Case::post("timestamp as an ISO date", url.clone(), event("ts-iso", json!({"timestamp": "2025-11-27T10:15:18Z"}))),
        Case::post("empty timestamp", url.clone(), event("ts-empty", json!({"timestamp": ""}))),
        // --- Authentic but unusable: 200 quarantined, raw body kept (Wati must not retry).
        Case::post("not JSON", url.clone(), b"not json at all".to_vec())
            .quarantined()
            .covered_by(unusable),
        Case::post("a JSON array", url.clone(), b"[1,2,3]".to_vec())
            .quarantined()
            .covered_by(unusable),
        Case::post("no eventType", url.clone(), br#"{"id":"6734a1b2c3d4e5f601000099"}"#.to_vec())
            .quarantined()
            .covered_by(unusable),
        Case::post("eventType a number", url.clone(), br#"{"eventType":42}"#.to_vec())
            .quarantined()
            .covered_by(unusable),
        Case::post("bytes that are not UTF-8", url.clone(), b"\xff\xfe\xfd".to_vec())
            .quarantined()
            .covered_by(unusable),
        Case::post("empty body", url.clone(), Vec::new())
            .quarantined()
            .covered_by(unusable),
        Case::post("100 000 nested arrays", url.clone(), format!("{}{}", "[".repeat(100_000), "]".repeat(100_000)))
            .quarantined()
            .covered_by("webhook::deeply_nested_json_is_quarantined"),
        Case::post("whitespace only", url.clone(), b" \r\n\t ".to_vec()).quarantined(),
        Case::post("a JSON string", url.clone(), br#""sentMessageDELIVERED""#.to_vec()).quarantined(),
        Case::post("JSON null", url.clone(), b"null".to_vec()).quarantined(),
        Case::post("a JSON number", url.clone(), b"1764238518".to_vec()).quarantined(),
        Case::post("JSON true", url.clone(), b"true".to_vec()).quarantined(),
        Case::post("an empty object", url.clone(), b"{}".to_vec()).quarantined(),
        Case::post("eventType null", url.clone(), event("type-null", json!({"eventType": null}))).quarantined(),
        Case::post("eventType true", url.clone(), event("type-bool", json!({"eventType": true}))).quarantined(),
        Case::post("eventType an array", url.clone(), event("type-array", json!({"eventType": ["message"]}))).quarantined(),
        Case::post("eventType an object", url.clone(), event("type-object", json!({"eventType": {"name": "message"}}))).quarantined(),
        Case::post("event_type instead of eventType", url.clone(), br#"{"event_type":"message","id":"bad-input-snake"}"#.to_vec())
            .quarantined(),
        Case::post("truncated JSON", url.clone(), br#"{"eventType":"message","id":"bad-input-cut""#.to_vec())
            .quarantined(),
        Case::post("trailing garbage after the object", url.clone(), br#"{"eventType":"message","id":"bad-input-trail"} trailing"#.to_vec())
            .quarantined(),
        Case::post("two objects in one body", url.clone(), br#"{"eventType":"message","id":"bad-input-two-a"}{"eventType":"message","id":"bad-input-two-b"}"#.to_vec())
            .quarantined(),
        Case::post("a UTF-8 byte-order mark before the object", url.clone(), [b"\xEF\xBB\xBF".as_slice(), &event("bom", json!({}))].concat())
            .quarantined(),
        Case::post("invalid UTF-8 inside a string value", url.clone(), b"{\"eventType\":\"message\",\"id\":\"bad-input-utf8\",\"text\":\"\xc3\x28\"}".to_vec())
            .quarantined(),
        Case::post("an overlong UTF-8 encoding", url.clone(), b"{\"eventType\":\"message\",\"id\":\"bad-input-overlong\",\"text\":\"\xc0\xaf\"}".to_vec())
            .quarantined(),
        Case::post("a lone surrogate escape", url.clone(), br#"{"eventType":"message","id":"bad-input-surrogate","text":"\ud800"}"#.to_vec())
            .quarantined(),
        Case::post("a raw control character inside a string", url.clone(), b"{\"eventType\":\"message\",\"id\":\"bad-input-ctl\",\"text\":\"a\x01b\"}".to_vec())
            .quarantined(),
        Case::post("a NUL byte between tokens", url.clone(), b"{\"eventType\":\"message\",\x00\"id\":\"bad-input-nul\"}".to_vec())
            .quarantined(),
        Case::post("a number JSON cannot hold (1e400)", url.clone(), br#"{"eventType":"message","id":"bad-input-1e400","timestamp":1e400}"#.to_vec())
            .quarantined(),
        Case::post("JSON nested 10 000 levels inside a field", url.clone(), nested_event("nested-10000", 10_000))
            .quarantined(),
        Case::post("a UTF-16 body", url.clone(), utf16le_with_bom(r#"{"eventType":"message","id":"bad-input-utf16"}"#))
            .content_type(Some("application/json; charset=utf-16"))
            .quarantined(),
        Case::post("a form-encoded body", url.clone(), b"eventType=message&id=bad-input-form".to_vec())
            .content_type(Some("application/x-www-form-urlencoded"))
            .quarantined(),
        Case::post("a multipart body", url.clone(), b"--b\r\ncontent-disposition: form-data; name=\"eventType\"\r\n\r\nmessage\r\n--b--\r\n".to_vec())
            .content_type(Some("multipart/form-data; boundary=b"))
            .quarantined(),
    ];
    for case in &mut cases {
        case.name = format!("webhook: {}", case.name);
    }
    check_distinct(&cases);
    cases
}

/// The messages and contact the read cases look for; the suites store them first.
pub const SEEDED_MESSAGE: &str = "6734a1b2c3d4e5f601000001";
pub const SEEDED_CONTACT: &str = "14155550101";
/// Fixtures to apply before the read cases: A's message (01) and the answer to it (03).
pub const SEED_FIXTURES: [&str; 2] = ["01-", "03-"];

/// The read API: bearer tokens that must not open it, and ids that must not reach another item.
pub fn read_cases(setup: &Setup) -> Vec<Case> {
    let token = setup.api_token;
    let bearer = format!("Bearer {token}");
    let bearer = Some(bearer.as_bytes());
    let message = format!("/v1/messages/{SEEDED_MESSAGE}");
    let contact = format!("/v1/contacts/{SEEDED_CONTACT}");
    let mut same_length = token.as_bytes().to_vec();
    *same_length.last_mut().unwrap() ^= 1;
    let reads_need = "read_api::reads_need_the_bearer_token";
    let unknown = "read_api::unknown_ids_are_not_found";

    let mut cases = Vec::new();
    for path in [&message, &contact] {
        let auth = |value: &[u8]| Some(value.to_vec());
        // (case, Authorization header, the local test that already covers it)
        type TokenCase<'a> = (&'a str, Option<Vec<u8>>, Option<&'static str>);
        let tokens: Vec<TokenCase> = vec![
            ("no authorization", None, Some(reads_need)),
            (
                "wrong token",
                auth(b"Bearer wrong-token-0123456789"),
                Some(reads_need),
            ),
            ("empty bearer token", auth(b"Bearer "), Some(reads_need)),
            (
                "basic credentials",
                auth(b"Basic dXNlcjpwYXNz"),
                Some(reads_need),
            ),
            (
                "wrong token of the same length",
                auth(&[b"Bearer ".as_slice(), &same_length].concat()),
                None,
            ),
            (
                "token one character short",
                auth(format!("Bearer {}", &token[..token.len() - 1]).as_bytes()),
                None,
            ),
            (
                "token with a character added",
                auth(format!("Bearer {token}x").as_bytes()),
                None,
            ),
            (
                "a 16-character token",
                auth(b"Bearer 0123456789abcdef"),
                None,
            ),
            (
                "an 8 KiB token",
                auth(format!("Bearer {}", "t".repeat(8 * 1024)).as_bytes()),
                None,
            ),
            ("the scheme alone", auth(b"Bearer"), None),
            ("the token without a scheme", auth(token.as_bytes()), None),
            (
                "the token under another scheme",
                auth(format!("Token {token}").as_bytes()),
                None,
            ),
            (
                "the scheme twice",
                auth(format!("Bearer Bearer {token}").as_bytes()),
                None,
            ),
            (
                "the token with a non-ASCII byte",
                auth(&[b"Bearer ".as_slice(), token.as_bytes(), "é".as_bytes()].concat()),
                None,
            ),
            (
                "the webhook secret as the token",
                auth(format!("Bearer {}", setup.webhook_secret).as_bytes()),
                None,
            ),
        ];
        for (name, authorization, covered) in tokens {
            let mut case = Case::get(name, path.clone(), authorization.as_deref()).unauthorized();
            case.covered_locally_by = covered;
            cases.push(case);
        }
        cases.push(
            Case::get(
                "the token in the query string",
                format!("{path}?access_token={token}"),
                None,
            )
            .unauthorized(),
        );
        cases.push(
            Case::get("the token in another header", path.clone(), None)
                .header("x-api-token", token)
                .unauthorized(),
        );
    }
    // Ids that try to reach another item or escape the route: 404 (or 400 for an id that is not
    // UTF-8), never a 5xx, never another item. Dot segments may be resolved before routing
    // (lambda_http parses the URL, as any client does), so each one is chosen to end on nothing.
    let not_found = [
        (
            "unknown message",
            "/v1/messages/6734a1b2c3d4e5f6010000ff".to_owned(),
            Some(unknown),
        ),
        (
            "unknown contact",
            "/v1/contacts/19999999999".to_owned(),
            Some(unknown),
        ),
        (
            "encoded traversal to /etc/passwd",
            "/v1/messages/%2E%2E%2F%2E%2E%2Fetc%2Fpasswd".to_owned(),
            Some(unknown),
        ),
        (
            "an id with slashes",
            "/v1/messages/a/b/c".to_owned(),
            Some(unknown),
        ),
        (
            "SQL in a contact",
            "/v1/contacts/'%20OR%201=1--".to_owned(),
            Some(unknown),
        ),
        (
            "encoded slashes to the seeded contact",
            "/v1/messages/..%2F..%2Fcontacts%2F14155550101".to_owned(),
            None,
        ),
        (
            "encoded slash before the seeded id",
            format!("/v1/messages/..%2F{SEEDED_MESSAGE}"),
            None,
        ),
        (
            "encoded slashes to the seeded message",
            format!("/v1/contacts/..%2F..%2Fmessages%2F{SEEDED_MESSAGE}"),
            None,
        ),
        (
            "the seeded id and encoded dot segments",
            format!("/v1/messages/{SEEDED_MESSAGE}%2F..%2F..%2F"),
            None,
        ),
        (
            "the seeded id with a NUL appended",
            format!("/v1/messages/{SEEDED_MESSAGE}%00"),
            None,
        ),
        (
            "the seeded contact with a NUL appended",
            format!("/v1/contacts/{SEEDED_CONTACT}%00"),
            None,
        ),
        ("a NUL id", "/v1/messages/%00".to_owned(), None),
        (
            "the seeded id in upper case",
            format!("/v1/messages/{}", SEEDED_MESSAGE.to_uppercase()),
            None,
        ),
        (
            "the seeded id with a leading space",
            format!("/v1/messages/%20{SEEDED_MESSAGE}"),
            None,
        ),
        (
            "the seeded id with a trailing space",
            format!("/v1/messages/{SEEDED_MESSAGE}%20"),
            None,
        ),
        ("a LIKE wildcard", "/v1/messages/%25".to_owned(), None),
        (
            "the seeded id's prefix and a wildcard",
            "/v1/messages/6734a1b2c3d4e5f6010000%25".to_owned(),
            None,
        ),
        (
            "a single-character wildcard",
            "/v1/messages/6734a1b2c3d4e5f60100000_".to_owned(),
            None,
        ),
        (
            "a contact wildcard",
            "/v1/contacts/1415555010%25".to_owned(),
            None,
        ),
        ("an asterisk", "/v1/contacts/*".to_owned(), None),
        (
            "the storage key of the seeded message",
            format!("/v1/messages/MSG%23{SEEDED_MESSAGE}"),
            None,
        ),
        (
            "the storage key of a contact link",
            format!("/v1/contacts/LINK%23{SEEDED_CONTACT}"),
            None,
        ),
        (
            "a Unicode id",
            "/v1/messages/%E2%9C%93%F0%9F%98%80".to_owned(),
            None,
        ),
        (
            "a 1 000-character id",
            format!("/v1/messages/{}", "m".repeat(1_000)),
            None,
        ),
        (
            "a 1 000-character contact",
            format!("/v1/contacts/{}", "9".repeat(1_000)),
            None,
        ),
        (
            "raw dot segments to /etc/passwd",
            "/v1/messages/../../etc/passwd".to_owned(),
            None,
        ),
        (
            "encoded dot segments to /etc/passwd",
            "/v1/messages/%2e%2e/%2e%2e/%2e%2e/etc/passwd".to_owned(),
            None,
        ),
        ("a lone dot-dot id", "/v1/messages/..".to_owned(), None),
        (
            "dot segments out of the contacts route",
            "/v1/contacts/./../../v1/nothing".to_owned(),
            None,
        ),
        ("no id", "/v1/messages/".to_owned(), None),
        ("no contact", "/v1/contacts".to_owned(), None),
    ];
    for (name, path, covered) in not_found {
        let mut case = Case::get(name, path, bearer);
        case.covered_locally_by = covered;
        cases.push(case);
    }
    cases.extend([
        Case::get("an id that is not UTF-8", "/v1/messages/%FF%FE", bearer).answers(
            &[400, 404],
            None,
            Stored::Nothing,
        ),
        Case::get("an overlong UTF-8 slash", "/v1/messages/%C0%AF", bearer).answers(
            &[400, 404],
            None,
            Stored::Nothing,
        ),
        Case::get("a contact that is not UTF-8", "/v1/contacts/%FF", bearer).answers(
            &[400, 404],
            None,
            Stored::Nothing,
        ),
        Case::get(
            "a 4 000-character id",
            format!("/v1/messages/{}", "m".repeat(4_000)),
            bearer,
        )
        .bug(
            Backend::Aws,
            "ids longer than DynamoDB's key limit (2 KiB) make GetItem fail validation: the read \
             API answers 503 'storage unavailable' instead of 404",
        ),
        Case::get(
            "a 4 000-character contact",
            format!("/v1/contacts/{}", "9".repeat(4_000)),
            bearer,
        ),
        // Dot segments must not skip the token: 401 where they are resolved, 404 where not.
        Case::get(
            "dot segments from /healthz to the seeded message, no token",
            format!("/healthz/../v1/messages/{SEEDED_MESSAGE}"),
            None,
        )
        .answers(&[401, 404], None, Stored::Nothing),
        Case::get("POST to the read API", message.clone(), bearer)
            .method("POST")
            .answers(&[405], None, Stored::Nothing),
    ]);
    for case in &mut cases {
        case.name = format!("read: {}", case.name);
    }
    cases
}

/// Bodies that must land on their own record: the table never repeats one.
fn check_distinct(cases: &[Case]) {
    let mut seen = HashSet::new();
    for case in cases.iter().filter(|c| c.stored != Stored::Nothing) {
        assert!(
            seen.insert(&case.body),
            "two cases store the same body: {case}"
        );
    }
}

/// Fields the parser reads (see src/event.rs), plus two it ignores but Wati always sends.
pub const PARSED_FIELDS: [&str; 11] = [
    "eventType",
    "id",
    "whatsappMessageId",
    "localMessageId",
    "waId",
    "bsuid",
    "owner",
    "timestamp",
    "templateName",
    "failedCode",
    "failedDetail",
];
pub const IGNORED_FIELDS: [&str; 2] = ["sourceType", "text"];

/// Length of the "very long string" value: past DynamoDB's 2 KiB key limit and the ledger's
/// 256-character plain keys.
pub const LONG_STRING_LEN: usize = 3_000;

/// The values every field is set to, by name.
pub fn wrong_type_values() -> Vec<(&'static str, Value)> {
    vec![
        ("number", json!(12345)),
        ("negative float", json!(-1.5)),
        ("bool", json!(true)),
        ("null", Value::Null),
        ("empty string", json!("")),
        ("array", json!([1, "two", {"three": 3}])),
        ("object", json!({"nested": {"deeper": [true]}})),
        ("very long string", json!("x".repeat(LONG_STRING_LEN))),
    ]
}

/// One fixture with one field's value replaced.
pub struct Mutation {
    pub name: String,
    pub fixture: String,
    pub field: String,
    pub value_name: &'static str,
    pub body: Vec<u8>,
    /// Only a non-string `eventType` makes a body unusable (README: "no string eventType").
    pub quarantined: bool,
}

/// Every field of `fixtures` (those named in `fields`, plus every top-level field each fixture
/// has when `all_fields`) set to every value of [`wrong_type_values`].
pub fn wrong_type_mutations(fixture_prefixes: &[&str], all_fields: bool) -> Vec<Mutation> {
    let values = wrong_type_values();
    let mut mutations = Vec::new();
    for (name, body) in fixtures() {
        if !fixture_prefixes.is_empty() && !fixture_prefixes.iter().any(|p| name.starts_with(p)) {
            continue;
        }
        let Value::Object(original) = serde_json::from_slice::<Value>(&body).expect("fixture")
        else {
            panic!("{name} is not an object");
        };
        let mut fields: Vec<String> = PARSED_FIELDS
            .iter()
            .chain(IGNORED_FIELDS.iter())
            .map(|f| f.to_string())
            .collect();
        if all_fields {
            fields.extend(
                original
                    .keys()
                    .filter(|k| !fields.contains(k))
                    .cloned()
                    .collect::<Vec<_>>(),
            );
        }
        for field in &fields {
            for (value_name, value) in &values {
                let mut object: Map<String, Value> = original.clone();
                object.insert(field.clone(), value.clone());
                mutations.push(Mutation {
                    name: format!("{name}: {field} = {value_name}"),
                    fixture: name.clone(),
                    field: field.clone(),
                    value_name,
                    body: serde_json::to_vec(&Value::Object(object)).unwrap(),
                    quarantined: field == "eventType" && !value.is_string(),
                });
            }
        }
    }
    mutations
}
