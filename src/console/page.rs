//! The console's HTML, rendered on the server from the read API's views: no template engine, no
//! framework, every value from state or a body escaped ([`escape`]). Pure: a view in, a string
//! out.

use std::fmt::Write;

use crate::failure_reasons::{Remedy, REFERENCE_URL};
use crate::message::{Direction, MessageView, Status};
use crate::ports::QuarantinedBody;
use crate::session::{ChannelView, ContactView};
use crate::time::Rfc3339;

/// The customer-service window's length: Meta's 24 hours.
const WINDOW_SECONDS: i64 = 24 * 60 * 60;

/// Text safe inside an element or a double-quoted attribute.
pub fn escape(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => escaped.push_str("&amp;"),
            '<' => escaped.push_str("&lt;"),
            '>' => escaped.push_str("&gt;"),
            '"' => escaped.push_str("&quot;"),
            '\'' => escaped.push_str("&#39;"),
            c => escaped.push(c),
        }
    }
    escaped
}

/// What the header offers: nothing before sign-in; then the search form, sign-out and, where
/// this server keeps the intake (the local server), the link to its view.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Nav {
    SignedOut,
    SignedIn { intake: bool },
}

/// A whole page: `title`, then `main` (already rendered), under the header `nav` says.
pub fn layout(title: &str, nav: Nav, query: &str, main: &str) -> String {
    let mut header = String::new();
    if let Nav::SignedIn { intake } = nav {
        if intake {
            header.push_str(
                r#"<nav><a href="/console/intake">Intake: quarantine and today's counts</a></nav>"#,
            );
        }
        let _ = write!(
            header,
            r#"<form class="search" method="get" action="/console" role="search">
<label for="q">Phone number, BSUID or message id</label>
<input id="q" name="q" type="search" value="{query}" autocomplete="off" autofocus required>
<button type="submit">Search</button>
</form>
<form class="sign-out" method="post" action="/console/sign-out"><button type="submit">Sign out</button></form>"#,
            query = escape(query)
        );
    }
    format!(
        r#"<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title} · wati-ingest</title>
<link rel="stylesheet" href="/console/console.css">
<script src="/console/console.js" defer></script>
</head>
<body>
<header><h1><a href="/console">wati-ingest</a></h1>{header}</header>
<main>
{main}
</main>
</body>
</html>
"#,
        title = escape(title),
    )
}

/// The sign-in form; `refused` after a wrong token.
pub fn sign_in(refused: bool) -> String {
    let notice = if refused {
        r#"<p class="error" role="alert">That token was refused.</p>"#
    } else {
        ""
    };
    let main = format!(
        r#"<section class="sign-in">
<h2>Sign in</h2>
{notice}
<form method="post" action="/console/sign-in">
<label for="token">API token</label>
<input id="token" name="token" type="password" autocomplete="current-password" required autofocus>
<button type="submit">Sign in</button>
</form>
<p class="hint">The read API's token (locally <code>DATA_DIR/api_token</code>; on AWS
<code>apiToken</code> in the stack's secret). It is kept in this browser only as a signed session
for 12 hours, never in a URL.</p>
</section>"#
    );
    layout("Sign in", Nav::SignedOut, "", &main)
}

/// A time as UTC text in a `<time>` element: the page's script shows it in the viewer's time
/// zone, the UTC text stays on hover.
fn time(at: &Rfc3339) -> String {
    match at.render() {
        Some(utc) => format!(
            r#"<time datetime="{utc}" title="{utc}">{}</time>"#,
            utc.replace('T', " ").replace('Z', " UTC")
        ),
        None => "—".to_owned(),
    }
}

/// "3 h 12 min", "45 min", "under a minute".
pub fn duration(seconds: i64) -> String {
    let minutes = seconds / 60;
    match (minutes / 60, minutes % 60) {
        (0, 0) => "under a minute".to_owned(),
        (0, m) => format!("{m} min"),
        (h, 0) => format!("{h} h"),
        (h, m) => format!("{h} h {m} min"),
    }
}

