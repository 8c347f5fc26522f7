//! Rejections: the reply body, the counters and the one JSON log line each one gets; and the
//! log line of a delivery whose outcome is unknown.

use super::{Guard, Pending, Policy, Rejection, RequestInfo};
use crate::host::{Host, Level};
use crate::reason::Reason;
use crate::scheme::{DeliveryId, Scheme};
use crate::stats;

/// Longest value copied from a request into a log line.
pub(super) const MAX_LOGGED_VALUE: usize = 128;

/// What a claim found instead of a free key.
pub(super) enum Found {
    Done,
    InFlight(u64),
    Full,
    Unavailable,
}

impl Guard {
    /// The rejection for what a claim found in a store.
    pub(super) fn store_rejection(
        &self,
        host: &dyn Host,
        policy_index: usize,
        found: Found,
        info: &RequestInfo,
        delivery_id: Option<&str>,
    ) -> Rejection {
        let fail = |reason: Reason, detail: Option<&str>| {
            self.reject(host, policy_index, reason, detail, info, delivery_id)
        };
        let acknowledge = self
            .policies
            .get(policy_index)
            .and_then(|p| p.dedup.as_ref())
            .is_some_and(|d| d.acknowledge);
        match found {
            Found::Done if acknowledge => {
                let mut r = fail(Reason::Replayed, Some("acknowledged"));
                r.status = 200;
                let name = self.policies.get(policy_index).map_or("", |p| &p.name);
                r.body = format!(r#"{{"status":"duplicate","policy":{}}}"#, json_str(name));
                r
            }
            Found::Done => fail(Reason::Replayed, None),
            Found::InFlight(retry_after_s) => {
                let mut r = fail(Reason::InFlight, None);
                r.headers.push(("retry-after", retry_after_s.to_string()));
                r
            }
            Found::Full => fail(Reason::StoreFull, None),
            Found::Unavailable => fail(Reason::StoreUnavailable, None),
        }
    }

    pub(super) fn reject(
        &self,
        host: &dyn Host,
        policy_index: usize,
        reason: Reason,
        detail: Option<&str>,
        info: &RequestInfo,
        delivery_id: Option<&str>,
    ) -> Rejection {
        let Some(policy) = self.policies.get(policy_index) else {
            return self.reject_unknown(host);
        };
        let status = policy.status(reason);
        host.increment(policy.counter_base.saturating_add(stats::REJECTED));
        host.increment(
            policy
                .counter_base
                .saturating_add(stats::reason_offset(reason)),
        );
        log_rejection(
            host,
            Some(&policy.name),
            reason,
            status,
            detail,
            info.route_name.as_deref(),
            &info.path,
            delivery_id,
        );
        Rejection {
            status,
            reason,
            body: reply_body(reason, Some(&policy.name)),
            headers: Vec::new(),
        }
    }

    /// A rejection once the body is known: the delivery id may come from it (Stripe's `id`).
    pub(super) fn reject_with_body(
        &self,
        host: &dyn Host,
        pending: &Pending,
        policy: &Policy,
        body: &[u8],
        reason: Reason,
        detail: Option<&str>,
    ) -> Rejection {
        let id = delivery_id(pending, policy, body);
        self.reject(
            host,
            pending.policy,
            reason,
            detail,
            &pending.info,
            id.as_deref(),
        )
    }

    pub(super) fn reject_unknown(&self, host: &dyn Host) -> Rejection {
        host.log(
            Level::Error,
            "webhook-guard: request refers to an unknown policy",
        );
        let reason = Reason::SecretUnavailable;
        Rejection {
            status: reason.default_status(),
            reason,
            body: reply_body(reason, None),
            headers: Vec::new(),
        }
    }
}

/// The delivery id for log lines: a header, or (Stripe's `id`) the body.
pub(super) fn delivery_id(pending: &Pending, policy: &Policy, body: &[u8]) -> Option<String> {
    pending
        .delivery_id
        .clone()
        .or_else(|| body_delivery_id(&policy.scheme, body))
}

/// A JSON string literal (quoted, escaped).
pub(crate) fn json_str(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".to_string())
}

pub(super) fn json_opt(s: Option<&str>) -> String {
    s.map_or_else(|| "null".to_string(), json_str)
}

pub(super) fn reply_body(reason: Reason, policy: Option<&str>) -> String {
    format!(
        r#"{{"error":"{}","policy":{}}}"#,
        reason.code(),
        json_opt(policy)
    )
}

#[allow(clippy::too_many_arguments)]
pub(super) fn log_rejection(
    host: &dyn Host,
    policy: Option<&str>,
    reason: Reason,
    status: u16,
    detail: Option<&str>,
    route: Option<&str>,
    path: &str,
    delivery_id: Option<&str>,
) {
    if !host.log_enabled(Level::Info) {
        return;
    }
    // Built by hand: a serde_json::Value map costs more than the rest of a rejection. The
    // client address is fetched only here, off the accepted path.
    let line = format!(
        r#"{{"event":"webhook_rejected","policy":{},"reason":"{}","status":{},"detail":{},"route":{},"path":{},"delivery_id":{},"client":{}}}"#,
        json_opt(policy),
        reason.code(),
        status,
        json_opt(detail),
        json_opt(route),
        // The query string can carry tokens: logs get the path alone.
        json_str(&loggable(
            path.split_once('?').map_or(path, |(p, _)| p).as_bytes()
        )),
        json_opt(delivery_id),
        json_opt(host.client_address().as_deref()),
    );
    host.log(Level::Info, &line);
}

/// Request-controlled text for a log line: bounded, lossily decoded (serde escapes it).
pub(super) fn loggable(value: &[u8]) -> String {
    let cut = value.get(..MAX_LOGGED_VALUE).unwrap_or(value);
    String::from_utf8_lossy(cut).into_owned()
}

/// The delivery id carried in a JSON body (Stripe's `id`), for log lines only. The body is
/// unauthenticated here: scan for one top-level string without building a document tree.
fn body_delivery_id(scheme: &Scheme, body: &[u8]) -> Option<String> {
    let Some(DeliveryId::JsonField(field)) = &scheme.delivery_id else {
        return None;
    };
    crate::json::top_level_string(body, field).map(|s| loggable(s.as_bytes()))
}

/// One line per delivery forwarded without an answer: operators reconcile these with the
/// backend (did it process the delivery?) by the delivery id.
pub(super) fn log_unknown_outcome(
    host: &dyn Host,
    policy: &str,
    delivery_id: Option<&str>,
    released: bool,
) {
    let line = format!(
        r#"{{"event":"webhook_unknown_outcome","policy":{},"delivery_id":{},"action":"{}"}}"#,
        json_str(policy),
        json_opt(delivery_id),
        if released { "released" } else { "kept" },
    );
    host.log(Level::Warn, &line);
}
