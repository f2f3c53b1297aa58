//! Searching captured logs for personal data, shared by the Lambda (contract) and local log
//! hygiene tests. A wamid is the customer's phone number in base64
//! (`wamid.HBgLMTQxNTU1NTAxMDEV...` holds `14155550101`), so a phone number can leak without
//! its digits ever appearing: it is searched for in its base64 forms too.

/// The base64 forms of `value` as it appears inside a longer encoded text: one per alignment
/// of its first byte (0, 1 or 2 bytes into a 3-byte group), keeping only the characters that
/// depend on `value` alone, in the standard and the URL-safe alphabet.
pub fn base64_forms(value: &str) -> Vec<String> {
    let mut forms = Vec::new();
    for offset in 0..3 {
        let mut bytes = vec![0u8; offset];
        bytes.extend_from_slice(value.as_bytes());
        let encoded = encode(&bytes);
        // Characters from the first whole sextet of `value` to its last whole one.
        let first = (8 * offset).div_ceil(6);
        let last = 8 * (offset + value.len()) / 6;
        let form = &encoded[first..last];
        forms.push(form.to_owned());
        forms.push(form.replace('+', "-").replace('/', "_"));
    }
    forms.sort();
    forms.dedup();
    forms
}

/// Standard base64 without padding.
fn encode(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | (*b as u32) << (16 - 8 * i));
        for i in 0..=chunk.len() {
            out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
        }
    }
    out
}

/// Tokens of `text` that could be base64 (16 characters or more), decoded.
pub fn base64_decoded(text: &str) -> Vec<String> {
    fn value(c: u8) -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' | b'-' => 62,
            b'/' | b'_' => 63,
            _ => return None,
        } as u32)
    }
    text.split(|c: char| !(c.is_ascii_alphanumeric() || "+/=-_".contains(c)))
        .filter(|token| token.len() >= 16)
        .filter_map(|token| {
            let digits: Vec<u32> = token
                .trim_end_matches('=')
                .bytes()
                .map(value)
                .collect::<Option<_>>()?;
            let mut bytes = Vec::new();
            for chunk in digits.chunks(4) {
                let n = chunk
                    .iter()
                    .enumerate()
                    .fold(0, |n, (i, d)| n | d << (18 - 6 * i));
                bytes.extend(&n.to_be_bytes()[1..chunk.len()]);
            }
            Some(String::from_utf8_lossy(&bytes).into_owned())
        })
        .collect()
}

/// Every line of `log` that shows `phone` in clear or in a base64 form, and every base64 token of
/// `log` that decodes to a text holding it. (Tests first run it on a wamid, to show it finds one.)
pub fn phone_leaks(log: &str, phone: &str) -> Vec<String> {
    let forms = base64_forms(phone);
    let mut leaks: Vec<String> = log
        .lines()
        .filter(|line| line.contains(phone) || forms.iter().any(|f| line.contains(f.as_str())))
        .map(str::to_owned)
        .collect();
    leaks.extend(
        base64_decoded(log)
            .into_iter()
            .filter(|decoded| decoded.contains(phone)),
    );
    leaks
}

/// The wamid of `01-message.json`, built as WhatsApp builds them: it holds 14155550101 in base64.
pub const WAMID_OF_14155550101: &str =
    "wamid.HBgLMTQxNTU1NTAxMDEVAgASGBQzQUIxMDAwMDAwMDAwMDAwMDAwMQA=";

/// The search finds the phone number in a wamid, both as a base64 form and decoded; without this
/// a search that finds nothing would pass every log.
pub fn assert_search_finds_a_wamid() {
    let forms = base64_forms("14155550101");
    assert!(
        forms
            .iter()
            .any(|form| WAMID_OF_14155550101.contains(form.as_str())),
        "no base64 form of 14155550101 in {WAMID_OF_14155550101}: {forms:?}"
    );
    let decoded = base64_decoded(WAMID_OF_14155550101);
    assert!(decoded.iter().any(|text| text.contains("14155550101")));
    assert!(!phone_leaks(&format!("key={WAMID_OF_14155550101}"), "14155550101").is_empty());
}

/// Fails unless `log` holds at least `at_least` lines containing each of `expected`: a capture
/// that saw nothing must not pass as clean.
pub fn assert_captured(log: &str, expected: &[(&str, usize)]) {
    assert!(!log.trim().is_empty(), "nothing was captured");
    for (needle, at_least) in expected {
        let seen = log.lines().filter(|line| line.contains(needle)).count();
        assert!(
            seen >= *at_least,
            "captured {seen} lines with {needle:?}, expected at least {at_least}:\n{log}"
        );
    }
}