/// One business number's window as a 24-hour bar, with what may be sent now.
pub fn window(view: &ChannelView, now: i64) -> String {
    let number = view
        .channel_phone_number
        .as_deref()
        .unwrap_or("default number");
    let mut out = format!(
        r#"<section class="window"><h3>Window with {}</h3>"#,
        escape(number)
    );
    match view.window_expires_at.0 {
        Some(end) if end > now => {
            let left = (end - now).min(WINDOW_SECONDS);
            let _ = write!(
                out,
                r#"<progress class="bar" max="{WINDOW_SECONDS}" value="{left}" aria-label="{left_text} of 24 hours left"></progress>
<p class="open">Open: closes in <strong>{left_text}</strong> ({closes}). A free-form message can be sent.</p>"#,
                left_text = duration(left),
                closes = time(&view.window_expires_at),
            );
        }
        Some(_) => {
            let _ = write!(
                out,
                r#"<progress class="bar closed" max="{WINDOW_SECONDS}" value="0" aria-label="window closed"></progress>
<p class="closed">Closed since {}. Only a template can be sent.</p>"#,
                time(&view.window_expires_at)
            );
        }
        None => out.push_str(
            r#"<progress class="bar closed" max="86400" value="0" aria-label="no window"></progress>
<p class="closed">The customer has not written yet. Only a template can be sent.</p>"#,
        ),
    }
    let session = &view.session;
    let _ = write!(
        out,
        r#"<p class="session">Session: {state:?} · started {started} · {business} from the business, {customer} from the customer · last inbound {inbound} · last outbound {outbound}</p></section>"#,
        state = session.state,
        started = time(&session.started_at),
        business = session.business_messages,
        customer = session.customer_messages,
        inbound = time(&view.last_inbound_at),
        outbound = time(&view.last_outbound_at),
    );
    out
}

/// The ticks of a status: sent ✓, delivered ✓✓, read ✓✓ (blue), replied ↩, failed ✗ (red).
fn ticks(status: Status) -> &'static str {
    match status {
        Status::Received => r#"<span class="tick received" title="received">●</span>"#,
        Status::Sent => r#"<span class="tick sent" title="sent">✓</span>"#,
        Status::Delivered => r#"<span class="tick delivered" title="delivered">✓✓</span>"#,
        Status::Read => r#"<span class="tick read" title="read">✓✓</span>"#,
        Status::Replied => r#"<span class="tick replied" title="replied">✓✓ ↩</span>"#,
        Status::Failed => r#"<span class="tick failed" title="failed">✗</span>"#,
    }
}

fn status_name(status: Status) -> &'static str {
    match status {
        Status::Received => "received",
        Status::Sent => "sent",
        Status::Delivered => "delivered",
        Status::Read => "read",
        Status::Replied => "replied",
        Status::Failed => "failed",
    }
}

/// A failure with its explanation, openable from the keyboard (`<details>`).
fn failure(message: &MessageView) -> String {
    let code = message.failed_code.as_deref().unwrap_or("no code");
    let detail = message.failed_detail.as_deref().unwrap_or("");
    match message.failed_reason {
        Some(reason) => {
            let remedy = match reason.remedy {
                Remedy::Retry => "Can be sent again later.",
                Remedy::TemplateOnly => "Only a template can reach the customer now.",
                Remedy::FixFirst => "Something must change before it can be sent again.",
            };
            format!(
                r#"<details class="failure"><summary>Failed: {code} {title}</summary>
<p>{meaning}</p><p><strong>What to do:</strong> {action}</p><p class="remedy">{remedy}</p><p class="detail">Wati said: {detail}</p></details>"#,
                code = escape(reason.code),
                title = escape(reason.title),
                meaning = escape(reason.meaning),
                action = escape(reason.action),
                detail = escape(detail),
            )
        }
        None => format!(
            r#"<details class="failure"><summary>Failed: {code}</summary>
<p>This code is not in our table: look it up in <a href="{REFERENCE_URL}" rel="noreferrer">Meta's error code reference</a>.</p><p class="detail">Wati said: {detail}</p></details>"#,
            code = escape(code),
            detail = escape(detail),
        ),
    }
}

