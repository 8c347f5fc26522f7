//! The request path: which policy, what the headers allow, what the body proves, and what the
//! upstream's outcome does to the delivery's claim.

use super::remote::{Purpose, RemoteTask};
use super::reply::{
    delivery_id, json_str, log_rejection, log_unknown_outcome, loggable, reply_body, Found,
};
use super::{
    done_lifetime_ms, Accepted, Challenge, DedupPolicy, Guard, Held, Hold, LocalReply, Pending,
    Plaintext, Policy, Rejection, RequestInfo, Retention, Route, Upstream,
};
use crate::decrypt::{Cipher, Failure, NonceSource};
use crate::dedup::{self, ClaimOutcome};
use crate::host::{Host, Level};
use crate::policy::RouteInfo;
use crate::reason::Reason;
use crate::scheme::{DeliveryId, SigFormat, TimestampSource};
use crate::stats;
use crate::verify::{self, lookup, Header, Lookup, Skew};

/// Longest `hub.challenge` echoed back (Meta's are short numbers).
const MAX_CHALLENGE_BYTES: usize = 128;
/// Largest unsigned body opened as a possible Lark `url_verification`.
const MAX_UNSIGNED_CHALLENGE_BYTES: usize = 4096;

impl Guard {
    /// What the upstream's outcome does to the claim: a success commits it, a failure answer
    /// or a request that never left releases it (so the sender's retry is admitted), and an
    /// unknown outcome keeps it as delivered (or releases it, per the policy), counted and
    /// logged. A remote claim returns the task to run with `Guard::drive`.
    pub fn settle(&self, host: &dyn Host, hold: Hold, outcome: Upstream) -> Option<RemoteTask> {
        let dedup = self.policies.get(hold.policy())?.dedup.as_ref()?;
        let commit = match outcome {
            Upstream::Answered(s) => (200..300).contains(&s) || dedup.commit_statuses.contains(&s),
            Upstream::NotSent => false,
            Upstream::Unknown => {
                host.increment(stats::STORE_UNKNOWN_OUTCOME);
                let name = self.policies.get(hold.policy()).map_or("", |p| &p.name);
                log_unknown_outcome(
                    host,
                    name,
                    hold.delivery_id.as_deref(),
                    dedup.release_unknown,
                );
                !dedup.release_unknown
            }
        };
        let claim = match hold.claim {
            Held::Local(claim) => claim,
            Held::Remote(r) => {
                let store = self.remote_store(r.policy)?;
                let (op, purpose) = if commit {
                    let lifetime = self.policies.get(r.policy).map_or(0, done_lifetime_ms);
                    (
                        store.commit(&r.hash, r.done_expiry_ms, lifetime),
                        Purpose::Commit {
                            hash: r.hash,
                            done_expiry_ms: r.done_expiry_ms,
                        },
                    )
                } else {
                    (
                        store.release(&r.hash, &r.value),
                        Purpose::Release {
                            until_ms: r.claim_expiry_ms,
                        },
                    )
                };
                return Some(RemoteTask::new(r.policy, op, purpose));
            }
        };
        // No counter on commit: it is the common path, and every host call costs (the
        // `accepted` counter already counts it).
        if commit {
            if !self.store.commit(host, &claim) {
                // The claim stays in flight until it lapses; after that a replay inside the
                // window would be admitted again. Rare (CAS exhaustion), but never silent.
                host.increment(stats::STORE_COMMIT_FAILED);
                host.log(
                    Level::Warn,
                    "webhook-guard: could not commit a delivery to the replay store (store_unavailable)",
                );
            }
        } else if self.store.release(host, &claim) {
            host.increment(stats::STORE_RELEASED);
        }
        None
    }

    /// Which policy handles a request: the one its route names (native per-route
    /// configuration), else the first whose `match` matches, else `default`.
    pub fn route(&self, host: &dyn Host, req: &RouteInfo) -> Route {
        match self.select(host, req) {
            // A path that climbs out of where Envoy routed it once a lenient backend decodes
            // it (`/a/%2e%2e;/b`): whichever policy the route chose, the delivery would be
            // served by another route's handler. No policy owns it.
            Route::Verify(_) if crate::policy::path_climbs(req.path) => {
                self.unmatched(host, req, true)
            }
            other => other,
        }
    }

