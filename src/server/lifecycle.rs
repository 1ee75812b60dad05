//! The application as the connection layer sees it: calls go to the
//! method table ([`crate::rpc`]), opening and closing to the connection
//! service ([`crate::services::connections`]).

use crate::app::App;
use crate::auth::Identity;
use crate::config::Limits;
use crate::conn::{ConnHandle, ConnService};
use crate::protocol::{Call, RpcError};
use crate::services::connections;
use serde_json::Value;

impl ConnService for App {
    fn limits(&self) -> Limits {
        self.live.peek().limits.clone()
    }

    fn is_long_running(&self, method: &str) -> bool {
        crate::rpc::is_long_running(method)
    }

    async fn call(&self, conn: &ConnHandle, call: Call) -> Result<Value, RpcError> {
        crate::rpc::handle(self, conn, call).await
    }

    async fn opened(&self, conn: &ConnHandle, identity: Option<Identity>) {
        connections::open(self, conn, identity).await
    }

    async fn closed(&self, conn: &ConnHandle) {
        connections::close(self, conn).await
    }
}
