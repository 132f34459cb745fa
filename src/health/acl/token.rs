//! The bearer token: kept as a hash, compared in constant time.

use http::HeaderMap;
use http::header::AUTHORIZATION;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::Refusal;

pub(super) fn digest(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

pub(super) fn check_token(expected: &[u8; 32], headers: &HeaderMap) -> Result<(), Refusal> {
    let mut values = headers.get_all(AUTHORIZATION).iter();
    let (Some(value), None) = (values.next(), values.next()) else {
        return Err(Refusal::TokenMissing);
    };
    let value = value.as_bytes();
    let scheme = b"bearer ";
    if value.len() <= scheme.len() || !value[..scheme.len()].eq_ignore_ascii_case(scheme) {
        return Err(Refusal::TokenMissing);
    }
    let presented = value[scheme.len()..].trim_ascii();
    if bool::from(digest(presented).ct_eq(expected)) {
        Ok(())
    } else {
        Err(Refusal::TokenWrong)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::health::acl::Acl;
    use crate::health::acl::tests::{TOKEN, headers, peer, refused};

    #[test]
    fn tokens_right_wrong_missing() {
        let acl = Acl::builder().with_bearer_token(TOKEN).build().unwrap();
        let p = peer("203.0.113.9");
        let right = headers(&[("authorization", &format!("Bearer {TOKEN}"))]);
        assert!(acl.check(p, &right).is_allowed());
        let lower = headers(&[("authorization", &format!("bearer  {TOKEN}"))]);
        assert!(acl.check(p, &lower).is_allowed());
        let wrong = headers(&[("authorization", "Bearer 0123456789abcdef-tokeN")]);
        assert_eq!(refused(acl.check(p, &wrong)), Refusal::TokenWrong);
        let prefix = headers(&[("authorization", "Bearer 0123456789abcdef")]);
        assert_eq!(refused(acl.check(p, &prefix)), Refusal::TokenWrong);
        let basic = headers(&[("authorization", &format!("Basic {TOKEN}"))]);
        assert_eq!(refused(acl.check(p, &basic)), Refusal::AddressNotAllowed);
        assert_eq!(
            refused(acl.check(p, &HeaderMap::new())),
            Refusal::AddressNotAllowed
        );
        let twice = headers(&[
            ("authorization", &format!("Bearer {TOKEN}")),
            ("authorization", &format!("Bearer {TOKEN}")),
        ]);
        assert!(!acl.check(p, &twice).is_allowed());
    }
}
