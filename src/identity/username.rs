//! Usernames: 3 to 32 characters of a-z 0-9 . _ -, compared without case.

use thiserror::Error;

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum UsernameError {
    #[error("username must be 3 to 32 characters long (got {0})")]
    Length(usize),
    #[error("username may only contain a-z, 0-9, '.', '_' and '-' (found {0:?})")]
    Character(char),
    #[error("password must be at least 8 characters long")]
    PasswordTooShort,
    #[error("password must be at most 1024 bytes long")]
    PasswordTooLong,
}

/// A valid username in canonical (lower-case) form.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Username(String);

impl Username {
    /// Validate and canonicalise: upper-case ASCII is folded, so `Alice`
    /// and `alice` are the same account.
    pub fn parse(s: &str) -> Result<Self, UsernameError> {
        let n = s.chars().count();
        if !(3..=32).contains(&n) {
            return Err(UsernameError::Length(n));
        }
        let mut out = String::with_capacity(n);
        for c in s.chars() {
            let c = c.to_ascii_lowercase();
            if !(c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '_' | '-')) {
                return Err(UsernameError::Character(c));
            }
            out.push(c);
        }
        Ok(Username(out))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for Username {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::str::FromStr for Username {
    type Err = UsernameError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Username::parse(s)
    }
}

/// Password policy for new accounts.
pub fn validate_password(p: &str) -> Result<(), UsernameError> {
    if p.chars().count() < 8 {
        return Err(UsernameError::PasswordTooShort);
    }
    if p.len() > 1024 {
        return Err(UsernameError::PasswordTooLong);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_and_folds_case() {
        assert_eq!(
            Username::parse("Alice.B_c-9").unwrap().as_str(),
            "alice.b_c-9"
        );
        assert_eq!(Username::parse("abc").unwrap().as_str(), "abc");
        assert!(Username::parse(&"a".repeat(32)).is_ok());
    }

    #[test]
    fn rejects_bad() {
        assert_eq!(Username::parse("ab"), Err(UsernameError::Length(2)));
        assert_eq!(
            Username::parse(&"a".repeat(33)),
            Err(UsernameError::Length(33))
        );
        assert_eq!(
            Username::parse("al ice"),
            Err(UsernameError::Character(' '))
        );
        assert_eq!(Username::parse("alïce"), Err(UsernameError::Character('ï')));
        assert!(Username::parse("a@b.c").is_err());
    }

    #[test]
    fn password_policy() {
        assert!(validate_password("short").is_err());
        assert!(validate_password("long enough").is_ok());
        assert!(validate_password(&"x".repeat(1025)).is_err());
    }
}