    fn select(&self, host: &dyn Host, req: &RouteInfo) -> Route {
        if let Some(name) = req.route_policy {
            if let Some(i) = self.policies.iter().position(|p| p.name == name) {
                return Route::Verify(i);
            }
            // A route naming a policy this configuration lacks: a configuration error, and
            // nothing unverified passes.
            let names: Vec<&str> = self.policies.iter().map(|p| p.name.as_str()).collect();
            host.log(
                Level::Error,
                &format!(
                    "webhook-guard: the route names policy '{}', which is not configured (policies: {})",
                    loggable(name.as_bytes()),
                    names.join(", ")
                ),
            );
            return self.unmatched(host, req, true);
        }
        if let Some(i) = self.policies.iter().position(|p| p.matcher.matches(req)) {
            let matchers = self.policies.iter().map(|p| &p.matcher);
            if crate::policy::spellings_disagree(matchers, req) {
                // No one policy owns this request: refused whatever `default` says.
                return self.unmatched(host, req, true);
            }
            return Route::Verify(i);
        }
        self.unmatched(host, req, self.default_deny)
    }

    fn unmatched(&self, host: &dyn Host, req: &RouteInfo, deny: bool) -> Route {
        if !deny {
            host.increment(stats::UNMATCHED_PASSED);
            return Route::Pass;
        }
        host.increment(stats::UNMATCHED_DENIED);
        let reason = Reason::NoMatchingPolicy;
        log_rejection(
            host,
            None,
            reason,
            reason.default_status(),
            None,
            req.route_name,
            req.path,
            None,
        );
        Route::Reject(Rejection {
            status: reason.default_status(),
            reason,
            body: reply_body(reason, None),
            headers: Vec::new(),
        })
    }

    /// Header phase: everything that can be decided before the body is read.
    pub fn begin<H: Header>(
        &self,
        host: &dyn Host,
        policy_index: usize,
        info: RequestInfo,
        headers: &[H],
    ) -> Result<Pending, Rejection> {
        let Some(policy) = self.policies.get(policy_index) else {
            // Only reachable through a glue bug; fail closed.
            return Err(self.reject_unknown(host));
        };
        let delivery_id = match &policy.scheme.delivery_id {
            Some(DeliveryId::Header(name)) => match lookup(headers, name) {
                Lookup::One(v) => Some(loggable(v)),
                _ => None,
            },
            _ => None,
        };
        let fail = |reason: Reason, detail: Option<&str>| {
            self.reject(
                host,
                policy_index,
                reason,
                detail,
                &info,
                delivery_id.as_deref(),
            )
        };
        // Before anything else: a method the policy does not verify (OPTIONS, GET, HEAD...)
        // must not reach the backend, where a framework's automatic answer could commit the
        // delivery and lose the sender's real retry.
        if !policy.methods.contains(&info.method) {
            let mut r = fail(Reason::MethodNotAllowed, None);
            r.headers.push(("allow", policy.methods.join(", ")));
            return Err(r);
        }
        if policy.first_key().is_none() && policy.keys(host).is_empty() {
            return Err(fail(Reason::SecretUnavailable, None));
        }
        let mut nonce_header = None;
        if let Some(d) = &policy.decrypt {
            if d.first_key().is_none() && d.keys(host).is_empty() {
                return Err(fail(Reason::SecretUnavailable, Some("decrypt")));
            }
            if let Cipher::AesGcm {
                nonce: NonceSource::Header(name),
                ..
            } = &d.cipher
            {
                // Absent or repeated: judged with the body (after the signature), not here.
                if let Lookup::One(v) = lookup(headers, name) {
                    nonce_header = Some(v.to_vec());
                }
            }
        }
        if let Lookup::One(v) = lookup(headers, "content-length") {
            let declared = std::str::from_utf8(v)
                .ok()
                .and_then(|s| s.parse::<u64>().ok());
            if declared.is_some_and(|n| n > policy.max_body_bytes) {
                return Err(fail(Reason::BodyTooLarge, Some("content-length")));
            }
        }
        let (extracted, unsigned) = match verify::extract(
            &policy.scheme,
            headers,
            info.method.as_bytes(),
            info.path.as_bytes(),
        ) {
            Ok(extracted) => (extracted, false),
            // Lark does not sign its url_verification: judged once the body is opened.
            Err(Reason::MissingSignature)
                if policy.challenge == Some(Challenge::LarkUrlVerification) =>
            {
                (verify::Extracted::unsigned(), true)
            }
            Err(reason) => return Err(fail(reason, None)),
        };
        let challenge_header = policy.challenge == Some(Challenge::TwitchCallbackVerification)
            && matches!(
                lookup(headers, "twitch-eventsub-message-type"),
                Lookup::One(v) if v == b"webhook_callback_verification"
            );
        Ok(Pending {
            policy: policy_index,
            extracted,
            info,
            delivery_id,
            challenge_header,
            nonce_header,
            unsigned,
        })
    }

