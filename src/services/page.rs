//! Lists that may be long come a page at a time: `{limit?, cursor?}` in,
//! `nextCursor` out (null on the last page). Cursors are the backend's,
//! opaque to clients.

use crate::protocol::RpcError;
use serde::Deserialize;

/// Most entries one page carries, and the default page size.
pub const MAX: usize = 1000;

/// Where a page starts and how long it may be.
#[derive(Debug, Default, Deserialize, schemars::JsonSchema)]
#[serde(default)]
pub struct Page {
    /// Entries in this page: 1-1000 (default 1000).
    limit: Option<usize>,
    /// The previous page's `nextCursor` (absent: the first page).
    cursor: Option<String>,
}

/// A `limit` asked for (`default` when not given): 1..=[`MAX`].
pub fn bounded(limit: Option<usize>, default: usize) -> Result<usize, RpcError> {
    match limit.unwrap_or(default) {
        n @ 1..=MAX => Ok(n),
        _ => Err(RpcError::invalid_params(
            "limit",
            format!("between 1 and {MAX}"),
        )),
    }
}

impl Page {
    /// The page size asked for (default [`MAX`]); 1..=MAX.
    pub fn limit(&self) -> Result<usize, RpcError> {
        bounded(self.limit, MAX)
    }

    pub fn cursor(&self) -> Option<&str> {
        self.cursor.as_deref()
    }

    /// From a query string's `limit` and `cursor` (the HTTP API).
    pub fn from_query(query: &std::collections::HashMap<String, String>) -> Result<Self, RpcError> {
        let limit = match query.get("limit") {
            None => None,
            Some(v) => Some(
                v.parse()
                    .map_err(|_| RpcError::invalid_params("limit", "a whole number"))?,
            ),
        };
        Ok(Self {
            limit,
            cursor: query.get("cursor").cloned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_are_bounded() {
        let page = |limit| Page {
            limit,
            cursor: None,
        };
        assert_eq!(page(None).limit().unwrap(), MAX);
        assert_eq!(page(Some(1)).limit().unwrap(), 1);
        assert!(page(Some(0)).limit().is_err());
        assert!(page(Some(MAX + 1)).limit().is_err());
        assert_eq!(bounded(None, 100).unwrap(), 100);
        assert!(bounded(Some(0), 100).is_err());
        let query = [("limit".to_owned(), "x".to_owned())].into_iter().collect();
        assert!(Page::from_query(&query).is_err());
    }
}
