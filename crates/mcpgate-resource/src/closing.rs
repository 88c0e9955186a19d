//! [`Closing`]: the server is shutting down. Calls in flight finish, but a
//! session's standalone stream (`GET /mcp`) would never end on its own and
//! hold the shutdown to its deadline; it ends instead, and the client
//! reconnects, to another replica or to this one restarted.

use std::sync::Arc;

use tokio::sync::watch;

/// Set once, when shutdown begins; cheap to clone and to wait on.
#[derive(Debug, Clone)]
pub struct Closing(Arc<watch::Sender<bool>>);

impl Default for Closing {
    fn default() -> Self {
        Self(Arc::new(watch::channel(false).0))
    }
}

impl Closing {
    /// Shutdown has begun: every stream waiting on [`Closing::closed`] ends.
    pub fn close(&self) {
        self.0.send_replace(true);
    }

    /// Resolves once [`Closing::close`] was called, at once if it was.
    pub async fn closed(&self) {
        let mut seen = self.0.subscribe();
        // The sender lives in `self`: the wait fails only if it is gone.
        let _ = seen.wait_for(|closing| *closing).await;
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn waiters_wake_on_close_and_later_ones_at_once() {
        let closing = Closing::default();
        let waiter = tokio::spawn({
            let closing = closing.clone();
            async move { closing.closed().await }
        });
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert!(!waiter.is_finished(), "open until closed");
        closing.close();
        tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .expect("woken")
            .expect("task");
        tokio::time::timeout(Duration::from_secs(5), closing.closed())
            .await
            .expect("already closed");
    }
}