    /// Called as body chunks arrive with the total buffered so far.
    pub fn check_body_size(
        &self,
        host: &dyn Host,
        pending: &Pending,
        buffered: usize,
    ) -> Result<(), Rejection> {
        let Some(policy) = self.policies.get(pending.policy) else {
            return Err(self.reject_unknown(host));
        };
        if u64::try_from(buffered).map_or(true, |n| n > policy.max_body_bytes) {
            return Err(self.reject(
                host,
                pending.policy,
                Reason::BodyTooLarge,
                Some("body"),
                &pending.info,
                pending.delivery_id.as_deref(),
            ));
        }
        Ok(())
    }

    /// End of the request: verify the MAC over the whole body, then the time window.
    pub fn finish(
        &self,
        host: &dyn Host,
        pending: &Pending,
        body: &[u8],
    ) -> Result<Accepted, Rejection> {
        self.check_body_size(host, pending, body.len())?;
        let Some(policy) = self.policies.get(pending.policy) else {
            return Err(self.reject_unknown(host));
        };
        let fail = |reason: Reason, detail: Option<&str>| {
            self.reject_with_body(host, pending, policy, body, reason, detail)
        };
        if pending.unsigned {
            return self.unsigned_lark(host, policy, pending, body);
        }
        // Mailgun carries its signature, timestamp and token in the body.
        let body_signed;
        let ex = if policy
            .scheme
            .sources
            .get(pending.extracted.source)
            .is_some_and(|s| matches!(s.format, SigFormat::BodyFields))
        {
            body_signed = verify::body_fields(&policy.scheme, &pending.extracted, body)
                .map_err(|reason| fail(reason, Some("body")))?;
            &body_signed
        } else {
            &pending.extracted
        };
        let keys = policy.keys(host);
        let matched = if policy
            .scheme
            .sources
            .get(ex.source)
            .is_some_and(|s| matches!(s.format, SigFormat::AdyenItems))
        {
            // Adyen: the signature is in the notification's (one) item.
            let items = verify::adyen_items(body).map_err(|reason| fail(reason, Some("body")))?;
            verify::adyen_match(&keys, &items)
        } else {
            verify::matching_key(&policy.scheme, ex, &keys, body)
        };
        let Some(matched) = matched else {
            return Err(fail(Reason::InvalidSignature, None));
        };
        let key_index = matched.key_index;
        if policy.scheme.body_sha256_query && !verify::body_hash_matches(ex, body) {
            return Err(fail(Reason::InvalidSignature, Some("body")));
        }
        // Plivo V3: only form parameters are signed; any other body is not covered.
        if policy
            .scheme
            .template
            .contains(&crate::template::Part::PlivoUrl)
            && !verify::plivo_body_ok(ex, body)
        {
            return Err(fail(Reason::InvalidSignature, Some("body")));
        }
        // Vonage: the JWT verified; the body must be the one it hashes.
        if !verify::payload_hash_matches(ex, body) {
            return Err(fail(Reason::InvalidSignature, Some("payload_hash")));
        }
        // A signed id that is the dedup key must split from the signed text one way only, or
        // a re-cut copy would verify under a new id, so a new key (`IdBytes`).
        if let Some(dedup) = &policy.dedup {
            if !dedup::key::id_is_delimited(&dedup.source, &ex.signed_headers) {
                return Err(fail(Reason::MalformedSignature, Some("id")));
            }
        }
        let now = host.now_ms();
        let ts_ms = match (&ex.timestamp, &policy.scheme.timestamp) {
            (Some(ts), _) => Some(ts.ms),
            (None, Some(spec)) => match &spec.source {
                TimestampSource::BodyJson(field) => {
                    match verify::body_timestamp(field, spec.unit, body) {
                        Ok(ms) => Some(ms),
                        Err(reason) => return Err(fail(reason, Some("body"))),
                    }
                }
                _ => None,
            },
            (None, None) => None,
        };
        if let Some(ts) = ts_ms {
            if let Err(skew) = verify::check_window(ts, now, policy.tolerance_ms) {
                let detail = match skew {
                    Skew::Stale => "stale",
                    Skew::Future => "future",
                };
                return Err(fail(Reason::TimestampOutOfWindow, Some(detail)));
            }
        }
        let key = keys.get(key_index).map_or(&[][..], |k| k.as_ref());
        // Lark: the payload is opened first (with the key that verified: CBC does not
        // authenticate), since its event id, the dedup key, and its handshake are inside.
        let opened_first = if policy
            .decrypt
            .as_ref()
            .is_some_and(|d| d.cipher == Cipher::LarkCbc)
        {
            let plaintext = self.open(host, policy, pending, body, Some(key_index))?;
            if let Some(answer) = plaintext
                .as_ref()
                .and_then(|p| self.lark_challenge(host, policy, &p.body))
            {
                return match answer {
                    Ok(reply) => Ok(self.answered(host, policy, pending, key_index, reply)),
                    Err((reason, detail)) => Err(fail(reason, Some(detail))),
                };
            }
            plaintext
        } else {
            None
        };
        if let Some(reply) = self.challenge_reply(policy, pending, key, body) {
            return Ok(self.answered(host, policy, pending, key_index, reply));
        }
        let mut accepted = Accepted {
            policy: pending.policy,
            key_index,
            claim: None,
            reply: None,
            remote: None,
            plaintext: None,
        };
        let opened = opened_first.is_some();
        if let Some(dedup) = &policy.dedup {
            // Hashes the signed bytes again: only when the signature is the key.
            let mac = || verify::canonical_mac(&policy.scheme, ex, body, &matched);
            // A dedup key inside the payload is read from the plaintext.
            let keyed = match &opened_first {
                Some(p) => p.body.as_slice(),
                None => body,
            };
            match self.claim(
                host, policy, pending, ex, dedup, &mac, keyed, now, ts_ms, key_index,
            )? {
                Claimed::Held(hold) => accepted.claim = Some(hold),
                Claimed::Ask(task) => {
                    // Opened before the remote claim is asked for: a payload that cannot be
                    // opened never holds a claim. Counted as accepted once the store admits it.
                    accepted.plaintext = match opened_first {
                        Some(p) => Some(p),
                        None => self.open(host, policy, pending, body, None)?,
                    };
                    accepted.remote = Some(task);
                    return Ok(accepted);
                }
            }
        }
        if opened {
            accepted.plaintext = opened_first;
            self.count_accepted(host, policy, key_index);
            return Ok(accepted);
        }
        // Opened once the replay check passed; a payload that cannot be opened gives its
        // claim back (it was never delivered, so the sender's fixed retry is admitted).
        match self.open(host, policy, pending, body, None) {
            Ok(plaintext) => accepted.plaintext = plaintext,
            Err(r) => {
                if let Some(Hold {
                    claim: Held::Local(claim),
                    ..
                }) = accepted.claim.take()
                {
                    self.store.release(host, &claim);
                }
                return Err(r);
            }
        }
        self.count_accepted(host, policy, key_index);
        Ok(accepted)
    }

