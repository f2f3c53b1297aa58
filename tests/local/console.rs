//! `/console` on the real local server: sign-in into a locked-down cookie (never the token),
//! a contact found by a message id with its open window, its messages newest first and a
//! failure explained, everything from state or a body escaped, and a policy that lets the page
//! load only its own stylesheet and script.

use reqwest::header::{CONTENT_SECURITY_POLICY, LOCATION, SET_COOKIE};
use reqwest::StatusCode;

use crate::helpers::{fixtures, shifted, spawn_app, API_TOKEN};

fn no_redirects() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// The `name=value` part of a `Set-Cookie`.
fn cookie_pair(set_cookie: &str) -> String {
    set_cookie.split(';').next().unwrap().to_owned()
}

#[tokio::test]
async fn support_reads_a_contact_and_its_failures_after_signing_in() {
    let app = spawn_app().await;
    let now = wati_ingest::time::now_unix();
    // The fixtures an hour ago: the customers' windows are open.
    let recent: Vec<_> = fixtures().iter().map(|f| shifted(f, now - 3600)).collect();
    app.post_all(&recent).await;
    // A template to a customer whose name is markup, then its failure.
    let sent = format!(
        r#"{{"eventType":"templateMessageSent","id":"console-xss-1","waId":"14155550102","templateName":"<script>alert(1)</script>","owner":true,"timestamp":"{}"}}"#,
        now - 60
    );
    let failed = format!(
        r#"{{"eventType":"templateMessageFailed","id":"console-xss-1","failedCode":"131049","failedDetail":"<img src=x>","timestamp":"{}"}}"#,
        now - 50
    );
    for body in [sent, failed] {
        assert_eq!(app.post_webhook(body).await.0, 200);
    }
    // A body that is markup, not JSON: quarantined by the receiver.
    assert_eq!(app.post_webhook("<script>alert(2)</script>").await.0, 200);
    app.wait_until_applied().await;
    let client = no_redirects();
    let url = |path: &str| format!("{}{path}", app.address);

    // Signed out: the sign-in form, under the policy.
    let page = client.get(url("/console")).send().await.unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    let policy = page.headers()[CONTENT_SECURITY_POLICY]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(policy.starts_with("default-src 'none';"), "{policy}");
    assert!(
        !policy.contains("unsafe-inline") && !policy.contains("http"),
        "{policy}"
    );
    assert_eq!(page.headers()["cache-control"], "no-store");
    assert!(page.text().await.unwrap().contains("Sign in"));
    let hidden = client
        .get(url("/console?q=14155550101"))
        .send()
        .await
        .unwrap();
    assert!(
        !hidden.text().await.unwrap().contains("14155550101"),
        "nothing without a session"
    );

    // A wrong token: refused, no cookie.
    let refused = client
        .post(url("/console/sign-in"))
        .form(&[("token", "not-the-token-0123456789")])
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
    assert!(refused.headers().get(SET_COOKIE).is_none());

    // The token: a session cookie, locked down, without the token; back to /console.
    let signed = client
        .post(url("/console/sign-in"))
        .form(&[("token", API_TOKEN)])
        .send()
        .await
        .unwrap();
    assert_eq!(signed.status(), StatusCode::SEE_OTHER);
    assert_eq!(signed.headers()[LOCATION], "/console");
    let set_cookie = signed.headers()[SET_COOKIE].to_str().unwrap().to_owned();
    for attribute in [
        "HttpOnly",
        "SameSite=Strict",
        "Path=/console",
        "Max-Age=43200",
    ] {
        assert!(set_cookie.contains(attribute), "{set_cookie}");
    }
    assert!(!set_cookie.contains("Secure"), "plain HTTP: {set_cookie}");
    assert!(!set_cookie.contains(API_TOKEN), "{set_cookie}");
    let session = cookie_pair(&set_cookie);
    let over_https = client
        .post(url("/console/sign-in"))
        .header("x-forwarded-proto", "https")
        .form(&[("token", API_TOKEN)])
        .send()
        .await
        .unwrap();
    assert!(over_https.headers()[SET_COOKIE]
        .to_str()
        .unwrap()
        .ends_with("; Secure"));

    let read = |path: String| {
        let (client, session) = (client.clone(), session.clone());
        async move {
            let answer = client
                .get(path)
                .header("cookie", session)
                .send()
                .await
                .unwrap();
            (answer.status(), answer.text().await.unwrap())
        }
    };

    // By a failed message's local id (no event of it named a contact): the failure explained.
    let (status, page) = read(url("/console?q=local-0005")).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert!(page.contains("Failed: 131026"), "{page}");
    let reason = wati_ingest::failure_reasons::reason_for("131026").unwrap();
    assert!(page.contains(&wati_ingest::console::escape(reason.action)));
    assert!(
        page.contains("<details class=\"failure\">"),
        "openable from the keyboard"
    );
    assert!(!page.contains(API_TOKEN));

    // By phone number: the window open, messages newest first with ticks, the failure
    // explained; a template name and a detail from a body are text, not markup.
    let (status, page) = read(url("/console?q=14155550102")).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert!(page.contains("Open: closes in"), "{page}");
    assert!(page.contains("A free-form message can be sent"));
    assert!(page.contains("Failed: 131049"), "{page}");
    assert!(page.contains("Wati said: &lt;img src=x&gt;"), "{page}");
    assert!(page.contains("title=\"delivered\""), "a tick: {page}");
    assert!(
        page.contains("&lt;script&gt;alert(1)&lt;/script&gt;"),
        "{page}"
    );
    assert!(!page.contains("<script>alert"), "{page}");
    let times: Vec<&str> = page
        .split("sent <time datetime=\"")
        .skip(1)
        .map(|rest| rest.split('"').next().unwrap())
        .collect();
    assert!(times.len() >= 2, "{page}");
    assert!(
        times.windows(2).all(|pair| pair[0] >= pair[1]),
        "newest first: {times:?}"
    );

    // Not found, with the query escaped; assets of its own.
    let (status, page) = read(url("/console?q=%3Cb%3Enobody")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(page.contains("&lt;b&gt;nobody") && !page.contains("<b>nobody"));
    let css = client
        .get(url("/console/console.css"))
        .send()
        .await
        .unwrap();
    assert_eq!(css.headers()["content-type"], "text/css; charset=utf-8");

    // The intake view: today's counts by type, the quarantined body as text.
    let (status, page) = read(url("/console/intake")).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert!(page.contains("<td>templateMessageSent</td>"), "{page}");
    assert!(
        page.contains("&lt;script&gt;alert(2)&lt;/script&gt;"),
        "{page}"
    );
    assert!(!page.contains("<script>alert(2)"), "{page}");
    assert!(page.contains("receiver: "), "the stage: {page}");
    let signed_out = client.get(url("/console/intake")).send().await.unwrap();
    assert!(!signed_out.text().await.unwrap().contains("alert(2)"));

    // Signing out clears the cookie.
    let out = client
        .post(url("/console/sign-out"))
        .header("cookie", session.clone())
        .send()
        .await
        .unwrap();
    assert!(out.headers()[SET_COOKIE]
        .to_str()
        .unwrap()
        .contains("Max-Age=0"));
}