/// The contact's messages, newest first.
pub fn messages(list: &[MessageView]) -> String {
    if list.is_empty() {
        return "<p>No messages.</p>".to_owned();
    }
    let mut out = String::from(r#"<ol class="messages">"#);
    for message in list {
        let direction = match message.direction {
            Direction::Inbound => "from the customer",
            Direction::Outbound => "to the customer",
        };
        let id = message
            .id
            .as_deref()
            .or(message.whatsapp_message_id.as_deref())
            .or(message.local_message_id.as_deref())
            .unwrap_or("");
        let template = message
            .template_name
            .as_deref()
            .map(|name| {
                format!(
                    r#" · template <span class="template">{}</span>"#,
                    escape(name)
                )
            })
            .unwrap_or_default();
        let _ = write!(
            out,
            r#"<li class="message {status}"><p>{ticks} <span class="status">{status}</span> · {direction}{template} · sent {sent}</p><p class="times">delivered {delivered} · read {read} · replied {replied}</p><p class="id">{id}</p>{failure}</li>"#,
            status = status_name(message.status),
            ticks = ticks(message.status),
            sent = time(&message.sent_at),
            delivered = time(&message.delivered_at),
            read = time(&message.read_at),
            replied = time(&message.replied_at),
            id = escape(id),
            failure = if message.status == Status::Failed {
                failure(message)
            } else {
                String::new()
            },
        );
    }
    out.push_str("</ol>");
    out
}

/// A contact's page: its windows (one per business number) and its messages.
pub fn contact(
    nav: Nav,
    query: &str,
    view: &ContactView,
    list: &[MessageView],
    now: i64,
) -> String {
    let name = view
        .default
        .wa_id
        .as_deref()
        .or(view.default.bsuid.as_deref())
        .unwrap_or(query);
    let mut main = format!(r#"<section class="contact"><h2>{}</h2>"#, escape(name));
    if let (Some(number), Some(bsuid)) = (&view.default.wa_id, &view.default.bsuid) {
        let _ = write!(
            main,
            r#"<p class="names">{} · BSUID {}</p>"#,
            escape(number),
            escape(bsuid)
        );
    }
    for channel in &view.channels {
        main.push_str(&window(channel, now));
    }
    main.push_str("<h3>Messages, newest first</h3>");
    main.push_str(&messages(list));
    main.push_str("</section>");
    layout(name, nav, query, &main)
}

/// Nothing found for `query`.
pub fn not_found(nav: Nav, query: &str) -> String {
    let main = format!(
        r#"<p role="status">Nothing is kept under <strong>{}</strong>: no contact by that phone number or BSUID, and no message by that id.</p>"#,
        escape(query)
    );
    layout("Not found", nav, query, &main)
}

/// The signed-in start page.
pub fn start(nav: Nav) -> String {
    layout(
        "Search",
        nav,
        "",
        "<p>Search a contact by phone number or BSUID, or any id of one of its messages.</p>",
    )
}

/// The intake view: today's events by type, and the latest quarantined bodies, each shown
/// escaped (a body is whatever a sender posted).
pub fn intake(nav: Nav, counts: &[(String, u64)], quarantined: &[QuarantinedBody]) -> String {
    let mut main = String::from("<section class=\"counts\"><h2>Today's events by type (UTC)</h2>");
    if counts.is_empty() {
        main.push_str("<p>None yet today.</p>");
    } else {
        main.push_str("<table><thead><tr><th scope=\"col\">eventType</th><th scope=\"col\">events</th></tr></thead><tbody>");
        for (kind, count) in counts {
            let _ = write!(main, "<tr><td>{}</td><td>{count}</td></tr>", escape(kind));
        }
        main.push_str("</tbody></table>");
    }
    main.push_str("</section><section class=\"quarantine\"><h2>Latest quarantined bodies</h2>");
    if quarantined.is_empty() {
        main.push_str("<p>Nothing is quarantined.</p>");
    }
    for body in quarantined {
        let entry = &body.entry;
        let _ = write!(
            main,
            r#"<article class="quarantined"><h3>{stage}: {reason}</h3><p class="detail">received {received} · {size} bytes · key <span class="id">{key}</span></p><pre class="body">{text}</pre></article>"#,
            stage = body.stage.name(),
            reason = escape(&entry.reason),
            received = time(&Rfc3339(Some(entry.received_at))),
            size = entry.body.len(),
            key = escape(&entry.key),
            text = escape(&String::from_utf8_lossy(&entry.body)),
        );
    }
    main.push_str("</section>");
    layout("Intake", nav, "", &main)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping_covers_markup_and_both_quotes() {
        assert_eq!(
            escape(r#"<script>alert("x" & 'y')</script>"#),
            "&lt;script&gt;alert(&quot;x&quot; &amp; &#39;y&#39;)&lt;/script&gt;"
        );
        assert_eq!(escape("plain +1415"), "plain +1415");
    }

    #[test]
    fn durations_read_like_a_person_says_them() {
        assert_eq!(duration(30), "under a minute");
        assert_eq!(duration(45 * 60), "45 min");
        assert_eq!(duration(3 * 3600), "3 h");
        assert_eq!(duration(3 * 3600 + 12 * 60 + 59), "3 h 12 min");
    }

    #[test]
    fn the_sign_in_page_loads_only_its_own_assets() {
        let page = sign_in(true);
        assert!(page.contains("That token was refused"));
        for attribute in ["src=\"", "href=\""] {
            for value in page.split(attribute).skip(1) {
                assert!(value.starts_with('/'), "an external asset: {value}");
            }
        }
        assert!(!page.contains("style="), "inline styles break the policy");
    }
}