    /// The policy's `decrypt`, on a verified delivery: the plaintext to forward instead.
    /// `only`: the one key to use (Lark's signature key, which is also its cipher key).
    fn open(
        &self,
        host: &dyn Host,
        policy: &Policy,
        pending: &Pending,
        body: &[u8],
        only: Option<usize>,
    ) -> Result<Option<Plaintext>, Rejection> {
        let Some(d) = &policy.decrypt else {
            return Ok(None);
        };
        let mut keys = d.keys(host);
        if let Some(i) = only {
            keys = keys.into_iter().nth(i).into_iter().collect();
        }
        match d.cipher.open(&keys, body, pending.nonce_header.as_deref()) {
            Ok(opened) => {
                if opened.key_index > 0 {
                    host.increment(
                        policy
                            .counter_base
                            .saturating_add(stats::DECRYPTED_SECONDARY_KEY),
                    );
                }
                Ok(Some(Plaintext {
                    body: opened.plaintext,
                    content_type: d.content_type.clone(),
                }))
            }
            Err(failure) => {
                let (reason, detail) = match failure {
                    Failure::Malformed(part) => (Reason::MalformedPayload, part),
                    Failure::NoKey => (Reason::DecryptionFailed, "no key opens it"),
                };
                Err(self.reject_with_body(host, pending, policy, body, reason, Some(detail)))
            }
        }
    }

