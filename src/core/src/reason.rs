//! Stable reason codes. A code is part of our public interface (reply bodies, stats, logs,
//! access logs): never rename one once shipped; add new ones instead.

use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Reason {
    MissingSignature,
    MissingTimestamp,
    MissingHeader,
    MalformedSignature,
    MalformedTimestamp,
    InvalidSignature,
    TimestampOutOfWindow,
    BodyTooLarge,
    SecretUnavailable,
    Replayed,
    InFlight,
    StoreFull,
    StoreUnavailable,
    /// The request's method is not one the policy verifies (checked before the body is read).
    MethodNotAllowed,
    /// The filter could not run as it should (no configuration, the body unreadable, a caught
    /// panic in the native build): nothing unverified passes.
    InternalError,
    /// The signed body is not the envelope the policy's `decrypt` expects (not JSON, a field
    /// missing, bad base64, a nonce or IV of the wrong size): the sender's format is wrong.
    MalformedPayload,
    /// A well-formed, authentic envelope that no configured decryption key opens: the
    /// sender encrypts with a key this proxy does not hold.
    DecryptionFailed,
    /// Keep last: it is the one reason without a policy (see `stats::policy_counters`).
    NoMatchingPolicy,
}

impl Reason {
    /// Every reason, in a fixed order (used to pre-define one counter per reason).
    pub const ALL: [Reason; 18] = [
        Reason::MissingSignature,
        Reason::MissingTimestamp,
        Reason::MissingHeader,
        Reason::MalformedSignature,
        Reason::MalformedTimestamp,
        Reason::InvalidSignature,
        Reason::TimestampOutOfWindow,
        Reason::BodyTooLarge,
        Reason::SecretUnavailable,
        Reason::Replayed,
        Reason::InFlight,
        Reason::StoreFull,
        Reason::StoreUnavailable,
        Reason::MethodNotAllowed,
        Reason::InternalError,
        Reason::MalformedPayload,
        Reason::DecryptionFailed,
        Reason::NoMatchingPolicy,
    ];

    pub fn code(self) -> &'static str {
        match self {
            Reason::MissingSignature => "missing_signature",
            Reason::MissingTimestamp => "missing_timestamp",
            Reason::MissingHeader => "missing_header",
            Reason::MalformedSignature => "malformed_signature",
            Reason::MalformedTimestamp => "malformed_timestamp",
            Reason::InvalidSignature => "invalid_signature",
            Reason::TimestampOutOfWindow => "timestamp_out_of_window",
            Reason::BodyTooLarge => "body_too_large",
            Reason::SecretUnavailable => "secret_unavailable",
            Reason::Replayed => "replayed",
            Reason::InFlight => "in_flight",
            Reason::StoreFull => "store_full",
            Reason::StoreUnavailable => "store_unavailable",
            Reason::MethodNotAllowed => "method_not_allowed",
            Reason::InternalError => "internal_error",
            Reason::MalformedPayload => "malformed_payload",
            Reason::DecryptionFailed => "decryption_failed",
            Reason::NoMatchingPolicy => "no_matching_policy",
        }
    }

    pub fn default_status(self) -> u16 {
        match self {
            Reason::MissingSignature
            | Reason::MissingTimestamp
            | Reason::MissingHeader
            | Reason::MalformedSignature
            | Reason::MalformedTimestamp
            | Reason::MalformedPayload
            | Reason::DecryptionFailed => 400,
            Reason::InvalidSignature | Reason::TimestampOutOfWindow => 401,
            Reason::NoMatchingPolicy => 403,
            Reason::MethodNotAllowed => 405,
            Reason::Replayed | Reason::InFlight => 409,
            Reason::BodyTooLarge => 413,
            Reason::SecretUnavailable
            | Reason::StoreFull
            | Reason::StoreUnavailable
            | Reason::InternalError => 503,
        }
    }

    /// Index into per-reason tables (`ALL[r.index()] == r`).
    pub fn index(self) -> usize {
        self as usize
    }

    pub fn from_code(code: &str) -> Option<Reason> {
        Reason::ALL.into_iter().find(|r| r.code() == code)
    }

    /// One-line human explanation, kept apart from the stable code.
    pub fn describe(self) -> &'static str {
        match self {
            Reason::MissingSignature => "the signature header is absent",
            Reason::MissingTimestamp => "the timestamp the scheme signs is absent",
            Reason::MissingHeader => "a header the scheme signs is absent",
            Reason::MalformedSignature => "the signature header cannot be parsed",
            Reason::MalformedTimestamp => "the timestamp is not a canonical integer",
            Reason::InvalidSignature => "no signature matches any configured secret",
            Reason::TimestampOutOfWindow => {
                "the signed timestamp is too old or too far in the future"
            }
            Reason::BodyTooLarge => "the body exceeds the policy's max_body_bytes",
            Reason::SecretUnavailable => "no configured secret could be loaded (fail closed)",
            Reason::Replayed => "this delivery was already accepted and answered successfully",
            Reason::InFlight => "this delivery is being processed by another request right now",
            Reason::StoreFull => "the replay store is full of unexpired entries (fail closed)",
            Reason::StoreUnavailable => "the replay store could not be updated (fail closed)",
            Reason::MethodNotAllowed => "the policy does not verify requests with this method",
            Reason::InternalError => "the filter could not run as it should (fail closed)",
            Reason::MalformedPayload => "the signed body is not the encrypted envelope expected",
            Reason::DecryptionFailed => "no configured decryption key opens the payload",
            Reason::NoMatchingPolicy => "no policy matches and the default is deny",
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_is_indexed_in_order_and_codes_round_trip() {
        for (i, r) in Reason::ALL.into_iter().enumerate() {
            assert_eq!(r.index(), i);
            assert_eq!(Reason::from_code(r.code()), Some(r));
        }
        assert_eq!(Reason::from_code("nope"), None);
    }

    #[test]
    fn default_statuses_match_the_contract() {
        assert_eq!(Reason::MissingSignature.default_status(), 400);
        assert_eq!(Reason::MalformedTimestamp.default_status(), 400);
        assert_eq!(Reason::InvalidSignature.default_status(), 401);
        assert_eq!(Reason::TimestampOutOfWindow.default_status(), 401);
        assert_eq!(Reason::BodyTooLarge.default_status(), 413);
        assert_eq!(Reason::SecretUnavailable.default_status(), 503);
        assert_eq!(Reason::Replayed.default_status(), 409);
        assert_eq!(Reason::InFlight.default_status(), 409);
        assert_eq!(Reason::StoreFull.default_status(), 503);
        assert_eq!(Reason::MethodNotAllowed.default_status(), 405);
        assert_eq!(Reason::DecryptionFailed.default_status(), 400);
        assert_eq!(Reason::MalformedPayload.default_status(), 400);
        assert_eq!(Reason::ALL.last(), Some(&Reason::NoMatchingPolicy));
    }
}
