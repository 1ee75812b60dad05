//! Roles and scopes: who a peer is ([`Role`]) and what an operator may do
//! ([`Scope`], a set of them in a [`ScopeSet`]; `operator.admin` implies
//! every other scope).

use super::AuthError;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use std::str::FromStr;

/// Whether a peer is a human-facing operator client or a worker node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Operator,
    Node,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Operator => "operator",
            Role::Node => "node",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = AuthError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "operator" => Ok(Role::Operator),
            "node" => Ok(Role::Node),
            _ => Err(AuthError::InvalidClaims(format!(
                "unknown role {s:?} (expected \"operator\" or \"node\")"
            ))),
        }
    }
}

/// An operator permission. `operator.admin` implies all the others.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Scope {
    #[serde(rename = "operator.admin")]
    Admin,
    #[serde(rename = "operator.read")]
    Read,
    #[serde(rename = "operator.write")]
    Write,
    #[serde(rename = "operator.approvals")]
    Approvals,
    #[serde(rename = "operator.pairing")]
    Pairing,
}

impl Scope {
    /// Every scope, in bit order.
    pub const ALL: [Scope; 5] = [
        Scope::Admin,
        Scope::Read,
        Scope::Write,
        Scope::Approvals,
        Scope::Pairing,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Admin => "operator.admin",
            Scope::Read => "operator.read",
            Scope::Write => "operator.write",
            Scope::Approvals => "operator.approvals",
            Scope::Pairing => "operator.pairing",
        }
    }

    const fn bit(self) -> u8 {
        match self {
            Scope::Admin => 1,
            Scope::Read => 1 << 1,
            Scope::Write => 1 << 2,
            Scope::Approvals => 1 << 3,
            Scope::Pairing => 1 << 4,
        }
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Scope {
    type Err = AuthError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Scope::ALL
            .into_iter()
            .find(|scope| scope.as_str() == s)
            .ok_or_else(|| AuthError::InvalidClaims(format!("unknown scope {s:?}")))
    }
}

/// A set of [`Scope`]s. Serialises as an array of scope names.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct ScopeSet(u8);

impl ScopeSet {
    /// No scope at all.
    pub const fn empty() -> Self {
        ScopeSet(0)
    }

    /// Every scope (admin included).
    pub fn all() -> Self {
        Self::from_scopes(&Scope::ALL)
    }

    pub fn from_scopes(scopes: &[Scope]) -> Self {
        scopes
            .iter()
            .fold(Self::empty(), |set, &scope| set.with(scope))
    }

    /// Parses scope names; an unknown name is an error.
    pub fn from_names(names: &[String]) -> Result<ScopeSet, AuthError> {
        names.iter().try_fold(Self::empty(), |set, name| {
            Ok(set.with(name.trim().parse::<Scope>()?))
        })
    }

    /// This set plus `scope`.
    #[must_use]
    pub const fn with(self, scope: Scope) -> Self {
        ScopeSet(self.0 | scope.bit())
    }

    pub fn insert(&mut self, scope: Scope) {
        self.0 |= scope.bit();
    }

    /// Whether `scope` is granted, directly or through `operator.admin`.
    pub fn contains(&self, scope: Scope) -> bool {
        self.0 & (scope.bit() | Scope::Admin.bit()) != 0
    }

    pub fn is_empty(&self) -> bool {
        self.0 == 0
    }

    /// Names of the scopes actually in the set (implied ones are not listed).
    pub fn names(&self) -> Vec<&'static str> {
        Scope::ALL
            .into_iter()
            .filter(|scope| self.0 & scope.bit() != 0)
            .map(Scope::as_str)
            .collect()
    }
}

impl fmt::Debug for ScopeSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.names()).finish()
    }
}

impl Serialize for ScopeSet {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.names())
    }
}

impl<'de> Deserialize<'de> for ScopeSet {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let names = Vec::<String>::deserialize(deserializer)?;
        ScopeSet::from_names(&names).map_err(serde::de::Error::custom)
    }
}