    /// The answer to a verified handshake, when the policy answers them and this is one.
    fn challenge_reply(
        &self,
        policy: &Policy,
        pending: &Pending,
        key: &[u8],
        body: &[u8],
    ) -> Option<LocalReply> {
        match policy.challenge? {
            Challenge::ZoomUrlValidation => {
                if crate::json::top_level_string(body, "event")? != "endpoint.url_validation" {
                    return None;
                }
                let payload = crate::json::top_level(body, "payload")?;
                let token = payload.get("plainToken")?.as_str()?;
                let mac = verify::compute_mac(
                    crate::config::Algorithm::HmacSha256,
                    key,
                    &[token.as_bytes()],
                )?;
                Some(LocalReply {
                    status: 200,
                    content_type: "application/json",
                    body: format!(
                        r#"{{"plainToken":{},"encryptedToken":"{}"}}"#,
                        json_str(token),
                        hex::encode(mac)
                    ),
                })
            }
            Challenge::TwitchCallbackVerification if pending.challenge_header => Some(LocalReply {
                status: 200,
                content_type: "text/plain",
                body: crate::json::top_level_string(body, "challenge")?,
            }),
            Challenge::TwitchCallbackVerification => None,
            // A GET handshake, answered from the headers (`Guard::handshake`).
            Challenge::MetaSubscribe => None,
            // Inside the encrypted payload (`lark_challenge`).
            Challenge::LarkUrlVerification => None,
        }
    }

    /// A handshake answered instead of forwarding (counted; no claim).
    fn answered(
        &self,
        host: &dyn Host,
        policy: &Policy,
        pending: &Pending,
        key_index: usize,
        reply: LocalReply,
    ) -> Accepted {
        host.increment(policy.counter_base.saturating_add(stats::CHALLENGES));
        Accepted {
            policy: pending.policy,
            key_index,
            claim: None,
            reply: Some(reply),
            remote: None,
            plaintext: None,
        }
    }

