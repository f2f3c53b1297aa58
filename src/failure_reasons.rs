//! What the Meta error code on a failed message means, in plain words for whoever answers the
//! customer, and what to do about it.
//!
//! Wati passes Meta's WhatsApp Cloud API error code through as `failedCode` on its failed-message
//! webhooks. This table covers the codes a support agent meets on a failed message; any other code
//! is to be looked up at [`REFERENCE_URL`].
//!
//! Source: Meta's error code reference (read 2026-11-29, its rows as served on 2026-09-11):
//! <https://developers.facebook.com/documentation/business-messaging/whatsapp/support/error-codes/>
//!
//! The meanings and actions are our own short wording of Meta's `details` and "possible reasons
//! and solutions" columns. That page no longer prints titles: a title here is the one Meta puts
//! after the code in the error's `message` (for example `(#130429) Rate limit hit`), as the page's
//! earlier edition listed it or Meta's error responses carry it. For 131049 and 131050 it is
//! Meta's description (131050's shortened).
//!
//! Pure data: no I/O. Codes Meta has retired from the page (such as 470, the old 24-hour code,
//! now 131047) are left out on purpose, so that an agent is never told something Meta no longer
//! says.

/// What a failed message's Meta error code means, for whoever answers the customer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct FailureReason {
    /// Meta's code, as Wati's `failedCode` carries it (digits).
    pub code: &'static str,
    /// Meta's title for it.
    pub title: &'static str,
    /// What happened, in a sentence or two.
    pub meaning: &'static str,
    /// What to do about it.
    pub action: &'static str,
    /// Whether the same message can simply be sent again later (rate limits, transient errors):
    /// `Retry`; whether only a template can reach the customer now (131047): `TemplateOnly`;
    /// or whether the customer or the business must change something first: `FixFirst`.
    pub remedy: Remedy,
}

/// What it takes before the customer can be reached again; see [`FailureReason::remedy`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Remedy {
    Retry,
    TemplateOnly,
    FixFirst,
}

/// Meta's error code reference (where an unknown code is to be looked up).
pub const REFERENCE_URL: &str =
    "https://developers.facebook.com/documentation/business-messaging/whatsapp/support/error-codes/";

/// The reason for `code` (surrounding whitespace ignored), `None` for a code not in the table.
pub fn reason_for(code: &str) -> Option<&'static FailureReason> {
    let code = code.trim();
    REASONS.iter().find(|reason| reason.code == code)
}

/// Every code in the table, in ascending order of code.
pub fn all() -> &'static [FailureReason] {
    &REASONS
}