    /// Lark's `url_verification`, read from an opened payload: `None` when the payload is not
    /// one (or the policy does not answer them); else the reply, or why it is refused.
    fn lark_challenge(
        &self,
        host: &dyn Host,
        policy: &Policy,
        plaintext: &[u8],
    ) -> Option<Result<LocalReply, (Reason, &'static str)>> {
        if policy.challenge != Some(Challenge::LarkUrlVerification)
            || crate::json::top_level_string(plaintext, "type")? != "url_verification"
        {
            return None;
        }
        let Some(expected) = policy.verify_token(host) else {
            return Some(Err((Reason::SecretUnavailable, "verify_token")));
        };
        let token = crate::json::top_level_string(plaintext, "token").unwrap_or_default();
        if token.is_empty() || !tokens_equal(token.as_bytes(), &expected) {
            return Some(Err((Reason::InvalidSignature, "token")));
        }
        match crate::json::top_level_string(plaintext, "challenge") {
            Some(c) if !c.is_empty() && c.len() <= MAX_CHALLENGE_BYTES => Some(Ok(LocalReply {
                status: 200,
                content_type: "application/json",
                body: format!(r#"{{"challenge":{}}}"#, json_str(&c)),
            })),
            _ => Some(Err((Reason::MalformedPayload, "challenge"))),
        }
    }

    /// A Lark request without a signature: only an encrypted `url_verification` that opens
    /// under one of the policy's keys is answered; nothing unsigned is ever forwarded.
    fn unsigned_lark(
        &self,
        host: &dyn Host,
        policy: &Policy,
        pending: &Pending,
        body: &[u8],
    ) -> Result<Accepted, Rejection> {
        let fail = |reason: Reason, detail: Option<&str>| {
            self.reject_with_body(host, pending, policy, body, reason, detail)
        };
        // A url_verification is a few hundred bytes; anything larger is not tried against
        // every key (unsigned requests must not buy CPU time in the cipher).
        if body.len() > MAX_UNSIGNED_CHALLENGE_BYTES {
            return Err(fail(Reason::MissingSignature, None));
        }
        let opened = policy.decrypt.as_ref().and_then(|d| {
            let keys = d.keys(host);
            d.cipher.open(&keys, body, None).ok()
        });
        let Some(opened) = opened else {
            return Err(fail(Reason::MissingSignature, None));
        };
        match self.lark_challenge(host, policy, &opened.plaintext) {
            Some(Ok(reply)) => Ok(self.answered(host, policy, pending, opened.key_index, reply)),
            Some(Err((reason, detail))) => Err(fail(reason, Some(detail))),
            None => Err(fail(Reason::MissingSignature, None)),
        }
    }

    /// Meta's GET subscription handshake, answered before anything else when the policy
    /// answers it: `None` when this request is not one (it then goes through `begin`, where a
    /// GET is refused like any unverified method).
    pub fn handshake(
        &self,
        host: &dyn Host,
        policy_index: usize,
        info: &RequestInfo,
    ) -> Option<Result<LocalReply, Rejection>> {
        let policy = self.policies.get(policy_index)?;
        if policy.challenge != Some(Challenge::MetaSubscribe) || info.method != "GET" {
            return None;
        }
        let (path, query) = info.path.split_once('?')?;
        let mut mode = Vec::new();
        let mut token = Vec::new();
        let mut challenge = Vec::new();
        for pair in query.split('&') {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            let slot = match crate::form::decode(name.as_bytes()).as_slice() {
                b"hub.mode" => &mut mode,
                b"hub.verify_token" => &mut token,
                b"hub.challenge" => &mut challenge,
                _ => continue,
            };
            slot.push(crate::form::decode(value.as_bytes()));
        }
        if mode.first().map(Vec::as_slice) != Some(b"subscribe".as_slice()) {
            return None;
        }
        // The query carries the token: logs get the path alone.
        let logged = RequestInfo {
            route_name: info.route_name.clone(),
            method: info.method.clone(),
            path: path.to_string(),
        };
        let fail = |reason: Reason, detail: &str| {
            Some(Err(self.reject(
                host,
                policy_index,
                reason,
                Some(detail),
                &logged,
                None,
            )))
        };
        if mode.len() != 1 {
            return fail(Reason::MalformedSignature, "hub.mode");
        }
        let [token] = token.as_slice() else {
            return if token.is_empty() {
                fail(Reason::MissingSignature, "hub.verify_token")
            } else {
                fail(Reason::MalformedSignature, "hub.verify_token")
            };
        };
        let Some(expected) = policy.verify_token(host) else {
            return fail(Reason::SecretUnavailable, "verify_token");
        };
        if !tokens_equal(token, &expected) {
            return fail(Reason::InvalidSignature, "hub.verify_token");
        }
        // Echoed to the caller as text: short, and only characters that need no escaping.
        let safe = |b: &u8| b.is_ascii_alphanumeric() || b"-._~".contains(b);
        match challenge.as_slice() {
            [c] if !c.is_empty() && c.len() <= MAX_CHALLENGE_BYTES && c.iter().all(safe) => {
                host.increment(policy.counter_base.saturating_add(stats::CHALLENGES));
                Some(Ok(LocalReply {
                    status: 200,
                    content_type: "text/plain",
                    body: String::from_utf8_lossy(c).into_owned(),
                }))
            }
            _ => fail(Reason::MalformedSignature, "hub.challenge"),
        }
    }

    /// Claims the delivery's dedup key; a duplicate, an in-flight twin or a store problem
    /// becomes the rejection to send. With a remote store, a delivery this proxy already saw
    /// committed is answered here; anything else becomes a task for `Guard::drive`.
    #[allow(clippy::too_many_arguments)]
    fn claim(
        &self,
        host: &dyn Host,
        policy: &Policy,
        pending: &Pending,
        ex: &verify::Extracted,
        dedup: &DedupPolicy,
        mac: &dyn Fn() -> Vec<u8>,
        body: &[u8],
        now: u64,
        ts_ms: Option<u64>,
        key_index: usize,
    ) -> Result<Claimed, Rejection> {
        let (kind, material) =
            dedup::key::material(&dedup.source, mac, &ex.signed_headers, &ex.token, body);
        let hash = dedup::key::hash(&dedup.scope, kind, &material);
        let done_expiry_ms = match dedup.retention {
            Retention::Fixed(ms) => now.saturating_add(ms),
            Retention::AfterWindow(margin) => ts_ms
                .unwrap_or(now)
                .max(now)
                .saturating_add(policy.tolerance_ms)
                .saturating_add(margin),
        };
        let claim_expiry_ms = now.saturating_add(dedup.claim_timeout_ms);
        let found = if let Some(remote) = &dedup.remote {
            if !self.store.is_done(host, now, pending.policy, &hash) {
                return Ok(Claimed::Ask(RemoteTask::new(
                    pending.policy,
                    remote.claim(&hash, claim_expiry_ms, dedup.claim_timeout_ms),
                    Purpose::Admit {
                        key_index,
                        hash,
                        claim_expiry_ms,
                        done_expiry_ms,
                        info: pending.info.clone(),
                        delivery_id: delivery_id(pending, policy, body),
                    },
                )));
            }
            host.increment(stats::ETCD_CACHE_HITS);
            Found::Done
        } else {
            match self.store.claim(
                host,
                now,
                pending.policy,
                hash,
                dedup.claim_timeout_ms,
                done_expiry_ms,
            ) {
                ClaimOutcome::Claimed(c) => {
                    return Ok(Claimed::Held(Hold {
                        claim: Held::Local(c),
                        delivery_id: delivery_id(pending, policy, body),
                    }))
                }
                ClaimOutcome::Done => Found::Done,
                ClaimOutcome::InFlight { retry_after_s } => Found::InFlight(retry_after_s),
                ClaimOutcome::Full => Found::Full,
                ClaimOutcome::Unavailable => Found::Unavailable,
            }
        };
        Err(self.store_rejection(
            host,
            pending.policy,
            found,
            &pending.info,
            delivery_id(pending, policy, body).as_deref(),
        ))
    }
}

/// A handshake token against the configured one, in constant time: digests have one size, so
/// neither the outcome nor the time taken depends on the token's length (Meta, Lark).
fn tokens_equal(given: &[u8], expected: &[u8]) -> bool {
    use sha2::Digest;
    let digest = |b: &[u8]| -> [u8; 32] { sha2::Sha256::digest(b).into() };
    subtle::ConstantTimeEq::ct_eq(digest(given).as_slice(), digest(expected).as_slice()).into()
}

enum Claimed {
    Held(Hold),
    Ask(RemoteTask),
}