// Sorted by code in numeric order (a test holds it so). Texts stay plain: no `<`, `>`, `&` or `"`,
// so that a page can show them as they are.
static REASONS: [FailureReason; 29] = [
    FailureReason {
        code: "368",
        title: "Temporarily blocked for policies violations",
        meaning: "Meta has restricted or disabled the business's WhatsApp account for breaking a \
                  platform policy, so it cannot send messages.",
        action: "Not a customer problem. Escalate to whoever runs the WhatsApp Business account: \
                 they must read Meta's policy notice in WhatsApp Manager and resolve it.",
        remedy: Remedy::FixFirst,
    },
    FailureReason {
        code: "130429",
        title: "Rate limit hit",
        meaning: "The business number was sending more messages per second than Meta allows it \
                  (its throughput limit), so Meta refused this one.",
        action: "Nothing is wrong on the customer's side. Send the message again in a little \
                 while; if it keeps happening, bulk sends should go out more slowly.",
        remedy: Remedy::Retry,
    },
    FailureReason {
        code: "130472",
        title: "User's number is part of an experiment",
        meaning: "Meta did not send the message because the customer's number is in one of \
                  Meta's experiments on marketing messages, which holds some of them back.",
        action: "Nobody can take the customer out of the experiment. Reach them another way, or \
                 answer once they write to the business; the same message will likely fail again.",
        remedy: Remedy::FixFirst,
    },
    FailureReason {
        code: "131000",
        title: "Something went wrong",
        meaning: "The message failed because of an unknown error on Meta's side.",
        action: "Send it again. If the same error keeps coming back, report it to Wati support \
                 with the message and the time it failed.",
        remedy: Remedy::Retry,
    },
    FailureReason {
        code: "131008",
        title: "Required parameter is missing",
        meaning: "The request that sent the message left out something Meta requires, so the \
                  message was refused.",
        action: "Not a customer problem. Pass it to whoever set up the message or the integration \
                 to add what is missing, then send again.",
        remedy: Remedy::FixFirst,
    },
    FailureReason {
        code: "131009",
        title: "Parameter value is not valid",
        meaning: "Meta did not accept one or more values in the request that sent the message, so \
                  the message was refused.",
        action: "Check the customer's number and any values filled into the template for \
                 mistakes, then send again; if it persists, pass it to whoever runs the \
                 integration.",
        remedy: Remedy::FixFirst,
    },
    FailureReason {
        code: "131016",
        title: "Service unavailable",
        meaning: "A WhatsApp service was temporarily unavailable when the message was sent.",
        action: "Wait a few minutes and send it again. Meta's WhatsApp Business API status page \
                 shows whether there is an outage.",
        remedy: Remedy::Retry,
    },
    FailureReason {
        code: "131021",
        title: "Recipient cannot be sender",
        meaning: "The message was addressed to the business's own WhatsApp number.",
        action: "Check the contact's number: it must be the customer's number, not the \
                 business's.",
        remedy: Remedy::FixFirst,
    },
    FailureReason {
        code: "131026",
        title: "Message undeliverable",
        meaning: "WhatsApp could not deliver to this number: it may not be on WhatsApp, the \
                  customer may not have accepted WhatsApp's latest terms, or their app may be too \
                  old.",
        action: "Ask the customer another way (call, SMS, email) to check they can message the \
                 business on WhatsApp, have not blocked it, have accepted the latest terms and \
                 have updated the app.",
        remedy: Remedy::FixFirst,
    },
    FailureReason {
        code: "131031",
        title: "Account has been locked",
        meaning: "Meta has locked the business's WhatsApp account, for a policy violation or \
                  because data in the request (such as the two-step PIN) did not match the \
                  account.",
        action: "Not a customer problem. Escalate to whoever runs the WhatsApp Business account; \
                 they should check its status and policy notices in WhatsApp Manager.",
        remedy: Remedy::FixFirst,
    },
    FailureReason {
        code: "131042",
        title: "Business eligibility payment issue",
        meaning: "Meta refused the message because of a problem with the business's payment \
                  setup, such as no active payment method or a credit line over its limit.",
        action: "Not a customer problem, and other messages will likely fail too. Escalate to \
                 whoever manages billing to fix it in Meta's billing settings, then send again.",
        remedy: Remedy::FixFirst,
    },
    FailureReason {
        code: "131045",
        title: "Incorrect certificate",
        meaning: "The message failed because of a registration error on the business's phone \
                  number.",
        action: "Not a customer problem. Escalate to whoever runs the WhatsApp Business account \
                 to register the phone number again, then send again.",
        remedy: Remedy::FixFirst,
    },
    FailureReason {
        code: "131047",
        title: "Re-engagement message",
        meaning: "More than 24 hours have passed since the customer last wrote to the business, \
                  so the 24-hour window is closed and only template messages are allowed.",
        action: "Send an approved template message instead. Once the customer replies, normal \
                 messages can be sent again for 24 hours.",
        remedy: Remedy::TemplateOnly,
    },
    FailureReason {
        code: "131048",
        title: "Spam rate limit hit",
        meaning: "Meta is limiting how many messages this business number may send, likely \
                  because too many earlier messages were blocked or reported as spam.",
        action: "Send it again later, not in bulk. Ask whoever runs the account to check the \
                 number's quality rating in WhatsApp Manager.",
        remedy: Remedy::Retry,
    },
    FailureReason {
        code: "131049",
        title: "This message was not delivered to maintain healthy ecosystem engagement",
        meaning: "Meta held the message back to protect the customer from too many messages, \
                  usually because of its limit on marketing messages each person receives.",
        action: "Do not resend right away: wait at least 24 hours before sending the template \
                 again. If it is urgent, reach the customer another way.",
        remedy: Remedy::Retry,
    },
    FailureReason {
        code: "131050",
        title: "Recipient has chosen to stop receiving marketing messages",
        meaning: "The customer has chosen, in WhatsApp, to stop receiving marketing messages from \
                  this business.",
        action: "Do not resend marketing messages to this customer; they will not arrive. Only \
                 the customer can turn them back on, in WhatsApp.",
        remedy: Remedy::FixFirst,
    },
    FailureReason {
        code: "131051",
        title: "Unsupported message type",
        meaning: "The message was of a type WhatsApp does not support.",
        action: "Send the content as a supported type, such as text or a supported media file; \
                 pass repeated cases to whoever runs the integration.",
        remedy: Remedy::FixFirst,
    },
    FailureReason {
        code: "131052",
        title: "Media download error",
        meaning: "A photo, video or file the customer sent could not be downloaded, so it is \
                  missing from the conversation.",
        action: "Ask the customer to send the file another way, for example by email.",
        remedy: Remedy::FixFirst,
    },
    FailureReason {
        code: "131053",
        title: "Media upload error",
        meaning: "The file attached to the message could not be uploaded, for example because its \
                  type is not supported.",
        action: "Check that the attached file is of a type WhatsApp supports, convert it if not, \
                 and send it again.",
        remedy: Remedy::FixFirst,
    },
    FailureReason {
        code: "131056",
        title: "(Business Account, Consumer Account) pair rate limit hit",
        meaning: "Too many messages went from the business number to this same customer in a \
                  short time.",
        action: "Wait a little and send it again. Messages to other customers are not affected.",
        remedy: Remedy::Retry,
    },
    FailureReason {
        code: "131057",
        title: "Account in maintenance mode",
        meaning: "The business's WhatsApp account was in maintenance mode, for example during a \
                  throughput upgrade.",
        action: "Wait a few minutes and send the message again.",
        remedy: Remedy::Retry,
    },
    FailureReason {
        code: "132000",
        title: "Number of parameters does not match the expected number of params",
        meaning: "The template was sent with a different number of filled-in values than it has \
                  placeholders.",
        action: "Not a customer problem. Pass it to whoever set up the template or the sending \
                 rule to fill in every placeholder, then send again.",
        remedy: Remedy::FixFirst,
    },
    FailureReason {
        code: "132001",
        title: "Template does not exist",
        meaning: "The template does not exist in the language used, or it has not been approved.",
        action: "Check in Wati that the template is approved and that its name and language are \
                 right, then send again.",
        remedy: Remedy::FixFirst,
    },
    FailureReason {
        code: "132005",
        title: "Template Hydrated Text Too Long",
        meaning: "The template's text, once its translation and values were filled in, was too \
                  long.",
        action: "Pass it to whoever manages templates: check the template's translation in \
                 WhatsApp Manager and shorten the values filled into it.",
        remedy: Remedy::FixFirst,
    },
    FailureReason {
        code: "132007",
        title: "Template Format Character Policy Violated",
        meaning: "The template's content breaks a WhatsApp policy.",
        action: "Pass it to whoever manages templates to review the content against Meta's \
                 template rules; use another approved template meanwhile.",
        remedy: Remedy::FixFirst,
    },
    FailureReason {
        code: "132012",
        title: "Template Parameter Format Mismatch",
        meaning: "Values filled into the template were not in the format the template expects.",
        action: "Pass it to whoever set up the template or the sending rule to send the values in \
                 the template's format, then send again.",
        remedy: Remedy::FixFirst,
    },
    FailureReason {
        code: "132015",
        title: "Template is Paused",
        meaning: "Meta has paused the template because of its low quality, so it cannot be sent.",
        action: "Use another approved template. Whoever manages templates should edit this one to \
                 improve it and wait for it to be approved again.",
        remedy: Remedy::FixFirst,
    },
    FailureReason {
        code: "132016",
        title: "Template is Disabled",
        meaning: "The template was paused too many times for low quality and is now disabled for \
                  good.",
        action: "Use another approved template. A new template with different content has to be \
                 created to replace this one.",
        remedy: Remedy::FixFirst,
    },
    FailureReason {
        code: "133010",
        title: "Phone number not registered",
        meaning: "The business's phone number is not registered on the WhatsApp Business Platform.",
        action: "Not a customer problem. Escalate to whoever runs the WhatsApp Business account \
                 to register the number, then send again.",
        remedy: Remedy::FixFirst,
    },
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_digits_only_and_unique() {
        for reason in all() {
            assert!(
                !reason.code.is_empty() && reason.code.bytes().all(|b| b.is_ascii_digit()),
                "{:?} is not digits only",
                reason.code
            );
        }
        let mut codes: Vec<&str> = all().iter().map(|reason| reason.code).collect();
        codes.sort_unstable();
        codes.dedup();
        assert_eq!(codes.len(), all().len(), "a code appears twice");
    }

    #[test]
    fn table_is_sorted_by_code() {
        let numbers: Vec<u64> = all()
            .iter()
            .map(|reason| reason.code.parse().unwrap())
            .collect();
        for pair in numbers.windows(2) {
            assert!(pair[0] < pair[1], "{} comes before {}", pair[0], pair[1]);
        }
    }

    #[test]
    fn reengagement_only_lets_a_template_through() {
        let reason = reason_for(" 131047 ").expect("131047 is in the table");
        assert_eq!(reason.code, "131047");
        assert_eq!(reason.remedy, Remedy::TemplateOnly);
        assert!(reason.meaning.contains("24 hours"), "{}", reason.meaning);
    }

    #[test]
    fn an_unknown_code_has_no_reason() {
        assert_eq!(reason_for("999999"), None);
        assert_eq!(reason_for(""), None);
        assert_eq!(reason_for("   "), None);
    }

    #[test]
    fn the_codes_from_the_team_notes_are_all_there() {
        let noted = [
            "131026", "131047", "131049", "131050", "131048", "131056", "130472", "130429",
            "131042", "131031", "132001", "131051", "131053", "131000",
        ];
        for code in noted {
            assert!(reason_for(code).is_some(), "{code} is missing");
        }
    }

    #[test]
    fn texts_are_short_plain_and_complete() {
        for reason in all() {
            // Titles are Meta's as they are (most without a period); the sentences end with one.
            let texts = [
                ("title", reason.title, false),
                ("meaning", reason.meaning, true),
                ("action", reason.action, true),
            ];
            for (field, text, sentence) in texts {
                let at = format!("{} {field}", reason.code);
                assert!(!text.trim().is_empty(), "{at} is empty");
                assert!(text.chars().count() < 300, "{at} is 300 characters or more");
                assert!(
                    !text.contains(['<', '>', '&', '"']),
                    "{at} has an HTML-special character"
                );
                assert_eq!(text, text.trim(), "{at} has surrounding whitespace");
                assert!(!text.contains("  "), "{at} has a double space");
                if sentence {
                    assert!(text.ends_with('.'), "{at} does not end with a period");
                }
            }
        }
    }

    #[test]
    fn remedies_serialise_in_snake_case() {
        let json = serde_json::to_string(reason_for("131047").unwrap()).unwrap();
        assert!(json.contains(r#""remedy":"template_only""#), "{json}");
        assert!(json.contains(r#""code":"131047""#), "{json}");
    }
}
